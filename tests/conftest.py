"""Fixtures that start real parts: a nats-server on a free port and the all-in-one Tandem server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from nats.aio.client import Client as NatsClient
from tandem_runtime import bus
from tandem_runtime.embedded import EmbeddedNats, free_port
from tandem_runtime.logs import configure_logging

from tandem.server import start
from tandem.settings import AllInOneSettings

SECRET_KEY = "test-secret-key-0123456789abcdef"
ADMIN_PASSWORD_FILE = "admin-password"
PORT_ATTEMPTS = 3

configure_logging(os.environ.get("TANDEM_LOG_LEVEL", "warning"))


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = await start_nats(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
async def nats_client(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await bus.connect(nats_server.url, name="test")
    await bus.ensure_streams(client.jetstream())
    yield client
    await client.drain()


@dataclass
class RunningTandem:
    """The all-in-one server of a test, reachable at `url`."""

    url: str
    nats_url: str
    data_dir: Path
    admin_password: str
    nc: NatsClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/live/v1/ws"

    async def agent_token(self, session: aiohttp.ClientSession) -> str:
        async with session.post(
            f"{self.url}/api/v1/auth/login", json={"username": "admin", "password": self.admin_password}
        ) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["token"]


async def listen(runner: web.AppRunner) -> int:
    """Serve `runner` on 127.0.0.1 at a port the kernel picks when binding, so no other process can take it first."""
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner.addresses[-1][1]


async def start_nats(data_dir: Path) -> EmbeddedNats:
    """Start a nats-server on a free port, choosing another if a concurrent process took it first."""
    for attempt in range(PORT_ATTEMPTS):
        server = EmbeddedNats(data_dir=data_dir, port=free_port())
        try:
            await server.start()
            return server
        except RuntimeError:
            if attempt == PORT_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


async def start_tandem(
    data_dir: Path, *, nats_url: str | None = None, **overrides
) -> tuple[web.AppRunner, RunningTandem]:
    """Start the all-in-one server on free ports, with its own nats-server unless `nats_url` is given."""
    for attempt in range(PORT_ATTEMPTS):
        settings = AllInOneSettings(
            port=0,
            data_dir=data_dir,
            nats_port=free_port(),
            embedded_nats=nats_url is None,
            nats_url=nats_url or "nats://127.0.0.1:4222",
            secret_key=SECRET_KEY,
            **overrides,
        )
        try:
            started = await start(settings)
            break
        except RuntimeError:
            # free_port() releases the port before nats-server binds it, so another process may take it.
            if attempt == PORT_ATTEMPTS - 1:
                raise
    runner = web.AppRunner(started.app, shutdown_timeout=2)
    await runner.setup()
    try:
        port = await listen(runner)
    except BaseException:
        await runner.cleanup()  # Closes the embedded ClickHouse, which allows one data path per process.
        raise
    password = (data_dir / ADMIN_PASSWORD_FILE).read_text().strip()
    url_of_nats = started.nats.url if started.nats else nats_url
    return runner, RunningTandem(
        url=f"http://127.0.0.1:{port}", nats_url=url_of_nats, data_dir=data_dir, admin_password=password, nc=started.nc
    )


@pytest.fixture
async def tandem(tmp_path: Path) -> AsyncIterator[RunningTandem]:
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
