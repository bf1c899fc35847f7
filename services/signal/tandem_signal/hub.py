"""This pod's members of each room, and the room subjects that carry frames between pods."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import structlog
from aiohttp import WSCloseCode, web
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter
from tandem_protocol import ProtocolError, decode, encode, subjects
from tandem_protocol.signal import SignalEnvelope

from tandem_signal.room import AGENTS, ALL, USER

log = structlog.get_logger(__name__)

MAX_QUEUED_FRAMES = 2000
"""Frames waiting for one socket before it is closed as too slow."""

FRAMES_SENT = Counter("tandem_signal_frames_sent_total", "Frames sent to members of rooms, by type.", ["type"])
SLOW_MEMBERS = Counter("tandem_signal_slow_members_total", "Sockets closed because they could not keep up.")


@dataclass(eq=False)
class Member:
    """One socket in a room: the tracker (role "user") or an agent's dashboard (role "agent")."""

    ws: web.WebSocketResponse
    role: Literal["user", "agent"]
    project_id: str
    session_id: str
    peer_id: str
    outbound: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(maxsize=MAX_QUEUED_FRAMES))
    held: list[dict[str, Any]] | None = field(default_factory=list)
    """Room frames that arrived before `hello`, sent right after it; None once hello is sent."""

    def open(self, hello: dict[str, Any]) -> None:
        """Send `hello`, then the room frames that arrived while the member was joining."""
        held, self.held = self.held or [], None
        self.send(hello)
        for frame in held:
            self.send(frame)

    def deliver(self, frame: dict[str, Any]) -> None:
        if self.held is not None:
            self.held.append(frame)
        else:
            self.send(frame)

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame; a socket too slow to drain its queue is closed rather than slowing the room."""
        try:
            self.outbound.put_nowait(orjson.dumps(frame))
        except asyncio.QueueFull:
            SLOW_MEMBERS.inc()
            log.warning("member.too_slow", peer_id=self.peer_id, session_id=self.session_id)
            asyncio.get_running_loop().create_task(self.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow"))
            return
        FRAMES_SENT.labels(str(frame.get("type", ""))).inc()

    def send_error(self, error: ProtocolError, in_reply_to: str | None = None) -> None:
        frame = {"type": "error", **error.to_payload().model_dump()}
        if in_reply_to:
            frame["inReplyTo"] = in_reply_to
        self.send(frame)

    def accepts(self, to: str) -> bool:
        if to == ALL:
            return True
        if to == USER:
            return self.role == "user"
        if to == AGENTS:
            return self.role == "agent"
        return to == self.peer_id

    async def write_forever(self) -> None:
        while True:
            frame = await self.outbound.get()
            if frame is None or self.ws.closed:
                return
            await self.ws.send_str(frame.decode())

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outbound.put_nowait(None)


@dataclass
class LocalRoom:
    subscription: Subscription
    members: set[Member] = field(default_factory=set)


class RoomHub:
    """Subscribes to a room's subject while this pod has members in it, and delivers its envelopes."""

    def __init__(self, *, nc: NatsClient) -> None:
        self._nc = nc
        self._rooms: dict[tuple[str, str], LocalRoom] = {}
        self._lock = asyncio.Lock()

    async def join(self, member: Member) -> None:
        key = (member.project_id, member.session_id)
        async with self._lock:
            room = self._rooms.get(key)
            if room is None:
                subject = subjects.signal_room(*key)
                room = LocalRoom(subscription=await self._nc.subscribe(subject, cb=self._deliver))
                self._rooms[key] = room
            room.members.add(member)

    async def leave(self, member: Member) -> None:
        key = (member.project_id, member.session_id)
        async with self._lock:
            room = self._rooms.get(key)
            if room is None:
                return
            room.members.discard(member)
            if not room.members:
                del self._rooms[key]
                with contextlib.suppress(Exception):
                    await room.subscription.unsubscribe()

    async def publish(self, project_id: str, session_id: str, to: str, frame: dict[str, Any]) -> None:
        envelope = SignalEnvelope(project_id=project_id, session_id=session_id, to=to, frame=frame)
        await self._nc.publish(subjects.signal_room(project_id, session_id), encode(envelope))

    async def _deliver(self, msg: Msg) -> None:
        try:
            envelope = decode(SignalEnvelope, msg.data, what="signal envelope")
        except ProtocolError as error:
            log.warning("room.invalid_envelope", subject=msg.subject, error=error.message)
            return
        room = self._rooms.get((envelope.project_id, envelope.session_id))
        if room is None:
            return
        for member in list(room.members):
            if member.accepts(envelope.to):
                member.deliver(envelope.frame)

    def count(self, role: str) -> int:
        return sum(1 for room in self._rooms.values() for member in room.members if member.role == role)

    async def close_all(self) -> None:
        for room in list(self._rooms.values()):
            for member in list(room.members):
                await member.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
