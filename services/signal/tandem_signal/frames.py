"""What each client frame does, for the tracker (role "user") and for agents."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tandem_protocol import ProtocolError
from tandem_protocol.signal import (
    AgentPeer,
    AnnotateClearFrame,
    AnnotateDrawFrame,
    AuthFrame,
    CallAnswerFrame,
    CallEndFrame,
    CallIceFrame,
    CallMediaFrame,
    CallOfferFrame,
    CallRequestFrame,
    ConsentAnswerFrame,
    ControlEndFrame,
    ControlEventFrame,
    ControlReleaseFrame,
    ControlRequestFrame,
    PingFrame,
)

from tandem_signal import room

if TYPE_CHECKING:
    from tandem_signal.app import Room

USER_FRAMES = {"consent.answer", "call.answer", "call.ice", "call.end", "call.media", "control.end", "ping"}
AGENT_FRAMES = {
    "call.request",
    "call.end",
    "call.offer",
    "call.ice",
    "call.media",
    "control.request",
    "control.release",
    "control.event",
    "annotate.draw",
    "annotate.clear",
    "ping",
}
ASSISTING_ROLES = {"admin", "agent"}
"""Agent roles that may call and control; a viewer only watches."""


class FrameHandler:
    """Checks that the sender's role may send a frame, then applies it to the room."""

    def __init__(self, current: Room, *, peer: AgentPeer | None, agent_role: str) -> None:
        self.room = current
        self.peer = peer
        self.agent_role = agent_role

    @property
    def peer_id(self) -> str:
        return self.room.member.peer_id

    async def handle(self, frame: Any) -> None:
        self.check_allowed(frame.type)
        match frame:
            case PingFrame():
                self.room.member.send({"type": "pong", "serverTime": int(time.time() * 1000)})
            case AuthFrame():
                raise ProtocolError(code="already_authenticated", message="The socket is already authenticated.")
            case CallRequestFrame():
                await self.request_consent("call")
            case ControlRequestFrame():
                await self.request_consent("control")
            case ConsentAnswerFrame(request_id=request_id, accepted=accepted):
                await self.room.apply(lambda t: room.answer_consent(t, request_id, accepted))
            case CallOfferFrame():
                await self.room.apply(
                    lambda t: room.forward_offer(t, self.peer_id, frame.call_id, frame.generation, frame.sdp)
                )
            case CallAnswerFrame():
                await self.room.apply(lambda t: room.forward_answer(t, frame.peer_id, frame.call_id, frame.sdp))
            case CallIceFrame():
                await self.forward_candidate(frame)
            case CallMediaFrame():
                sender = None if self.peer is None else self.peer_id
                await self.room.apply(
                    lambda t: room.set_media(
                        t, peer_id=sender, call_id=frame.call_id, audio=frame.audio, video=frame.video
                    )
                )
            case CallEndFrame():
                sender = None if self.peer is None else self.peer_id
                await self.room.apply(lambda t: room.end_call_by(t, frame.call_id, peer_id=sender))
            case ControlReleaseFrame():
                await self.room.apply(lambda t: room.release_control(t, self.peer_id))
            case ControlEndFrame():
                await self.room.apply(room.user_end_control)
            case ControlEventFrame():
                await self.room.apply(lambda t: room.forward_control_event(t, self.peer_id, frame.event))
            case AnnotateDrawFrame() | AnnotateClearFrame():
                document = frame.model_dump(by_alias=True, exclude_none=True)
                await self.room.apply(lambda t: room.forward_annotation(t, self.peer_id, document))

    def check_allowed(self, frame_type: str) -> None:
        if self.peer is None:
            if frame_type not in USER_FRAMES:
                raise ProtocolError(
                    code="forbidden",
                    message=f"The tracker may not send {frame_type!r}: it sends {', '.join(sorted(USER_FRAMES))}.",
                    status=403,
                )
            return
        if frame_type not in AGENT_FRAMES:
            raise ProtocolError(
                code="forbidden",
                message=f"An agent may not send {frame_type!r}: it sends {', '.join(sorted(AGENT_FRAMES))}.",
                status=403,
            )
        if frame_type != "ping" and self.agent_role not in ASSISTING_ROLES:
            raise ProtocolError(
                code="forbidden",
                message=f"Agent {self.peer.name!r} has the role {self.agent_role!r}, which may only watch: "
                "calls, control and drawing need the role agent or admin.",
                status=403,
            )

    async def request_consent(self, kind: room.ConsentKind) -> None:
        await self.room.apply(lambda t: room.request_consent(t, self.peer_id, kind))
        self.room.schedule_check(self.room.settings.consent_timeout_seconds)

    async def forward_candidate(self, frame: CallIceFrame) -> None:
        candidate = frame.candidate.model_dump(by_alias=True) if frame.candidate is not None else None
        if self.peer is None:
            if frame.peer_id is None:
                raise ProtocolError(
                    code="invalid_request", message="The tracker's call.ice needs peerId: add the agent's peer id."
                )
            leg = frame.peer_id
            await self.room.apply(
                lambda t: room.forward_candidate(
                    t, from_user=True, peer_id=leg, call_id=frame.call_id, candidate=candidate
                )
            )
        else:
            await self.room.apply(
                lambda t: room.forward_candidate(
                    t, from_user=False, peer_id=self.peer_id, call_id=frame.call_id, candidate=candidate
                )
            )
