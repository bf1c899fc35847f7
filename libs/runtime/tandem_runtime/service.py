"""Start a service process: connect NATS, mount the service's routes under its prefix, serve, drain on SIGTERM."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient

from tandem_runtime import bus
from tandem_runtime.http import READINESS_CHECKS, add_ops_routes, nats_readiness
from tandem_runtime.logs import configure_logging
from tandem_runtime.settings import ServiceSettings
from tandem_runtime.tokens import TokenSigner

log = structlog.get_logger(__name__)

Mount = Callable[[NatsClient, TokenSigner], list[tuple[str, web.Application]]]
"""Build a service's applications, each with the path prefix it is mounted under."""


async def build_root_app(*, name: str, settings: ServiceSettings, mount: Mount) -> web.Application:
    """Connect to NATS, make sure the streams exist, and return the root app with the service mounted."""
    nc = await bus.connect(settings.nats_url, name=f"tandem-{name}")
    await bus.ensure_streams(
        nc.jetstream(), replicas=settings.stream_replicas, max_age_seconds=settings.stream_max_age_seconds
    )
    signer = TokenSigner(secret_key=settings.secret_key.get_secret_value())
    root = web.Application()
    add_ops_routes(root)
    root[READINESS_CHECKS].append(nats_readiness(nc))
    for prefix, app in mount(nc, signer):
        root.add_subapp(prefix, app)

    async def drain_nats(_: web.Application) -> None:
        await bus.drain_or_close(nc, name=name)

    root.on_cleanup.append(drain_nats)
    return root


def run_service(*, name: str, settings: ServiceSettings, mount: Mount) -> None:
    """Serve one service until SIGTERM or SIGINT, then shut down within the settings' timeout."""
    configure_logging(settings.log_level)
    log.info("service.starting", service=name, host=settings.host, port=settings.port)
    web.run_app(
        build_root_app(name=name, settings=settings, mount=mount),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )
    log.info("service.stopped", service=name)
