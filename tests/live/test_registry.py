"""The live-session registry shared by every pod: heartbeats, hidden tabs, closed tabs, restarts and two pods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web
from nats.js.errors import KeyNotFoundError
from tandem_ingest.app import create_app as create_ingest
from tandem_ingest.settings import IngestSettings
from tandem_live.app import create_app as create_live
from tandem_live.registry import LiveRegistry
from tandem_live.settings import LiveSettings
from tandem_protocol import LiveSession, Project, encode, subjects
from tandem_runtime import bus
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY, listen

CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
SIGNER = TokenSigner(secret_key=SECRET_KEY)


def custom(tag: str, payload: dict, timestamp: int = 1) -> dict:
    return {"type": 5, "timestamp": timestamp, "data": {"tag": tag, "payload": payload}}


@dataclass
class Stack:
    """One ingest app and any number of live pods on a real nats-server, each pod with its own NATS connection."""

    nats_url: str
    ingest_url: str = ""
    http: aiohttp.ClientSession | None = None
    pods: dict[str, tuple[web.AppRunner, object]] = field(default_factory=dict)
    runners: list[web.AppRunner] = field(default_factory=list)
    seq: dict[str, int] = field(default_factory=dict)

    @property
    def agent_token(self) -> str:
        return SIGNER.sign_agent(agent_id="agent-1", name="agent-1", role="agent", projects=["demo"], ttl_seconds=600)[
            0
        ]

    async def start_pod(self, **settings) -> str:
        """Start a live pod; return its base URL."""
        nc = await bus.connect(self.nats_url, name="live-pod")
        app = create_live(settings=LiveSettings(**settings), nc=nc, signer=SIGNER)
        root = web.Application()
        root.add_subapp("/live", app)
        runner = web.AppRunner(root, shutdown_timeout=1)
        await runner.setup()
        port = await listen(runner)
        url = f"http://127.0.0.1:{port}"
        self.pods[url] = (runner, nc)
        return url

    async def stop_pod(self, url: str) -> None:
        runner, nc = self.pods.pop(url)
        await runner.cleanup()
        await nc.close()

    async def start(
        self, *, tab_id: str = "tab-1", user_agent: str = CHROME_UA, token: str | None = None, **body
    ) -> dict:
        request = {"projectKey": "demo-key", "tabId": tab_id, "token": token, "url": "https://shop.test/", **body}
        async with self.http.post(
            f"{self.ingest_url}/ingest/v1/web/start", json=request, headers={"User-Agent": user_agent}
        ) as response:
            assert response.status == 200, await response.text()
            started = await response.json()
        started["tabId"] = tab_id
        return started

    async def batch(self, started: dict, events: list[dict]) -> None:
        seq = self.seq.get(started["sessionID"], 0)
        self.seq[started["sessionID"]] = seq + 1
        body = orjson.dumps({"tabId": started["tabId"], "seq": seq, "events": events})
        headers = {"Authorization": f"Bearer {started['token']}", "Content-Type": "application/json"}
        async with self.http.post(f"{self.ingest_url}/ingest/v1/web/i", data=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    async def list(self, pod_url: str, **params) -> dict:
        query = {"projectId": "demo", **params}
        headers = {"Authorization": f"Bearer {self.agent_token}"}
        async with self.http.get(f"{pod_url}/live/v1/sessions", params=query, headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def agent(self, pod_url: str) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(pod_url.replace("http://", "ws://") + "/live/v1/ws")
        await ws.send_json({"type": "auth", "token": self.agent_token})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
        return ws


async def serve(app: web.Application, prefix: str) -> tuple[web.AppRunner, str]:
    root = web.Application()
    root.add_subapp(prefix, app)
    runner = web.AppRunner(root, shutdown_timeout=1)
    await runner.setup()
    port = await listen(runner)
    return runner, f"http://127.0.0.1:{port}"


async def running_stack(nats_server, nats_client) -> AsyncIterator[Stack]:
    """Yield a Stack with one ingest app; stop its live pods and apps afterwards."""
    await ProjectDirectory(js=nats_client.jetstream()).put(Project(id="demo", key="demo-key"))
    result = Stack(nats_url=nats_server.url)
    ingest = create_ingest(settings=IngestSettings(registry_refresh_seconds=0.2), nc=nats_client, signer=SIGNER)
    runner, result.ingest_url = await serve(ingest, "/ingest")
    result.runners.append(runner)
    async with aiohttp.ClientSession() as http:
        result.http = http
        yield result
        for url in list(result.pods):
            await result.stop_pod(url)
        for runner in result.runners:
            await runner.cleanup()


@pytest.fixture
async def stack(nats_server, nats_client) -> AsyncIterator[Stack]:
    async for running in running_stack(nats_server, nats_client):
        yield running


async def next_frame(ws, kind: str, timeout: float = 5.0, where=lambda frame: True) -> dict:
    """Return the next frame of `kind` that satisfies `where`, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind!r} frame within {timeout} s")
        frame = await ws.receive_json(timeout=remaining)
        if frame["type"] == kind and where(frame):
            return frame


