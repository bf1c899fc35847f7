"""Routes of the signal service, mounted under `/signal`: the Assist WebSocket of agents and trackers.

Frames and their order are described in docs/PROTOCOL.md ("Assist WebSocket").
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, get_args

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import BadRequestError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError
from tandem_protocol import ProtocolError, encode, subjects
from tandem_protocol.codec import validation_error
from tandem_protocol.signal import CLIENT_FRAME, AgentPeer, AuthFrame, ConsentKind, ConsentOutcome
from tandem_runtime.accounts import ACCOUNT_GUARD, close_disabled_socket
from tandem_runtime.tokens import AgentClaims, SessionClaims, TokenSigner

from tandem_signal import access, room
from tandem_signal.frames import FrameHandler
from tandem_signal.hub import Member, RoomHub
from tandem_signal.ice import ice_servers
from tandem_signal.room import ALL, Transition
from tandem_signal.settings import SignalSettings
from tandem_signal.store import RoomStore, Step

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", SignalSettings)
SIGNER = web.AppKey("signer", TokenSigner)
JS = web.AppKey("js", JetStreamContext)
STORE = web.AppKey("store", RoomStore)
HUB = web.AppKey("hub", RoomHub)
TIMERS = web.AppKey("timers", set)

MAX_FRAME_BYTES = 512 * 1024
"""Largest frame accepted: an SDP offer with several media sections stays well under it."""

CALLS = Counter("tandem_signal_calls_total", "Calls started: a user accepted the first agent of a call.")
CONTROL_SESSIONS = Counter("tandem_signal_control_sessions_total", "Remote-control sessions a user granted.")
CONSENT = Counter(
    "tandem_signal_consent_total",
    "Consent requests with an outcome, by kind (call, control) and outcome (accepted, declined, timeout, cancelled).",
    ["kind", "outcome"],
)
# Export a zero for every kind and outcome, so that dashboards show rates before the first answer.
for _kind in get_args(ConsentKind):
    for _outcome in get_args(ConsentOutcome):
        CONSENT.labels(_kind, _outcome)
CONNECTIONS = Gauge("tandem_signal_connections", "Assist sockets open on this pod, by role.", ["role"])
REJECTED = Counter(
    "tandem_signal_frames_rejected_total", "Frames rejected with an error frame, by error code.", ["code"]
)


class Room:
    """A socket's view of its room: applies steps to it and sends the results to its members."""

    def __init__(self, app: web.Application, member: Member) -> None:
        self.app = app
        self.member = member

    @property
    def settings(self) -> SignalSettings:
        return self.app[SETTINGS]

    async def apply(self, step: Step) -> Transition:
        """Apply `step`, then send its frames and publish its audit events. ProtocolError passes through."""
        try:
            transition = await self.app[STORE].apply(self.member.project_id, self.member.session_id, step)
        except ProtocolError as error:
            expired = getattr(error, "transition", None)
            if expired is not None:
                await publish_results(self.app, expired)
            raise
        await publish_results(self.app, transition)
        return transition

    def schedule_check(self, delay_seconds: float) -> None:
        """Run the room's expiry after `delay_seconds` (a consent deadline or the reload grace)."""
        project_id, session_id = self.member.project_id, self.member.session_id
        schedule_expiry(self.app, project_id, session_id, delay_seconds)


async def publish_results(app: web.Application, transition: Transition) -> None:
    state = transition.state
    hub = app[HUB]
    for to, frame in transition.outputs:
        await hub.publish(state.project_id, state.session_id, to, frame)
    if transition.changed:
        await hub.publish(state.project_id, state.session_id, ALL, {"type": "room.state", "state": state.public()})
    for event in transition.events:
        count_event(event.kind, event.consent_kind, event.outcome)
        try:
            await app[JS].publish(subjects.assist_event(state.project_id, event.kind), encode(event))
        except Exception as exc:
            log.error("assist_event.publish_failed", kind=event.kind, session_id=state.session_id, error=str(exc))


def count_event(kind: str, consent_kind: str | None, outcome: str | None) -> None:
    if kind == "consent.answered" and consent_kind and outcome:
        CONSENT.labels(consent_kind, outcome).inc()
    elif kind == "call.started":
        CALLS.inc()
    elif kind == "control.started":
        CONTROL_SESSIONS.inc()


