"""The all-in-one server: every service mounted under its prefix, plus the dashboard, demo and bundles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from tandem_ingest.app import create_app as create_ingest
from tandem_ingest.settings import IngestSettings
from tandem_live.app import create_app as create_live
from tandem_live.settings import LiveSettings
from tandem_runtime import bus
from tandem_runtime.embedded import EmbeddedNats
from tandem_runtime.http import READINESS_CHECKS, add_ops_routes, nats_readiness
from tandem_runtime.tokens import TokenSigner
from tandem_sessions.app import create_app as create_sessions
from tandem_sessions.settings import SessionsSettings
from tandem_signal.app import create_app as create_signal
from tandem_signal.settings import SignalSettings

from tandem import bootstrap
from tandem.settings import AllInOneSettings

log = structlog.get_logger(__name__)


@dataclass
class Started:
    """The running parts that `start` returns, for the caller to serve and later stop."""

    app: web.Application
    nc: NatsClient
    nats: EmbeddedNats | None
    admin_password: str | None
    extras: dict = field(default_factory=dict)


async def start(settings: AllInOneSettings) -> Started:
    """Start nats-server (unless external), connect, bootstrap, and build the root application."""
    embedded = None
    nats_url = settings.nats_url
    if settings.embedded_nats:
        embedded = EmbeddedNats(data_dir=settings.data_dir / "nats", port=settings.nats_port)
        await embedded.start()
        nats_url = embedded.url
    nc = await bus.connect(nats_url, name="tandem-all")
    js = nc.jetstream()
    await bus.ensure_streams(js, replicas=settings.stream_replicas, max_age_seconds=settings.stream_max_age_seconds)

    secret = settings.secret_key.get_secret_value() or bootstrap.load_or_create_secret(settings.data_dir)
    signer = TokenSigner(secret_key=secret)
    await bootstrap.ensure_demo_project(js, key=settings.demo_project_key)
    admin_password = await bootstrap.ensure_admin(js, data_dir=settings.data_dir)

    root = web.Application()
    add_ops_routes(root)
    root[READINESS_CHECKS].append(nats_readiness(nc))
    root.add_subapp("/ingest", create_ingest(settings=IngestSettings(), nc=nc, signer=signer))
    root.add_subapp("/live", create_live(settings=LiveSettings(), nc=nc, signer=signer))
    root.add_subapp("/signal", create_signal(settings=SignalSettings(), nc=nc, signer=signer))
    # The embedded chdb store lives in the same data folder as JetStream.
    sessions_settings = SessionsSettings(data_dir=settings.data_dir)
    root.add_subapp("/api", create_sessions(settings=sessions_settings, nc=nc, signer=signer))
    add_web_routes(root, settings.web_dir)

    async def stop_bus(_: web.Application) -> None:
        await bus.drain_or_close(nc, name="all")
        if embedded is not None:
            embedded.stop()

    root.on_cleanup.append(stop_bus)
    return Started(app=root, nc=nc, nats=embedded, admin_password=admin_password)


def add_web_routes(app: web.Application, web_dir: Path) -> None:
    """Serve the dashboard at `/`, the demo shop at `/demo/` and the bundles at `/static/`."""
    dashboard = web_dir / "dashboard"
    if not (dashboard / "index.html").exists():
        log.warning("web.not_built", web_dir=str(web_dir), fix="run `make web` to build the bundles")

    async def dashboard_index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(dashboard / "index.html")

    async def demo_index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir / "demo" / "index.html")

    async def demo_redirect(_: web.Request) -> web.Response:
        raise web.HTTPFound("/demo/")

    app.router.add_get("/", dashboard_index)
    app.router.add_get("/demo", demo_redirect)
    app.router.add_get("/demo/", demo_index)
    # aiohttp checks static folders when the route is added, so an unbuilt tree gets no file routes.
    if (web_dir / "demo").is_dir():
        app.router.add_static("/demo/", web_dir / "demo")
    if web_dir.is_dir():
        app.router.add_static("/static/", web_dir)
    if dashboard.is_dir():
        app.router.add_static("/", dashboard)
