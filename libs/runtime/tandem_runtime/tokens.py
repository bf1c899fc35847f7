"""Signed tokens (JWT, HS256) for tracker sessions and agents.

Every service holds the same secret key. A session token lets one tab write to
its own session; an agent token lets an agent reach the projects it lists.
Agent tokens come in two kinds: `login` (from the sign-in, for the HTTP APIs and
the sockets) and `socket` (short-lived, one project, for the live and signal
sockets of a script that holds an API token). API tokens are not signed tokens:
see `tandem_runtime.directory.ApiTokenDirectory`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Literal

import jwt
from tandem_protocol import ProtocolError

ALGORITHM = "HS256"
MIN_SECRET_KEY_CHARS = 32
"""RFC 7518 (3.2) asks for an HS256 key of at least 256 bits; 32 random characters carry about that."""


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
    kind: Literal["login", "socket", "api"] = "login"
    """The credential the agent presented: a signed login or socket token, or an API token."""
    token_id: str | None = None
    """The API token's id, when `kind` is "api"."""
    issued_at: int = 0
    """When a signed token was issued, in seconds since the epoch (its `iat`)."""

    def can_access(self, project_id: str) -> bool:
        return "*" in self.projects or project_id in self.projects


class TokenSigner:
    """Sign and verify Tandem's tokens with one secret key."""

    def __init__(self, *, secret_key: str) -> None:
        if len(secret_key) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"The secret key is too short: set TANDEM_SECRET_KEY to at least {MIN_SECRET_KEY_CHARS} random "
                "characters, such as the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        self._key = secret_key

    def derive_key(self, purpose: str) -> bytes:
        """Return a key for another use of the secret (an HMAC), which never equals the signing key."""
        return hmac.new(self._key.encode(), purpose.encode(), hashlib.sha256).digest()

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

    def sign_agent(
        self,
        *,
        agent_id: str,
        name: str,
        role: str,
        projects: list[str],
        ttl_seconds: int,
        kind: Literal["login", "socket"] = "login",
    ) -> tuple[str, int]:
        """Return an agent token and its expiry in milliseconds since the epoch."""
        issued_at = int(time.time())
        expires_at = issued_at + ttl_seconds
        claims = {
            "typ": "agent",
            "knd": kind,
            "sub": agent_id,
            "name": name,
            "role": role,
            "prj": projects,
            "iat": issued_at,
            "exp": expires_at,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), expires_at * 1000

    def sign_socket(self, agent: AgentClaims, *, project_id: str, ttl_seconds: int) -> tuple[str, int]:
        """Return a socket token for one of `agent`'s projects, and its expiry in milliseconds."""
        if not agent.can_access(project_id):
            raise ProtocolError(
                code="forbidden",
                message=f"Agent {agent.name!r} has no access to project {project_id[:64]!r}.",
                status=403,
            )
        return self.sign_agent(
            agent_id=agent.agent_id,
            name=agent.name,
            role=agent.role,
            projects=[project_id],
            ttl_seconds=ttl_seconds,
            kind="socket",
        )

    def verify_agent(self, token: str) -> AgentClaims:
        claims = self._decode(token, "agent")
        kind = claims.get("knd", "login")
        if kind not in ("login", "socket"):
            raise ProtocolError(
                code="invalid_token",
                message=f"The agent token has an unknown kind {kind!r}. Sign in again.",
                status=401,
            )
        return AgentClaims(
            agent_id=claims["sub"],
            name=claims["name"],
            role=claims["role"],
            projects=list(claims["prj"]),
            expires_at=claims["exp"],
            kind=kind,
            issued_at=int(claims.get("iat", 0)),
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
