"""The one codec for every model on the wire: UTF-8 JSON with camelCase keys."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from tandem_protocol.errors import ProtocolError

ModelT = TypeVar("ModelT", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    """Serialise a model to JSON bytes, with its wire (camelCase) key names."""
    return model.model_dump_json(by_alias=True).encode()


def decode(model_type: type[ModelT], data: bytes | str, *, what: str = "message") -> ModelT:
    """Parse JSON into `model_type`, raising ProtocolError with every problem found.

    `what` names the document in error messages ("request body", "batch").

    The error details list each invalid field as a dotted path with the reason,
    so that the client can fix its request.
    """
    try:
        return model_type.model_validate_json(data)
    except ValidationError as exc:
        raise validation_error(exc, what) from None


def validation_error(exc: ValidationError, what: str) -> ProtocolError:
    """Convert a pydantic ValidationError into a 400 ProtocolError naming each field."""
    problems = []
    for item in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in item["loc"]) or "(body)"
        # pydantic prefixes the message of a validator's ValueError with "Value error, ".
        problem = item["msg"].removeprefix("Value error, ")
        problems.append({"field": path, "problem": problem, "type": item["type"]})
    if problems and problems[0]["type"] == "json_invalid":
        return ProtocolError(
            code="malformed_json",
            message=f"The body is not valid JSON: {problems[0]['problem']}. Send a JSON object.",
            details={"problems": problems},
        )
    summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:5])
    return ProtocolError(
        code="invalid_request",
        message=f"The {what} is invalid: {summary}. Fix these fields and send it again.",
        details={"problems": problems},
    )
