"""Signed tokens (JWT, HS256) for tracker sessions and agents.

Every service holds the same secret key. A session token lets one tab write to
its own session; an agent token lets an agent reach the projects it lists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import jwt
from tandem_protocol import ProtocolError

ALGORITHM = "HS256"


@dataclass(frozen=True, kw_only=True)
class SessionClaims:
    session_id: str
    project_id: str
    tab_id: str
    started_at: int
    expires_at: int


@dataclass(frozen=True, kw_only=True)
class AgentClaims:
    agent_id: str
    name: str
    role: Literal["admin", "agent", "viewer"]
    projects: list[str] = field(default_factory=lambda: ["*"])
    expires_at: int = 0

    def can_access(self, project_id: str) -> bool:
        return "*" in self.projects or project_id in self.projects


class TokenSigner:
    """Sign and verify Tandem's tokens with one secret key."""

    def __init__(self, *, secret_key: str) -> None:
        if len(secret_key) < 16:
            raise ValueError("The secret key is too short: set TANDEM_SECRET_KEY to at least 16 random characters.")
        self._key = secret_key

    def sign_session(self, *, session_id: str, project_id: str, tab_id: str, started_at: int, ttl_seconds: int) -> str:
        expires_at = int(time.time()) + ttl_seconds
        claims = {
            "typ": "session",
            "sid": session_id,
            "pid": project_id,
            "tab": tab_id,
            "sat": started_at,
            "exp": expires_at,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify_session(self, token: str) -> SessionClaims:
        claims = self._decode(token, "session")
        return SessionClaims(
            session_id=claims["sid"],
            project_id=claims["pid"],
            tab_id=claims["tab"],
            started_at=claims["sat"],
            expires_at=claims["exp"],
        )

    def sign_agent(self, *, agent_id: str, name: str, role: str, projects: list[str], ttl_seconds: int) -> tuple[str, int]:
        """Return an agent token and its expiry in milliseconds since the epoch."""
        expires_at = int(time.time()) + ttl_seconds
        claims = {"typ": "agent", "sub": agent_id, "name": name, "role": role, "prj": projects, "exp": expires_at}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expires_at * 1000

    def verify_agent(self, token: str) -> AgentClaims:
        claims = self._decode(token, "agent")
        return AgentClaims(
            agent_id=claims["sub"],
            name=claims["name"],
            role=claims["role"],
            projects=list(claims["prj"]),
            expires_at=claims["exp"],
        )

    def _decode(self, token: str, kind: str) -> dict:
        try:
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError:
            raise ProtocolError(
                code="expired_token",
                message=f"The {kind} token has expired. Get a new one.",
                status=401,
            ) from None
        except jwt.InvalidTokenError as exc:
            raise ProtocolError(
                code="invalid_token",
                message=f"The {kind} token is invalid ({exc}). Get a new one.",
                status=401,
            ) from None
        if claims.get("typ") != kind:
            raise ProtocolError(
                code="invalid_token",
                message=f"The token is not a {kind} token. Get a {kind} token.",
                status=401,
            )
        return claims


def bearer_token(header: str | None) -> str:
    """Return the token of an `Authorization: Bearer …` header, or raise a 401 ProtocolError."""
    if not header:
        raise ProtocolError(
            code="missing_token",
            message="The Authorization header is missing: send 'Authorization: Bearer <token>'.",
            status=401,
        )
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ProtocolError(
            code="missing_token",
            message="The Authorization header is not a bearer token: send 'Authorization: Bearer <token>'.",
            status=401,
        )
    return value.strip()