def schedule_expiry(app: web.Application, project_id: str, session_id: str, delay_seconds: float) -> None:
    # NOTE: the timer lives on the pod that took the request. If that pod stops, the
    # expiry happens only with the room's next frame, which runs `expire_overdue` first.
    async def check() -> None:
        await asyncio.sleep(delay_seconds + 0.05)
        try:
            transition = await app[STORE].apply(project_id, session_id, lambda _: None)
            await publish_results(app, transition)
        except Exception as exc:
            log.error("room.expiry_failed", session_id=session_id, error=str(exc))

    task = asyncio.get_running_loop().create_task(check())
    app[TIMERS].add(task)
    task.add_done_callback(app[TIMERS].discard)


# The socket --------------------------------------------------------------------------------


async def authenticate(
    ws: web.WebSocketResponse, app: web.Application
) -> tuple[Member, AgentPeer | None, str, AgentClaims | None]:
    """Read the auth frame; return the member, the agent (None for the tracker), its role and its token claims."""
    try:
        first = await ws.receive(timeout=app[SETTINGS].auth_timeout_seconds)
    except TimeoutError:
        raise ProtocolError(
            code="auth_timeout", message="No auth frame arrived in time. Send it first.", status=401
        ) from None
    if first.type != WSMsgType.TEXT:
        raise ProtocolError(code="auth_required", message="The first frame must be a JSON auth frame.", status=401)
    try:
        frame = AuthFrame.model_validate_json(first.data)
    except ValidationError:
        raise ProtocolError(
            code="auth_required",
            message='The first frame must be {"type": "auth", "token": ..., "projectId": ..., "sessionId": ...}.',
            status=401,
        ) from None

    signer = app[SIGNER]
    peer_id = secrets.token_hex(8)
    try:
        claims = signer.verify_agent(frame.token)
    except ProtocolError as agent_error:
        try:
            session = signer.verify_session(frame.token)
        except ProtocolError:
            raise agent_error from None
        return tracker_member(ws, session, frame, peer_id), None, "user", None
    await app[ACCOUNT_GUARD].require_active(claims)
    return *agent_member(ws, claims, frame, peer_id), claims


def tracker_member(ws: web.WebSocketResponse, claims: SessionClaims, frame: AuthFrame, peer_id: str) -> Member:
    """Return the tracker's member in its own session's room. Naming another room is forbidden."""
    names_other_room = (frame.project_id is not None and frame.project_id != claims.project_id) or (
        frame.session_id is not None and frame.session_id != claims.session_id
    )
    if names_other_room:
        raise ProtocolError(
            code="forbidden",
            message="A session token may only join its own session's room: send the auth frame without "
            "projectId and sessionId.",
            status=403,
        )
    return Member(ws=ws, role="user", project_id=claims.project_id, session_id=claims.session_id, peer_id=peer_id)


def agent_member(
    ws: web.WebSocketResponse, claims: AgentClaims, frame: AuthFrame, peer_id: str
) -> tuple[Member, AgentPeer, str]:
    if frame.project_id is None or frame.session_id is None:
        raise ProtocolError(
            code="invalid_request",
            message="An agent's auth frame needs projectId and sessionId: name the session to assist.",
        )
    if not claims.can_access(frame.project_id):
        raise ProtocolError(
            code="forbidden",
            message=f"Agent {claims.name!r} has no access to project {frame.project_id!r}.",
            status=403,
        )
    member = Member(ws=ws, role="agent", project_id=frame.project_id, session_id=frame.session_id, peer_id=peer_id)
    color = room.agent_color(claims.agent_id)
    peer = AgentPeer(peer_id=peer_id, agent_id=claims.agent_id, name=claims.name, color=color)
    return member, peer, claims.role


