"""Routes of the live service, mounted under `/live`: the agents' WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from tandem_protocol import AgentMessage, LiveSession, ProtocolError, SnapshotPointer, decode, encode, subjects
from tandem_runtime.tokens import AgentClaims, TokenSigner

from tandem_live.registry import LiveRegistry
from tandem_live.settings import LiveSettings

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", LiveSettings)
JS = web.AppKey("js", JetStreamContext)
SIGNER = web.AppKey("signer", TokenSigner)
REGISTRY = web.AppKey("registry", LiveRegistry)
SOCKETS = web.AppKey("sockets", weakref.WeakSet)

CONNECTIONS = Gauge("tandem_live_connections", "Agent WebSockets open on this pod.")
WATCHES = Gauge("tandem_live_watches", "Session watches open on this pod (one per agent and session).")
LIVE_SESSIONS = Gauge("tandem_live_sessions", "Live sessions in this pod's registry mirror.")
FRAMES = Counter("tandem_live_frames_sent_total", "Frames sent to agents, by type.", ["type"])
FANOUT_LAG = Histogram(
    "tandem_live_fanout_lag_seconds",
    "Time from the ingest service receiving a batch to its frame being queued for an agent.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SLOW_AGENTS = Counter("tandem_live_slow_agents_total", "Agent sockets closed because they could not keep up.")


class AgentConnection:
    """One agent's WebSocket: its list subscription, its watches and an ordered outbound queue."""

    def __init__(self, *, ws: web.WebSocketResponse, app: web.Application, claims: AgentClaims) -> None:
        self.ws = ws
        self.app = app
        self.claims = claims
        self.outbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=app[SETTINGS].max_outbound_frames)
        self.list_project: str | None = None
        self.watches: dict[str, Any] = {}
        self.log = log.bind(agent_id=claims.agent_id)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; an agent too slow to drain its queue is disconnected rather than slowing others."""
        try:
            self.outbound.put_nowait(orjson.dumps(frame))
        except asyncio.QueueFull:
            SLOW_AGENTS.inc()
            self.log.warning("agent.too_slow", queued=self.outbound.qsize())
            asyncio.get_running_loop().create_task(
                self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"agent socket too slow")
            )
            return
        FRAMES.labels(frame["type"]).inc()

    async def write_forever(self) -> None:
        while True:
            frame = await self.outbound.get()
            if frame is None or self.ws.closed:
                return
            await self.ws.send_str(frame.decode())

    def on_registry_change(self, project_id: str, session: LiveSession | None, session_id: str) -> None:
        if project_id != self.list_project:
            return
        if session is None:
            self.send({"type": "list.remove", "sessionId": session_id})
        else:
            self.send({"type": "list.upsert", "session": session.model_dump(by_alias=True)})

    async def handle(self, message: AgentMessage) -> None:
        if message.type == "list.subscribe":
            await self.subscribe_list(message)
        elif message.type == "watch":
            await self.watch(message)
        elif message.type == "unwatch":
            await self.unwatch(message)
        elif message.type == "ping":
            self.send({"type": "pong", "serverTime": int(time.time() * 1000)})
        else:
            raise ProtocolError(
                code="unknown_message",
                message=f"Unknown message type {message.type!r}: use list.subscribe, watch, unwatch or ping.",
            )

    async def subscribe_list(self, message: AgentMessage) -> None:
        project_id = self.require_project(message.project_id)
        registry = self.app[REGISTRY]
        self.list_project = project_id
        registry.add_listener(self.on_registry_change)
        sessions = [s.model_dump(by_alias=True) for s in registry.sessions(project_id)]
        self.send({"type": "list.snapshot", "projectId": project_id, "sessions": sessions})

    async def watch(self, message: AgentMessage) -> None:
        session_id = message.session_id
        if not session_id:
            raise ProtocolError(code="invalid_request", message="The watch message has no sessionId: add it.")
        session = self.app[REGISTRY].find(session_id)
        if session is None:
            raise ProtocolError(
                code="session_not_found",
                message=f"No live session {session_id[:64]!r}: it ended or never existed. Refresh the list.",
                status=404,
            )
        self.require_project(session.project_id)
        if session_id in self.watches:
            return
        self.watches[session_id] = await self.follow(session)
        WATCHES.inc()
        self.log.info("agent.watch_started", session_id=session_id, project_id=session.project_id)
        self.send({"type": "watch.started", "sessionId": session_id})

    async def follow(self, session: LiveSession):
        """Subscribe to the session's batches from its latest page snapshot on, then live, in stream order."""
        js = self.app[JS]
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        kv = await js.key_value(subjects.SNAPSHOT_BUCKET)
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(subjects.snapshot_key(session.session_id))
            if entry.value:
                pointer = decode(SnapshotPointer, entry.value)
                config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=pointer.stream_seq)
        session_id = session.session_id

        async def deliver(msg: Msg) -> None:
            batch = orjson.loads(msg.data)
            FANOUT_LAG.observe(max(0.0, time.time() - batch["receivedAt"] / 1000))
            self.send({"type": "events", "sessionId": session_id, "seq": batch["seq"], "events": batch["events"]})

        return await js.subscribe(
            subjects.events_of_session(session_id),
            cb=deliver,
            ordered_consumer=True,
            config=config,
        )

    async def unwatch(self, message: AgentMessage) -> None:
        session_id = message.session_id or ""
        subscription = self.watches.pop(session_id, None)
        if subscription is not None:
            WATCHES.dec()
            await subscription.unsubscribe()
            self.log.info("agent.watch_stopped", session_id=session_id)
        self.send({"type": "watch.stopped", "sessionId": session_id})

    def require_project(self, project_id: str | None) -> str:
        if not project_id:
            raise ProtocolError(code="invalid_request", message="The message has no projectId: add it.")
        if not self.claims.can_access(project_id):
            raise ProtocolError(
                code="forbidden",
                message=f"Agent {self.claims.name!r} has no access to project {project_id[:64]!r}.",
                status=403,
            )
        return project_id

    async def close(self) -> None:
        self.app[REGISTRY].remove_listener(self.on_registry_change)
        for session_id, subscription in list(self.watches.items()):
            WATCHES.dec()
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
            self.log.info("agent.watch_stopped", session_id=session_id)
        self.watches.clear()
        with contextlib.suppress(asyncio.QueueFull):
            self.outbound.put_nowait(None)


