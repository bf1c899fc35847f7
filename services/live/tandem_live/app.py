"""Routes of the live service, mounted under `/live`: the agents' WebSocket and the live list for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator
from functools import partial
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
from tandem_protocol import AgentMessage, LiveSession, ProtocolError, SnapshotPointer, decode, subjects
from tandem_runtime.access import (
    AUTHENTICATOR,
    Permission,
    check_agent_socket_origin,
    require_permission,
)
from tandem_runtime.access import authenticate as authenticate_request
from tandem_runtime.accounts import ACCOUNT_GUARD, close_disabled_socket
from tandem_runtime.http import error_middleware, json_response
from tandem_runtime.tokens import AgentClaims, TokenSigner

from tandem_live import access
from tandem_live.listing import ListingCache, ListRequest, ListResult
from tandem_live.registry import LiveRegistry, cancel_and_wait
from tandem_live.settings import LiveSettings

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", LiveSettings)
JS = web.AppKey("js", JetStreamContext)
SIGNER = web.AppKey("signer", TokenSigner)
REGISTRY = web.AppKey("registry", LiveRegistry)
LISTING = web.AppKey("listing", ListingCache)
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
LIST_COMPUTE = Histogram(
    "tandem_live_list_duration_seconds",
    "Time to filter, sort and count a project's live sessions for one list request or update.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
)


def list_result(app: web.Application, request: ListRequest, *, max_age_seconds: float = 0.0) -> ListResult:
    """Return the sessions matching `request` in its order, with facet counts, from the pod's cache when fresh.

    `max_age_seconds` accepts a cached result that older registry versions produced, up to that age.
    """
    registry = app[REGISTRY]
    project_id = request.project_id
    started = time.perf_counter()
    result = app[LISTING].get(
        request,
        index=registry.index(project_id),
        now_ms=int(time.time() * 1000),
        max_age_seconds=max_age_seconds,
    )
    LIST_COMPUTE.observe(time.perf_counter() - started)
    return result


class AgentConnection:
    """One agent's WebSocket: its list subscription, its watches and an ordered outbound queue."""

    def __init__(self, *, ws: web.WebSocketResponse, app: web.Application, claims: AgentClaims) -> None:
        self.ws = ws
        self.app = app
        self.claims = claims
        self.outbound: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=app[SETTINGS].max_outbound_frames)
        self.list_request: ListRequest | None = None
        # The page of the list this agent was last sent, and its total and facet counts.
        self.shown: dict[str, LiveSession] = {}
        self.sent_counts: tuple[int, dict] | None = None
        self.push_timer: asyncio.TimerHandle | None = None
        self.watches: dict[str, Any] = {}
        self.log = log.bind(agent_id=claims.agent_id)
        app[REGISTRY].add_listener(self.on_registry_change)

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
        """Tell the agent at once about a session it watches; update its list page after the push interval."""
        if session_id in self.watches:
            if session is None:
                self.send({"type": "session.ended", "sessionId": session_id})
            else:
                self.send({"type": "session.update", "session": session.model_dump(by_alias=True)})
        if self.list_request is not None and project_id == self.list_request.project_id:
            self.schedule_list_push()

    def schedule_list_push(self) -> None:
        if self.push_timer is None:
            interval = self.app[SETTINGS].list_push_interval_seconds
            self.push_timer = asyncio.get_running_loop().call_later(interval, self.push_list_changes)

    def push_list_changes(self) -> None:
        """Send what changed on the agent's page since the last push: removals, new or changed rows, counts."""
        self.push_timer = None
        request = self.list_request
        if request is None or self.ws.closed:
            return
        result = list_result(self.app, request, max_age_seconds=self.app[SETTINGS].list_push_interval_seconds)
        page = {session.session_id: session for session in result.page(request)}
        registry = self.app[REGISTRY]
        for session_id in self.shown.keys() - page.keys():
            reason = "filtered" if registry.find(session_id) is not None else "ended"
            self.send({"type": "list.remove", "sessionId": session_id, "reason": reason})
        for session_id, session in page.items():
            # The registry replaces a session's object when a visible field changes, so identity means unchanged.
            if self.shown.get(session_id) is not session:
                self.send({"type": "list.upsert", "session": session.model_dump(by_alias=True)})
        self.shown = page
        counts = (result.total, result.facets)
        if counts != self.sent_counts:
            self.sent_counts = counts
            self.send(
                {"type": "list.counts", "projectId": request.project_id, "total": result.total, "facets": result.facets}
            )
        # A cached result from an older version, or a query on duration, needs another look later.
        if request.compiled().time_dependent or result.version != self.app[REGISTRY].version(request.project_id):
            self.schedule_list_push()

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
        """Replace the agent's list subscription and send the first page of it."""
        settings = self.app[SETTINGS]
        fields = {**(message.model_extra or {}), "projectId": message.project_id}
        request = ListRequest.from_fields(fields, max_limit=settings.list_max_limit)
        self.require_project(request.project_id)
        await self.app[REGISTRY].wait_ready(settings.registry_ready_timeout_seconds)
        if self.push_timer is not None:
            self.push_timer.cancel()
            self.push_timer = None
        self.list_request = request
        # A result up to one push interval old is fine: the push scheduled below sends what changed since.
        result = list_result(self.app, request, max_age_seconds=settings.list_push_interval_seconds)
        page = result.page(request)
        self.shown = {session.session_id: session for session in page}
        self.sent_counts = (result.total, result.facets)
        self.send(
            {
                "type": "list.snapshot",
                **request.wire(),
                "total": result.total,
                "sessions": [session.model_dump(by_alias=True) for session in page],
                "facets": result.facets,
            }
        )
        if request.compiled().time_dependent or result.version != self.app[REGISTRY].version(request.project_id):
            self.schedule_list_push()

    async def watch(self, message: AgentMessage) -> None:
        require_permission(self.claims, Permission.WATCH, action="watch live sessions")
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
        gate = self.app[access.WATCH_GATE]
        if session_id in self.watches or gate.is_waiting(self, session_id):
            return
        await gate.watch(self, session, self.start_watch)

    async def start_watch(self, session: LiveSession) -> None:
        """Follow the session's events; the watch gate calls it once the watch may start."""
        session_id = session.session_id
        if session_id in self.watches or self.ws.closed:
            return
        self.watches[session_id] = await self.follow(session)
        WATCHES.inc()
        self.log.info("agent.watch_started", session_id=session_id, project_id=session.project_id)
        self.send({"type": "watch.started", "sessionId": session_id})
        self.send({"type": "session.update", "session": session.model_dump(by_alias=True)})
        await self.app[access.WATCH_GATE].started(self, session)

    async def follow(self, session: LiveSession):
        """Subscribe to the session's batches from its latest page snapshot on, then live, in stream order."""
        js = self.app[JS]
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        kv = await js.key_value(subjects.SNAPSHOT_BUCKET)
        with contextlib.suppress(KeyNotFoundError):
            entry = await kv.get(subjects.snapshot_key(session.session_id))
            if entry.value:
                pointer = decode(SnapshotPointer, entry.value)
                config = ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=pointer.stream_seq
                )
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
        await self.stop_watch(message.session_id or "", reason="agent")

    async def stop_watch(self, session_id: str, *, reason: str) -> None:
        """Stop a watch (or its wait for consent); `reason` is agent, consent_withdrawn or disconnected."""
        await self.app[access.WATCH_GATE].stopped(self, session_id, reason=reason)
        subscription = self.watches.pop(session_id, None)
        if subscription is not None:
            WATCHES.dec()
            await subscription.unsubscribe()
            self.log.info("agent.watch_stopped", session_id=session_id, reason=reason)
        frame = {"type": "watch.stopped", "sessionId": session_id}
        if reason != "agent":
            frame["reason"] = reason
        self.send(frame)

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
        await self.app[access.WATCH_GATE].forget(self, reason="disconnected")
        if self.push_timer is not None:
            self.push_timer.cancel()
            self.push_timer = None
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
    except TimeoutError:
        raise ProtocolError(
            code="auth_timeout", message="No auth message arrived in time. Send it first.", status=401
        ) from None
    if first.type != WSMsgType.TEXT:
        raise ProtocolError(code="auth_required", message="The first message must be a JSON auth message.", status=401)
    message = decode(AgentMessage, first.data, what="auth message")
    if message.type != "auth" or not message.token:
        raise ProtocolError(
            code="auth_required",
            message='The first message must be {"type": "auth", "token": "<agent token>"}.',
            status=401,
        )
    return await app[AUTHENTICATOR].for_socket(message.token)


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    check_agent_socket_origin(request, request.app[SETTINGS].agent_origins)
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
    unfollow = app[ACCOUNT_GUARD].follow(claims, partial(close_disabled_socket, request, ws))
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
        unfollow()
        await connection.close()
        writer.cancel()
        CONNECTIONS.dec()
        connection.log.info("agent.disconnected", close_code=ws.close_code)
    return ws


