"""SIGTERM while traffic flows, as Kubernetes stops a pod: `python -m tandem_ingest` and `python -m tandem_live`
run as child processes against a real nats-server.

Ingest must store every batch it answered with 2xx before it exits; live must close each agent's WebSocket
with code 1001 (going away) and a reason, so that the dashboard reconnects to another pod.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import WSMsgType
from nats.aio.client import Client as NatsClient
from tandem_protocol import EventBatch, Project, decode, subjects
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.embedded import EmbeddedNats, free_port
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY

PROJECT = Project(id="shop", key="shop-key", name="Shop")
SHUTDOWN_TIMEOUT_SECONDS = 5
META = {"type": 4, "timestamp": 1, "data": {"href": "http://shop.test/", "width": 800, "height": 600}}
SNAPSHOT = {"type": 2, "timestamp": 2, "data": {"node": {"type": 0, "childNodes": [], "id": 1}}}
CLICK = {"type": 3, "timestamp": 3, "data": {"source": 2, "type": 2, "id": 1, "x": 5, "y": 5}}
SENDERS = 4
MAX_BATCHES_PER_SENDER = 3000


@dataclass
class ServiceProcess:
    """A service run as `python -m MODULE`, listening on 127.0.0.1:`port`."""

    process: asyncio.subprocess.Process
    port: int
    stderr: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def terminate_and_wait(self, timeout: float) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout)

    def log(self) -> str:
        return b"".join(self.stderr).decode(errors="replace")[-4000:]


async def start_service(module: str, nats_url: str) -> ServiceProcess:
    """Start a service process and wait until its /readyz returns 200."""
    port = free_port()
    env = {
        **os.environ,
        "TANDEM_HOST": "127.0.0.1",
        "TANDEM_PORT": str(port),
        "TANDEM_NATS_URL": nats_url,
        "TANDEM_SECRET_KEY": SECRET_KEY,
        "TANDEM_SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
        "TANDEM_LOG_LEVEL": "info",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    service = ServiceProcess(process=process, port=port)

    async def collect_stderr() -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            service.stderr.append(line)

    asyncio.get_running_loop().create_task(collect_stderr())
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                pytest.fail(f"{module} exited with code {process.returncode}:\n{service.log()}")
            try:
                async with http.get(f"{service.url}/readyz") as response:
                    if response.status == 200:
                        return service
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    pytest.fail(f"{module} was not ready within 30 s:\n{service.log()}")


@pytest.fixture
async def services(nats_server: EmbeddedNats, nats_client: NatsClient) -> AsyncIterator[list[ServiceProcess]]:
    """Collects the started processes, and kills any a test left running."""
    await ProjectDirectory(js=nats_client.jetstream()).put(PROJECT)
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        if service.process.returncode is None:
            service.process.kill()
            await service.process.wait()


async def start_session(http: aiohttp.ClientSession, ingest: ServiceProcess, tab_id: str) -> tuple[str, str]:
    body = {"projectKey": PROJECT.key, "tabId": tab_id, "url": "http://shop.test/"}
    async with http.post(f"{ingest.url}/ingest/v1/web/start", json=body) as response:
        assert response.status == 200, await response.text()
        started = await response.json()
    return started["sessionID"], started["token"]


async def send_batches(
    http: aiohttp.ClientSession, ingest: ServiceProcess, tab_id: str, acked: set[tuple[str, int]]
) -> str:
    """Post numbered batches until the server stops responding, and record each 2xx. Return why it stopped."""
    session_id, token = await start_session(http, ingest, tab_id)
    headers = {"Authorization": f"Bearer {token}"}
    for seq in range(MAX_BATCHES_PER_SENDER):
        events = [META, SNAPSHOT] if seq == 0 else [CLICK]
        body = {"tabId": tab_id, "sessionID": session_id, "seq": seq, "events": events}
        try:
            async with http.post(f"{ingest.url}/ingest/v1/web/i", json=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    acked.add((session_id, seq))
                elif response.status != 503:
                    return f"status {response.status}"
        except aiohttp.ClientError as error:
            return type(error).__name__
    return "limit reached"


async def stored_batches(nats_client: NatsClient) -> list[tuple[str, int]]:
    """Read every message of the events stream, in order, as (session id, batch seq)."""
    js = nats_client.jetstream()
    info = await js.stream_info(subjects.EVENTS_STREAM)
    stored: list[tuple[str, int]] = []
    if info.state.messages == 0:
        return stored
    for sequence in range(info.state.first_seq, info.state.last_seq + 1):
        message = await js.get_msg(subjects.EVENTS_STREAM, sequence)
        batch = decode(EventBatch, message.data)
        stored.append((batch.session_id, batch.seq))
    return stored


async def test_ingest_sigterm_keeps_acked_batches(nats_server, nats_client, services):
    ingest = await start_service("tandem_ingest", nats_server.url)
    services.append(ingest)
    acked: set[tuple[str, int]] = set()

    async with aiohttp.ClientSession() as http:
        senders = [asyncio.create_task(send_batches(http, ingest, f"tab-{number}", acked)) for number in range(SENDERS)]
        while len(acked) < 40:
            await asyncio.sleep(0.02)
        acked_before_sigterm = len(acked)
        exit_code = await ingest.terminate_and_wait(timeout=SHUTDOWN_TIMEOUT_SECONDS + 15)
        stop_reasons = await asyncio.wait_for(asyncio.gather(*senders), timeout=10)

    assert exit_code == 0, ingest.log()
    unexpected_stops = [reason for reason in stop_reasons if reason == "limit reached" or reason.startswith("status")]
    assert not unexpected_stops, "a sender stopped before the server did"
    assert len(acked) >= acked_before_sigterm
    stored = await stored_batches(nats_client)
    assert len(stored) == len(set(stored)), "a batch was stored twice"
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} batches answered 2xx are not on the stream: {sorted(missing)[:5]}"


async def test_ingest_sigterm_without_nats_exits(nats_server):
    """Regression: with NATS out of reach, draining raised on shutdown and the process exited with code 1."""
    ingest = await start_service("tandem_ingest", nats_server.url)
    try:
        nats_server.stop()
        await wait_until_not_ready(ingest)
        exit_code = await ingest.terminate_and_wait(timeout=SHUTDOWN_TIMEOUT_SECONDS + 15)
    finally:
        if ingest.process.returncode is None:
            ingest.process.kill()
    assert exit_code == 0, ingest.log()
    assert "nats.drain_skipped" in ingest.log()


async def wait_until_not_ready(service: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            async with http.get(f"{service.url}/readyz") as response:
                if response.status == 503:
                    return
            await asyncio.sleep(0.05)
    pytest.fail("/readyz still answered 200 10 s after nats-server stopped.")


async def test_live_sigterm_closes_agent_socket(nats_server, nats_client, services):
    ingest = await start_service("tandem_ingest", nats_server.url)
    live = await start_service("tandem_live", nats_server.url)
    services.extend([ingest, live])
    token, _ = TokenSigner(secret_key=SECRET_KEY).sign_agent(
        agent_id="agent-test", name="test", role="agent", projects=["*"], ttl_seconds=600
    )
    acked: set[tuple[str, int]] = set()

    async with aiohttp.ClientSession() as http:
        sender = asyncio.create_task(send_batches(http, ingest, "tab-live", acked))
        async with http.ws_connect(f"{live.url}/live/v1/ws") as ws:
            await ws.send_json({"type": "auth", "token": token})
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            session_id = await wait_for_live_session(ws)
            await ws.send_json({"type": "watch", "sessionId": session_id})
            await receive_until(ws, "events")

            live.process.send_signal(signal.SIGTERM)
            closing = await receive_until_close(ws)

        exit_code = await asyncio.wait_for(live.process.wait(), timeout=SHUTDOWN_TIMEOUT_SECONDS + 15)
        sender.cancel()

    assert closing.type == WSMsgType.CLOSE
    assert closing.data == aiohttp.WSCloseCode.GOING_AWAY
    assert closing.extra, "the close frame carries no reason"
    assert exit_code == 0, live.log()


async def wait_for_live_session(ws: aiohttp.ClientWebSocketResponse) -> str:
    """Subscribe to the project's live list and return the first session on it."""
    await ws.send_json({"type": "list.subscribe", "projectId": PROJECT.id})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == "list.snapshot" and frame["sessions"]:
            return frame["sessions"][0]["sessionId"]
        if frame["type"] == "list.upsert":
            return frame["session"]["sessionId"]
    pytest.fail("No live session appeared within 10 s.")


async def receive_until(ws: aiohttp.ClientWebSocketResponse, frame_type: str) -> dict:
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == frame_type:
            return frame


async def receive_until_close(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """Read frames (events keep coming) until the server's close frame."""
    while True:
        message = await ws.receive(timeout=SHUTDOWN_TIMEOUT_SECONDS + 10)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return message
