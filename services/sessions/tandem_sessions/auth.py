"""Agent sign-in and tokens, mounted under `/api`.

`POST /v1/auth/login` exchanges a user name and password for a signed login token;
`POST /v1/auth/socket-token` exchanges a login or API token for a short-lived
socket token scoped to one project; `GET /v1/auth/me` returns the caller.

Identity providers are the seam for single sign-on: each turns credentials into an
`Identity`, which the login handler maps onto an enabled agent account. Passwords
are the one provider so far; an OIDC provider would add a redirect route and a
callback that builds the same Identity from the ID token's claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import structlog
from aiohttp import web
from prometheus_client import Counter
from tandem_protocol import LoginRequest, LoginResponse, ProtocolError, decode
from tandem_protocol.access import AgentView, SocketTokenRequest, SocketTokenResponse
from tandem_protocol.models import AgentInfo
from tandem_runtime.access import authenticate, require_project
from tandem_runtime.directory import AgentAccount, AgentDirectory
from tandem_runtime.http import json_response
from tandem_runtime.ratelimit import RateLimited, SharedFailureLockout, client_address
from tandem_runtime.tokens import TokenSigner

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Identity:
    """A user as an identity provider identified them. `name` is the agent account's user name."""

    provider: str
    name: str


class IdentityProvider(Protocol):
    """Checks credentials. Returns None for wrong credentials; raises ProtocolError when it cannot check."""

    name: str

    async def authenticate(self, credentials: LoginRequest) -> Identity | None: ...


class PasswordProvider:
    """User names and argon2id password hashes in the agents bucket."""

    name = "password"

    def __init__(self, agents: AgentDirectory) -> None:
        self._agents = agents

    async def authenticate(self, credentials: LoginRequest) -> Identity | None:
        account = await self._agents.authenticate(credentials.username, credentials.password)
        return Identity(provider=self.name, name=account.name) if account else None


@dataclass
class SignIn:
    """The state the auth routes share: the providers, the lockout and the token lifetimes."""

    agents: AgentDirectory
    signer: TokenSigner
    providers: list[IdentityProvider]
    lockout: SharedFailureLockout
    trusted_proxies: list
    login_ttl_seconds: int
    socket_ttl_seconds: int


SIGN_IN = web.AppKey("sign_in", SignIn)

LOGINS = Counter("tandem_agent_logins_total", "Agent login attempts, by outcome.", ["outcome"])
SOCKET_TOKENS = Counter(
    "tandem_socket_tokens_issued_total", "Socket tokens issued, by the kind of token exchanged.", ["kind"]
)


async def login(request: web.Request) -> web.Response:
    sign_in = request.app[SIGN_IN]
    address = client_address(request, sign_in.trusted_proxies)
    credentials = decode(LoginRequest, await request.read(), what="login request")
    # Count the attempt before checking the password, so that concurrent attempts cannot all
    # pass before a failure is written. A sign-in that succeeds is refunded.
    wait = await sign_in.lockout.reserve(address)
    if wait > 0:
        LOGINS.labels("locked_out").inc()
        raise locked_out(wait)

    account = await authenticate_credentials(sign_in, credentials)
    if account is None:
        LOGINS.labels("rejected").inc()
        log.warning("agent.login_rejected", username=credentials.username[:128], address=address)
        wait = await sign_in.lockout.retry_after(address)
        if wait > 0:
            log.warning("agent.login_locked_out", address=address, retry_after_seconds=round(wait))
            raise locked_out(wait)
        raise ProtocolError(
            code="invalid_credentials",
            message="The user name or password is wrong. Check both and try again.",
            status=401,
        )

    await sign_in.lockout.refund(address)
    token, expires_at = sign_in.signer.sign_agent(
        agent_id=account.id,
        name=account.name,
        role=account.role,
        projects=account.projects,
        ttl_seconds=sign_in.login_ttl_seconds,
    )
    LOGINS.labels("accepted").inc()
    log.info("agent.logged_in", agent_id=account.id)
    return json_response(
        LoginResponse(
            token=token, expires_at=expires_at, agent=AgentInfo(id=account.id, name=account.name, role=account.role)
        )
    )


async def authenticate_credentials(sign_in: SignIn, credentials: LoginRequest) -> AgentAccount | None:
    """Ask each provider in turn; the first identity that names an enabled account signs in."""
    for provider in sign_in.providers:
        identity = await provider.authenticate(credentials)
        if identity is None:
            continue
        account = await sign_in.agents.get(identity.name)
        if account is not None and not account.disabled:
            return account
    return None


def locked_out(wait_seconds: float) -> RateLimited:
    return RateLimited(
        code="too_many_failed_logins",
        message=f"Too many failed sign-ins from this address. Try again in {max(1, round(wait_seconds))} seconds.",
        retry_after_seconds=wait_seconds,
    )


async def socket_token(request: web.Request) -> web.Response:
    """Exchange a login or API token for a short-lived token of one project, for the live and signal sockets."""
    claims = await authenticate(request)
    if claims.kind == "socket":
        # Exchanging a socket token for a fresh one would let a leaked one live forever.
        raise ProtocolError(
            code="forbidden",
            message="A socket token cannot be exchanged for another: use a login or API token.",
            status=403,
        )
    body = decode(SocketTokenRequest, await request.read(), what="socket token request")
    require_project(claims, body.project_id)
    sign_in = request.app[SIGN_IN]
    token, expires_at = sign_in.signer.sign_socket(
        claims, project_id=body.project_id, ttl_seconds=sign_in.socket_ttl_seconds
    )
    SOCKET_TOKENS.labels(claims.kind).inc()
    log.info("agent.socket_token_issued", agent_id=claims.agent_id, project_id=body.project_id, exchanged=claims.kind)
    return json_response(SocketTokenResponse(token=token, expires_at=expires_at, project_id=body.project_id))


async def me(request: web.Request) -> web.Response:
    """Return the calling agent's account as the token describes it."""
    claims = await authenticate(request)
    account = await request.app[SIGN_IN].agents.get(claims.name)
    view = AgentView(
        id=claims.agent_id,
        name=claims.name,
        role=claims.role,
        projects=claims.projects,
        disabled=account.disabled if account else True,
        created_at=account.created_at if account else 0,
    )
    return json_response(
        {**view.model_dump(by_alias=True), "tokenKind": claims.kind, "expiresAt": claims.expires_at * 1000}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/auth/login", login)
    app.router.add_post("/v1/auth/socket-token", socket_token)
    app.router.add_get("/v1/auth/me", me)