async def list_sessions(request: web.Request) -> web.Response:
    """`GET /v1/sessions?projectId=…&query=…&sort=…&order=…&limit=…&offset=…` with an agent bearer token."""
    app = request.app
    claims = await authenticate_request(request)
    fields = dict(request.query)
    if "q" in fields and "query" not in fields:
        fields["query"] = fields.pop("q")
    list_request = ListRequest.from_fields(fields, max_limit=app[SETTINGS].list_max_limit)
    if not claims.can_access(list_request.project_id):
        raise ProtocolError(
            code="forbidden",
            message=f"Agent {claims.name!r} has no access to project {list_request.project_id[:64]!r}.",
            status=403,
        )
    await app[REGISTRY].wait_ready(app[SETTINGS].registry_ready_timeout_seconds)
    result = list_result(app, list_request, max_age_seconds=app[SETTINGS].list_push_interval_seconds)
    return json_response(
        {
            "version": 1,
            **list_request.wire(),
            "total": result.total,
            "sessions": [session.model_dump(by_alias=True) for session in result.page(list_request)],
            "facets": result.facets,
        }
    )


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
    gauge_task.cancel()
    await cancel_and_wait(task)
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
    app = web.Application(middlewares=[error_middleware("live")])
    js = nc.jetstream()
    app[SETTINGS] = settings
    app[JS] = js
    app[SIGNER] = signer
    app[REGISTRY] = LiveRegistry(
        js=js,
        nc=nc,
        timeout_seconds=settings.live_session_timeout_seconds,
        inactive_timeout_seconds=settings.inactive_session_timeout_seconds,
        closing_grace_seconds=settings.closing_grace_seconds,
    )
    app[LISTING] = ListingCache()
    app[SOCKETS] = weakref.WeakSet()
    access.setup(app, settings=settings, nc=nc, signer=signer)
    app.cleanup_ctx.append(run_registry)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/ws", agent_socket)
    app.router.add_get("/v1/sessions", list_sessions)
    return app
