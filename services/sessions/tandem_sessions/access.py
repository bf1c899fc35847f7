"""Access control in the sessions app: sign-in, projects, agents, API tokens and the audit trail.

`mount` adds the routes and the background work: the audit consumer, and the
retention TTLs, applied once the store opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from tandem_runtime.access import AUTHENTICATOR, Authenticator
from tandem_runtime.accounts import ACCOUNT_GUARD, AccountGuard
from tandem_runtime.directory import AgentDirectory, ApiTokenDirectory, ProjectDirectory
from tandem_runtime.ratelimit import SharedFailureLockout
from tandem_runtime.tokens import TokenSigner

from tandem_sessions import agents, audit, auth, projects
from tandem_sessions.api import RUNTIME
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store.driver import StoreError

log = structlog.get_logger(__name__)

STORE_WAIT_SECONDS = 0.2
JS = web.AppKey("access_js", JetStreamContext)


def mount(app: web.Application, *, settings: SessionsSettings, nc: NatsClient, signer: TokenSigner) -> None:
    """Add the access-control routes and background work to the sessions app."""
    js = nc.jetstream()
    app[JS] = js
    agent_directory = AgentDirectory(js=js)
    api_tokens = ApiTokenDirectory(js=js, agents=agent_directory)
    guard = AccountGuard(agent_directory)
    app[AUTHENTICATOR] = Authenticator(signer=signer, api_tokens=api_tokens, guard=guard)
    app[ACCOUNT_GUARD] = guard
    app[agents.AGENT_DIRECTORY] = agent_directory
    app[agents.API_TOKENS] = api_tokens
    app[projects.PROJECTS] = ProjectDirectory(js=js)
    app[auth.SIGN_IN] = auth.SignIn(
        agents=agent_directory,
        signer=signer,
        providers=[auth.PasswordProvider(agent_directory)],
        lockout=SharedFailureLockout(
            js=js,
            secret_key=signer.derive_key("sign-in lockout"),
            max_failures=settings.login_max_failures,
            window_seconds=settings.login_failure_window_seconds,
            lockout_seconds=settings.login_lockout_seconds,
        ),
        trusted_proxies=list(settings.trusted_proxies),
        login_ttl_seconds=settings.agent_token_ttl_seconds,
        socket_ttl_seconds=settings.socket_token_ttl_seconds,
    )
    auth.add_routes(app)
    projects.add_routes(app)
    agents.add_routes(app)
    audit.add_routes(app)
    app.cleanup_ctx.append(run_access_background)


async def run_access_background(app: web.Application) -> AsyncIterator[None]:
    """Once the store is open, apply retention and run the audit consumer; stop before the store closes."""
    task = asyncio.create_task(work_when_store_opens(app))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def work_when_store_opens(app: web.Application) -> None:
    runtime = app[RUNTIME]
    while runtime.store is None:
        await asyncio.sleep(STORE_WAIT_SECONDS)
    try:
        await projects.apply_retention_now(app)
    except StoreError as error:
        log.error("retention.apply_failed", error=error.message, code=error.code)
    settings = runtime.settings
    if not settings.audit_consumer_enabled:
        return
    consumer = audit.AuditConsumer(
        js=app[JS],
        writer=audit.AuditWriter(runtime.store.db),
        durable=settings.audit_consumer_durable,
        replicas=settings.stream_replicas,
    )
    await consumer.start()
    try:
        await consumer.run()
    finally:
        await consumer.close()
