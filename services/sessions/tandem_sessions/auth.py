"""Agent login: `POST /api/v1/auth/login` exchanges a user name and password for a signed agent token."""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import Counter
from tandem_protocol import LoginRequest, LoginResponse, ProtocolError, decode
from tandem_protocol.models import AgentInfo
from tandem_runtime.directory import AgentDirectory
from tandem_runtime.http import json_response
from tandem_runtime.tokens import TokenSigner

log = structlog.get_logger(__name__)

AGENTS = web.AppKey("agents", AgentDirectory)
SIGNER = web.AppKey("signer", TokenSigner)
TOKEN_TTL = web.AppKey("token_ttl", int)

LOGINS = Counter("tandem_agent_logins_total", "Agent login attempts, by outcome.", ["outcome"])


async def login(request: web.Request) -> web.Response:
    credentials = decode(LoginRequest, await request.read(), what="login request")
    account = await request.app[AGENTS].authenticate(credentials.username, credentials.password)
    if account is None:
        LOGINS.labels("rejected").inc()
        log.warning("agent.login_rejected", username=credentials.username[:128])
        raise ProtocolError(
            code="invalid_credentials", message="The user name or password is wrong. Check both and try again.", status=401
        )
    token, expires_at = request.app[SIGNER].sign_agent(
        agent_id=account.id,
        name=account.name,
        role=account.role,
        projects=account.projects,
        ttl_seconds=request.app[TOKEN_TTL],
    )
    LOGINS.labels("accepted").inc()
    log.info("agent.logged_in", agent_id=account.id)
    return json_response(
        LoginResponse(token=token, expires_at=expires_at, agent=AgentInfo(id=account.id, name=account.name, role=account.role))
    )