async def assist_socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    app = request.app
    try:
        member, peer, role, claims = await authenticate(ws, app)
        await access.check_origin(
            request, project_id=member.project_id, is_tracker=peer is None, agent_origins=app[SETTINGS].agent_origins
        )
    except ProtocolError as error:
        await ws.send_json({"type": "error", **error.to_payload().model_dump()})
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=error.code.encode())
        return ws

    bound = log.bind(
        session_id=member.session_id, project_id=member.project_id, peer_id=member.peer_id, role=member.role
    )
    if peer is not None:
        bound = bound.bind(agent_id=peer.agent_id)
    unfollow = None
    if claims is not None:
        unfollow = app[ACCOUNT_GUARD].follow(claims, partial(close_disabled_socket, request, ws))
    writer = asyncio.create_task(member.write_forever())
    hub = app[HUB]
    await hub.join(member)
    CONNECTIONS.labels(member.role).inc()
    current = Room(app, member)
    try:
        await welcome(current, peer)
        bound.info("member.joined")
        await read_frames(current, FrameHandler(current, peer=peer, agent_role=role), bound)
    finally:
        if unfollow is not None:
            unfollow()
        await farewell(current, peer, bound)
        await hub.leave(member)
        CONNECTIONS.labels(member.role).dec()
        member.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(writer, timeout=1.0)
        bound.info("member.left", close_code=ws.close_code)
    return ws


async def welcome(current: Room, peer: AgentPeer | None) -> None:
    """Add the member to the room and send `hello` with its peer id, ICE servers and the room's state."""
    member = current.member
    if peer is None:
        transition = await current.app[STORE].apply(
            member.project_id, member.session_id, lambda t: room.user_join(t, member.peer_id)
        )
    else:
        transition = await current.app[STORE].apply(
            member.project_id, member.session_id, lambda t: room.agent_join(t, peer)
        )
    servers = ice_servers(current.app[SETTINGS], peer_id=member.peer_id, now_seconds=int(time.time()))
    member.open(
        {
            "type": "hello",
            "role": member.role,
            "peerId": member.peer_id,
            "iceServers": [server.model_dump(by_alias=True, exclude_none=True) for server in servers],
            "consentTimeoutMs": int(current.app[SETTINGS].consent_timeout_seconds * 1000),
            "state": transition.state.public(),
            "serverTime": int(time.time() * 1000),
        }
    )
    await publish_results(current.app, transition)


async def farewell(current: Room, peer: AgentPeer | None, bound: Any) -> None:
    member = current.member
    try:
        if peer is None:
            await current.apply(lambda t: room.user_leave(t, member.peer_id))
            current.schedule_check(current.app[SETTINGS].reconnect_grace_seconds)
        else:
            await current.apply(lambda t: room.agent_leave(t, member.peer_id))
    except Exception as exc:
        bound.error("member.leave_failed", error=str(exc))


async def read_frames(current: Room, handler: FrameHandler, bound: Any) -> None:
    member = current.member
    async for message in member.ws:
        if message.type != WSMsgType.TEXT:
            continue
        frame_type = None
        try:
            frame = CLIENT_FRAME.validate_json(message.data)
            frame_type = frame.type
            await handler.handle(frame)
        except ValidationError as exc:
            error = validation_error(exc, "frame")
            REJECTED.labels(error.code).inc()
            member.send_error(error)
        except ProtocolError as error:
            REJECTED.labels(error.code).inc()
            bound.info("frame.rejected", frame_type=frame_type, code=error.code)
            member.send_error(error, in_reply_to=frame_type)


# The application ---------------------------------------------------------------------------


async def open_store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    await app[STORE].open(ttl_seconds=settings.room_ttl_seconds, replicas=settings.stream_replicas)
    config = StreamConfig(
        name=subjects.ASSIST_STREAM,
        subjects=[subjects.assist_events()],
        storage=StorageType.FILE,
        max_age=settings.assist_events_max_age_seconds,
        num_replicas=settings.stream_replicas,
    )
    try:
        await app[JS].add_stream(config)
    except BadRequestError:
        await app[JS].update_stream(config)
    yield
    for task in list(app[TIMERS]):
        task.cancel()


async def close_sockets(app: web.Application) -> None:
    await app[HUB].close_all()


def create_app(*, settings: SignalSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the signal application; mount it under `/signal`."""
    app = web.Application()
    js = nc.jetstream()
    app[SETTINGS] = settings
    app[SIGNER] = signer
    app[JS] = js
    app[STORE] = RoomStore(
        js=js,
        consent_timeout_seconds=settings.consent_timeout_seconds,
        reconnect_grace_seconds=settings.reconnect_grace_seconds,
    )
    app[HUB] = RoomHub(nc=nc)
    app[TIMERS] = set()
    access.setup(app, js=js)
    app.cleanup_ctx.append(open_store)
    app.on_shutdown.append(close_sockets)
    app.router.add_get("/v1/ws", assist_socket)
    return app
