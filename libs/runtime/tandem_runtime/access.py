"""Access control: request authentication, role permissions, project scope and origin checks.

Every service authenticates agents the same way:

- `Authorization: Bearer <token>` on HTTP, where the token is a signed agent token
  (login or socket) or an API token (`tdm_…`), which only HTTP accepts;
- the first `auth` frame on the live and signal sockets, where only signed agent
  tokens are accepted, so that an API token must be exchanged for a short-lived
  socket token first.

Roles grant permissions: an admin may do everything, an agent may replay, watch
and assist (call, control), a viewer may only replay recorded sessions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from functools import wraps
from urllib.parse import urlsplit

from aiohttp import web
from tandem_protocol import Project, ProtocolError

from tandem_runtime.accounts import AccountGuard
from tandem_runtime.directory import API_TOKEN_PREFIX, ApiTokenDirectory
from tandem_runtime.tokens import AgentClaims, TokenSigner, bearer_token


class Permission(StrEnum):
    REPLAY = "replay"
    """Search and replay recorded sessions, list live sessions."""
    WATCH = "watch"
    """Watch a live session."""
    ASSIST = "assist"
    """Call the user and control their page."""
    ADMIN = "admin"
    """Manage projects, agents and everyone's API tokens; read the audit trail."""


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission),
    "agent": frozenset({Permission.REPLAY, Permission.WATCH, Permission.ASSIST}),
    "viewer": frozenset({Permission.REPLAY}),
}


