"""The error type every Tandem component raises, and its JSON form."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorPayload(BaseModel):
    """An error as it travels in an HTTP body, a WebSocket frame or a bus reply."""

    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The JSON body of every HTTP error response: `{"error": {...}}`."""

    error: ErrorPayload


class ProtocolError(Exception):
    """A request or message that Tandem rejects.

    `code` is a stable machine-readable string, `message` says what is wrong and
    what to do, `status` is the HTTP status the error maps to.
    """

    def __init__(
        self,
        *,
        code: str,
        message: str,
        status: int = 400,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}

    def to_payload(self) -> ErrorPayload:
        return ErrorPayload(code=self.code, message=self.message, details=self.details)

    def to_body(self) -> ErrorBody:
        return ErrorBody(error=self.to_payload())

    @classmethod
    def from_payload(cls, payload: ErrorPayload, *, status: int = 400) -> ProtocolError:
        return cls(code=payload.code, message=payload.message, status=status, details=payload.details)