async def frames_for(ws, seconds: float) -> list[dict]:
    frames = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            frames.append(await ws.receive_json(timeout=remaining))
        except TimeoutError:
            break
    return frames


async def wait_for_list(stack: Stack, pod_url: str, predicate, timeout: float = 5.0, **params) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        listed = await stack.list(pod_url, **params)
        if predicate(listed):
            return listed
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the list did not reach the expected state within {timeout} s: {listed['total']} sessions"
            )
        await asyncio.sleep(0.05)


def ids(listed: dict) -> list[str]:
    return [session["sessionId"] for session in listed["sessions"]]


async def test_restarted_pod_lists_open_sessions(stack):
    pod = await stack.start_pod()
    started = [await stack.start(tab_id=f"tab-{index}", userID=f"user-{index}") for index in range(3)]
    expected = {s["sessionID"] for s in started}
    await wait_for_list(stack, pod, lambda listed: set(ids(listed)) == expected)
    await stack.stop_pod(pod)

    restarted_at = time.monotonic()
    pod = await stack.start_pod()
    listed = await wait_for_list(stack, pod, lambda listed: set(ids(listed)) == expected, timeout=5.0)
    assert time.monotonic() - restarted_at < 5.0
    assert {s["userId"] for s in listed["sessions"]} == {"user-0", "user-1", "user-2"}


async def test_two_pods_same_list(stack):
    pods = [await stack.start_pod(), await stack.start_pod()]
    for index in range(6):
        user_agent = CHROME_UA if index % 2 else FIREFOX_UA
        await stack.start(
            tab_id=f"tab-{index}",
            userID=f"user-{index}",
            user_agent=user_agent,
            metadata={"plan": "pro" if index < 2 else "free"},
        )
    for query in ("", "browser:firefox", "meta.plan:pro", "-user:user-3"):
        first = await wait_for_list(stack, pods[0], lambda listed: listed["total"] > 0, query=query)
        await wait_for_list(stack, pods[1], lambda listed, first=first: ids(listed) == ids(first), query=query)
    listed = [await stack.list(pod) for pod in pods]
    assert listed[0]["total"] == 6
    assert listed[0]["sessions"] == listed[1]["sessions"]
    assert listed[0]["facets"] == listed[1]["facets"]


async def test_pagehide_removes_session(stack, nats_client):
    pod = await stack.start_pod()
    started = await stack.start()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    snapshot = await next_frame(ws, "list.snapshot")
    assert ids(snapshot) == [started["sessionID"]]

    closed_at = time.monotonic()
    await stack.batch(started, [custom("tandem.visibility", {"visible": False}), custom("tandem.pagehide", {})])
    removed = await next_frame(ws, "list.remove", timeout=5.0)
    assert time.monotonic() - closed_at < 5.0
    assert removed["sessionId"] == started["sessionID"]
    assert removed["reason"] == "ended"

    kv = await nats_client.jetstream().key_value(subjects.LIVE_BUCKET)
    for _ in range(50):
        try:
            await kv.get(subjects.live_key("demo", started["sessionID"]))
        except KeyNotFoundError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the closed session's entry is still in the bucket")