async def authenticate(ws: web.WebSocketResponse, app: web.Application) -> AgentClaims:
    """Wait for the first frame, which must be `{"type": "auth", "token": ...}` with a valid agent token."""
    try:
        first = await ws.receive(timeout=app[SETTINGS].auth_timeout_seconds)
    except asyncio.TimeoutError:
        raise ProtocolError(code="auth_timeout", message="No auth message arrived in time. Send it first.", status=401) from None
    if first.type != WSMsgType.TEXT:
        raise ProtocolError(code="auth_required", message="The first message must be a JSON auth message.", status=401)
    message = decode(AgentMessage, first.data, what="auth message")
    if message.type != "auth" or not message.token:
        raise ProtocolError(
            code="auth_required",
            message='The first message must be {"type": "auth", "token": "<agent token>"}.',
            status=401,
        )
    return app[SIGNER].verify_agent(message.token)


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    app = request.app
    try:
        claims = await authenticate(ws, app)
    except ProtocolError as error:
        await ws.send_str(error_frame(error))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=error.code.encode())
        return ws

    connection = AgentConnection(ws=ws, app=app, claims=claims)
    app[SOCKETS].add(ws)
    CONNECTIONS.inc()
    writer = asyncio.create_task(connection.write_forever())
    connection.send({"type": "hello", "agentId": claims.agent_id, "serverTime": int(time.time() * 1000)})
    connection.log.info("agent.connected")
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                await connection.handle(decode(AgentMessage, frame.data, what="message"))
            except ProtocolError as error:
                connection.send(orjson.loads(error_frame(error)))
            except ValidationError as exc:
                connection.send({"type": "error", "code": "invalid_request", "message": str(exc)})
    finally:
        await connection.close()
        writer.cancel()
        CONNECTIONS.dec()
        connection.log.info("agent.disconnected", close_code=ws.close_code)
    return ws


def error_frame(error: ProtocolError) -> str:
    payload = error.to_payload()
    return orjson.dumps({"type": "error", **payload.model_dump()}).decode()


async def run_registry(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    task = asyncio.create_task(registry.run())

    async def publish_gauge() -> None:
        while True:
            LIVE_SESSIONS.set(registry.count())
            await asyncio.sleep(5)

    gauge_task = asyncio.create_task(publish_gauge())
    yield
    task.cancel()
    gauge_task.cancel()
    await asyncio.gather(task, gauge_task, return_exceptions=True)


async def close_sockets(app: web.Application) -> None:
    """Close every agent socket with 1001 (going away) at once: each close waits up to 10 s for the agent's reply."""
    sockets = list(app[SOCKETS])
    log.info("agents.closing", sockets=len(sockets))
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down") for ws in sockets),
        return_exceptions=True,
    )


def create_app(*, settings: LiveSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the live application; mount it under `/live`."""
    app = web.Application()
    js = nc.jetstream()
    app[SETTINGS] = settings
    app[JS] = js
    app[SIGNER] = signer
    app[REGISTRY] = LiveRegistry(js=js, timeout_seconds=settings.live_session_timeout_seconds)
    app[SOCKETS] = weakref.WeakSet()
    app.cleanup_ctx.append(run_registry)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/ws", agent_socket)
    return app
