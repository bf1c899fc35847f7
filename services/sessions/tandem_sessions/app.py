"""Routes of the sessions service, mounted under `/api`."""

from __future__ import annotations

from aiohttp import web
from nats.aio.client import Client as NatsClient
from tandem_runtime.directory import AgentDirectory
from tandem_runtime.http import error_middleware
from tandem_runtime.tokens import TokenSigner

from tandem_sessions import auth
from tandem_sessions.settings import SessionsSettings


def create_app(*, settings: SessionsSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the sessions application; mount it under `/api`."""
    app = web.Application(middlewares=[error_middleware("sessions")])
    app[auth.AGENTS] = AgentDirectory(js=nc.jetstream())
    app[auth.SIGNER] = signer
    app[auth.TOKEN_TTL] = settings.agent_token_ttl_seconds
    app.router.add_post("/v1/auth/login", auth.login)
    return app