async def test_reload_after_pagehide_stays(stack):
    pod = await stack.start_pod(closing_grace_seconds=1.0)
    started = await stack.start()
    await stack.batch(started, [custom("tandem.pagehide", {})])
    reloaded = await stack.start(token=started["token"])
    assert reloaded["sessionID"] == started["sessionID"]
    assert reloaded["resumed"] is True
    await asyncio.sleep(2.0)  # past the closing grace period
    listed = await stack.list(pod)
    assert ids(listed) == [started["sessionID"]]
    assert listed["sessions"][0]["closingAt"] is None


async def test_batch_revives_closed_session(stack):
    """A page restored from the back-forward cache sends again after its pagehide removed the session."""
    pod = await stack.start_pod(closing_grace_seconds=0.5)
    started = await stack.start(userID="bfcache")
    await stack.batch(started, [custom("tandem.pagehide", {})])
    await wait_for_list(stack, pod, lambda listed: listed["total"] == 0)
    await asyncio.sleep(0.3)  # the entry's deletion travels through the bucket
    await stack.batch(started, [])
    listed = await wait_for_list(stack, pod, lambda listed: listed["total"] == 1)
    assert listed["sessions"][0]["userId"] == "bfcache"


async def test_hidden_tab_inactive(stack):
    pod = await stack.start_pod()
    started = await stack.start()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    await next_frame(ws, "list.snapshot")

    await stack.batch(started, [custom("tandem.visibility", {"visible": False})])
    upsert = await next_frame(ws, "list.upsert")
    assert upsert["session"]["active"] is False
    await stack.batch(started, [custom("tandem.visibility", {"visible": True})])
    upsert = await next_frame(ws, "list.upsert")
    assert upsert["session"]["active"] is True


async def test_heartbeat_pushes_nothing(stack, nats_client):
    pod = await stack.start_pod()
    started = await stack.start()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    await next_frame(ws, "list.snapshot")
    kv = await nats_client.jetstream().key_value(subjects.LIVE_BUCKET)
    key = subjects.live_key("demo", started["sessionID"])
    before = await kv.get(key)

    for _ in range(3):
        await asyncio.sleep(0.25)  # past the test's registry refresh interval, so each heartbeat writes
        await stack.batch(started, [])
    after = await kv.get(key)
    assert after.revision > before.revision
    frames = await frames_for(ws, 0.6)
    assert [frame["type"] for frame in frames if frame["type"].startswith("list.")] == []


async def test_writers_never_lose_a_change(stack, nats_client):
    """Two ingest pods with their own caches: a stale heartbeat must not overwrite a newer visibility change."""
    second = create_ingest(settings=IngestSettings(registry_refresh_seconds=0.01), nc=nats_client, signer=SIGNER)
    runner, second_url = await serve(second, "/ingest")
    stack.runners.append(runner)
    pod = await stack.start_pod()
    started = await stack.start()
    await stack.batch(started, [])  # the first pod caches the entry

    first_url, stack.ingest_url = stack.ingest_url, second_url
    await stack.batch(started, [custom("tandem.metadata", {"key": "plan", "value": "pro"})])
    await stack.batch(started, [])  # the second pod caches the entry
    stack.ingest_url = first_url
    await asyncio.sleep(0.25)
    await stack.batch(started, [custom("tandem.visibility", {"visible": False})])
    stack.ingest_url = second_url
    await stack.batch(started, [])  # a heartbeat from a pod whose copy is stale

    listed = await wait_for_list(
        stack, pod, lambda listed: listed["total"] == 1 and not listed["sessions"][0]["active"]
    )
    session = listed["sessions"][0]
    assert session["metadata"] == {"plan": "pro"}
    await asyncio.sleep(0.3)
    assert (await stack.list(pod))["sessions"][0]["active"] is False


async def test_silent_session_times_out(stack):
    pod = await stack.start_pod(live_session_timeout_seconds=1.0, inactive_session_timeout_seconds=60.0)
    active = await stack.start(tab_id="tab-active")
    hidden = await stack.start(tab_id="tab-hidden")
    await stack.batch(hidden, [custom("tandem.visibility", {"visible": False})])
    listed = await wait_for_list(stack, pod, lambda listed: ids(listed) == [hidden["sessionID"]], timeout=5.0)
    assert active["sessionID"] not in ids(listed)