def has_permission(claims: AgentClaims, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(claims.role, frozenset())


def require_permission(claims: AgentClaims, permission: Permission, *, action: str = "") -> None:
    """Raise a 403 ProtocolError when the agent's role lacks `permission`."""
    if has_permission(claims, permission):
        return
    allowed = sorted(role for role, permissions in ROLE_PERMISSIONS.items() if permission in permissions)
    raise ProtocolError(
        code="forbidden",
        message=f"Agent {claims.name!r} has the role {claims.role!r}, which may not {action or permission.value}: "
        f"that needs the role {' or '.join(allowed)}.",
        status=403,
        details={"permission": permission.value, "role": claims.role},
    )


def require_project(claims: AgentClaims, project_id: str) -> None:
    """Raise a 403 ProtocolError when the agent's token does not reach `project_id`."""
    if not claims.can_access(project_id):
        raise ProtocolError(
            code="forbidden",
            message=f"Agent {claims.name!r} has no access to project {project_id[:64]!r}.",
            status=403,
            details={"projectId": project_id[:128]},
        )


# Authentication -------------------------------------------------------------------------------


class Authenticator:
    """Turn a bearer token into agent claims: a signed agent token, or an API token when `api_tokens` is set.

    With `guard`, a signed token of a disabled account is rejected.
    """

    def __init__(
        self, *, signer: TokenSigner, api_tokens: ApiTokenDirectory | None = None, guard: AccountGuard | None = None
    ) -> None:
        self.signer = signer
        self.api_tokens = api_tokens
        self.guard = guard

    async def _signed(self, token: str) -> AgentClaims:
        claims = self.signer.verify_agent(token)
        if self.guard is not None:
            await self.guard.require_active(claims)
        return claims

    async def from_header(self, header: str | None) -> AgentClaims:
        """Return the claims of an `Authorization: Bearer …` header, or raise a 401 ProtocolError."""
        token = bearer_token(header)
        if token.startswith(API_TOKEN_PREFIX):
            if self.api_tokens is None:
                raise ProtocolError(
                    code="invalid_token",
                    message="This service does not accept API tokens. Use a signed agent token.",
                    status=401,
                )
            return await self.api_tokens.verify(token)
        return await self._signed(token)

    async def for_socket(self, token: str) -> AgentClaims:
        """Return the claims of a socket's auth token: signed agent tokens only, never an API token."""
        if token.startswith(API_TOKEN_PREFIX):
            raise ProtocolError(
                code="invalid_token",
                message="Sockets do not accept API tokens: exchange it at POST /api/v1/auth/socket-token first.",
                status=401,
            )
        return await self._signed(token)


AUTHENTICATOR = web.AppKey("tandem_authenticator", Authenticator)
CLAIMS_KEY = web.RequestKey("tandem_agent_claims", AgentClaims)
AUTH_ERROR_KEY = web.RequestKey("tandem_auth_error", ProtocolError)


def authentication_middleware() -> Callable:
    """Read the bearer token of every request that has one, for `agent_of` to return.

    A missing or invalid token is not an error here: public routes (login) need none,
    and `agent_of` raises the 401 for the routes that do.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        header = request.headers.get("Authorization")
        if header:
            try:
                request[CLAIMS_KEY] = await request.app[AUTHENTICATOR].from_header(header)
            except ProtocolError as error:
                request[AUTH_ERROR_KEY] = error
        return await handler(request)

    return middleware


async def authenticate(request: web.Request) -> AgentClaims:
    """Return the request's agent claims, authenticating it now if no middleware did."""
    claims = request.get(CLAIMS_KEY)
    if claims is None and AUTH_ERROR_KEY not in request:
        try:
            claims = await request.app[AUTHENTICATOR].from_header(request.headers.get("Authorization"))
        except ProtocolError as error:
            request[AUTH_ERROR_KEY] = error
        else:
            request[CLAIMS_KEY] = claims
    return agent_of(request)


def agent_of(request: web.Request) -> AgentClaims:
    """Return the claims `authentication_middleware` found, or raise its 401 error."""
    claims = request.get(CLAIMS_KEY)
    if claims is not None:
        return claims
    error = request.get(AUTH_ERROR_KEY)
    if error is not None:
        raise error
    bearer_token(request.headers.get("Authorization"))  # raises missing_token
    raise ProtocolError(code="invalid_token", message="The request is not authenticated. Sign in again.", status=401)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(permission: Permission) -> Callable[[Handler], Handler]:
    """Decorate a handler so that it runs only for an authenticated agent whose role has `permission`."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            require_permission(await authenticate(request), permission)
            return await handler(request)

        return checked

    return decorate


# Origins ---------------------------------------------------------------------------------------


def origin_matches(origin: str, pattern: str) -> bool:
    """Tell whether `origin` (scheme://host[:port]) matches an allowed-origin pattern.

    `*` matches every origin; `https://*.example.com` matches its subdomains but not
    `https://example.com`; a pattern without a port matches the scheme's default port only.
    """
    if pattern == "*":
        return True
    origin = origin.lower().rstrip("/")
    if "://*." not in pattern:
        return origin == pattern
    scheme, _, rest = pattern.partition("://*.")
    parts = urlsplit(origin)
    if parts.scheme != scheme or not parts.hostname:
        return False
    domain, _, port = rest.partition(":")
    origin_port = str(parts.port) if parts.port is not None else ""
    return parts.hostname.endswith("." + domain) and origin_port == port


def origin_allowed(origin: str | None, patterns: list[str]) -> bool:
    """Allow a request without Origin (not from a browser page), and any origin when `patterns` is empty."""
    if origin is None or not patterns:
        return True
    return any(origin_matches(origin, pattern) for pattern in patterns)


ORIGIN_REJECTED_KEY = web.RequestKey("tandem_origin_rejected", bool)


def check_tracker_origin(request: web.Request, project: Project) -> None:
    """Raise a 403 ProtocolError when the request's Origin is not one of the project's allowed origins."""
    origin = request.headers.get("Origin")
    if origin_allowed(origin, project.allowed_origins):
        return
    request[ORIGIN_REJECTED_KEY] = True
    raise ProtocolError(
        code="origin_not_allowed",
        message=f"Project {project.id!r} does not allow requests from {origin[:200]!r}. "
        "Add the origin to the project's allowed origins.",
        status=403,
    )


def tracker_cors_middleware(allow_headers: str = "Authorization, Content-Type, Content-Encoding") -> Callable:
    """CORS for the tracker's API, with the origin checked against the project's allowed origins.

    A preflight carries no project key or token, so it is answered for any origin; the
    request itself is then checked by `check_tracker_origin`, and its rejection goes
    out without `Access-Control-Allow-Origin`, so the page cannot read it either.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if origin and not request.get(ORIGIN_REJECTED_KEY):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = allow_headers
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers["Access-Control-Max-Age"] = "600"
        if origin:
            response.headers["Vary"] = "Origin"
        return response

    return middleware


def check_agent_socket_origin(request: web.Request, allowed: list[str]) -> None:
    """Raise a 403 ProtocolError when an agent socket comes from a page of another site.

    Accepted: no Origin header (not a browser page), the server's own origin (the
    dashboard), or one of `allowed` (an embedding console). Agent sockets authenticate
    with a token in their first frame, not with cookies, so this is defence in depth
    against a page that got hold of a token.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return
    if urlsplit(origin).netloc.lower() == request.host.lower():
        return
    if any(origin_matches(origin, pattern) for pattern in allowed):
        return
    raise ProtocolError(
        code="origin_not_allowed",
        message=f"Agent sockets are not accepted from {origin[:200]!r}. Open the dashboard on this server, "
        "or add the origin to TANDEM_AGENT_ORIGINS.",
        status=403,
    )