async def serve_ingest(stack: Stack, nats_client, **settings) -> None:
    """Send the stack's tracker requests to a new ingest app with these settings."""
    ingest = create_ingest(settings=IngestSettings(**settings), nc=nats_client, signer=SIGNER)
    runner, stack.ingest_url = await serve(ingest, "/ingest")
    stack.runners.append(runner)


async def test_presence_keeps_listed(stack, nats_client):
    """Heartbeats that do not rewrite the entry keep the session listed through presence alone."""
    await serve_ingest(stack, nats_client, registry_refresh_seconds=60.0, presence_interval_seconds=0.1)
    pod = await stack.start_pod(live_session_timeout_seconds=1.0)
    started = await stack.start()
    await wait_for_list(stack, pod, lambda listed: listed["total"] == 1)
    kv = await nats_client.jetstream().key_value(subjects.LIVE_BUCKET)
    key = subjects.live_key("demo", started["sessionID"])
    before = await kv.get(key)

    for _ in range(8):
        await stack.batch(started, [])
        await asyncio.sleep(0.25)
        assert ids(await stack.list(pod)) == [started["sessionID"]]
    assert (await kv.get(key)).revision == before.revision
    written = orjson.loads(before.value)["lastSeenAt"]
    assert (await stack.list(pod))["sessions"][0]["lastSeenAt"] >= written + 1500
    # Without heartbeats, the session leaves after the timeout.
    await wait_for_list(stack, pod, lambda listed: listed["total"] == 0, timeout=3.0)


async def test_restart_while_heartbeating(stack, nats_client):
    """The production timings divided by 10: a pod restarted between two entry refreshes lists the session at once."""
    await serve_ingest(stack, nats_client, registry_refresh_seconds=1.5, presence_interval_seconds=0.1)
    settings = {"live_session_timeout_seconds": 3.0}
    pod = await stack.start_pod(**settings)
    started = await stack.start()

    async def heartbeats() -> None:
        while True:
            await asyncio.sleep(1.0)
            await stack.batch(started, [])

    sender = asyncio.create_task(heartbeats())
    try:
        await asyncio.sleep(3.3)  # the entry was last written at the heartbeat of 2 s, presence followed the one of 3 s
        await stack.stop_pod(pod)
        restarted_at = time.monotonic()
        pod = await stack.start_pod(**settings)
        await wait_for_list(stack, pod, lambda listed: listed["total"] == 1, timeout=0.5)
        assert time.monotonic() - restarted_at < 0.5
        for _ in range(6):  # stays listed across entry refreshes and presence
            await asyncio.sleep(0.5)
            assert ids(await stack.list(pod)) == [started["sessionID"]]
    finally:
        sender.cancel()
    await wait_for_list(stack, pod, lambda listed: listed["total"] == 0, timeout=5.0)


async def test_ready_only_with_every_entry(nats_client):
    """A new pod reports ready only once it contains every session of the bucket.

    nats-py's watcher can send its "nothing more" marker before the entries; trusting it
    made a pod ready with part of the list, and after a reconnection dropped the rest.
    """
    js = nats_client.jetstream()
    kv = await js.key_value(subjects.LIVE_BUCKET)
    now = int(time.time() * 1000)
    for index in range(200):
        session = LiveSession(
            session_id=f"s{index:03d}", project_id="demo", tab_id="tab", started_at=now, last_seen_at=now
        )
        await kv.put(subjects.live_key("demo", session.session_id), encode(session))
    short = []
    for attempt in range(150):
        registry = LiveRegistry(js=js, timeout_seconds=600)
        task = asyncio.create_task(registry.run())
        try:
            assert await registry.wait_ready(timeout=10), f"attempt {attempt}: never ready"
            if registry.count() != 200:
                short.append((attempt, registry.count()))
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert not short, f"ready with part of the list (attempt, sessions held): {short}"
