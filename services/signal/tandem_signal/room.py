"""The room's state machine: consent, calls and remote control, as pure steps on a RoomState.

Each step runs inside a `Transition`, which collects the frames to send, the
audit events to publish and whether the state changed. Steps raise ProtocolError
for a frame that makes no sense in the current state; the error quotes that
state and changes nothing, so other calls and members are not disturbed.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from tandem_protocol import ProtocolError
from tandem_protocol.signal import (
    AgentPeer,
    AssistEvent,
    Call,
    CallLeg,
    ConsentKind,
    ConsentOutcome,
    ConsentRequest,
    Control,
    RemoteEvent,
    RoomState,
)

USER = "user"
AGENTS = "agents"
ALL = "all"

AGENT_COLORS = ("#e11d48", "#2563eb", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
"""Pointer colours, picked by agent id so that one agent keeps its colour."""


def new_id() -> str:
    return secrets.token_hex(8)


def agent_color(agent_id: str) -> str:
    digest = hashlib.sha256(agent_id.encode()).digest()
    return AGENT_COLORS[digest[0] % len(AGENT_COLORS)]


@dataclass
class Transition:
    """One change of a room: the state being changed, and what to send and record once it is stored."""

    state: RoomState
    now: int
    consent_timeout_ms: int
    reconnect_grace_ms: int
    outputs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    events: list[AssistEvent] = field(default_factory=list)
    changed: bool = False

    def send(self, to: str, frame: dict[str, Any]) -> None:
        self.outputs.append((to, frame))

    def touch(self) -> None:
        self.changed = True

    def record(self, kind: str, *, agent_id: str, agent_name: str, **details: Any) -> None:
        self.events.append(
            AssistEvent(
                event_id=new_id(),
                kind=kind,
                project_id=self.state.project_id,
                session_id=self.state.session_id,
                agent_id=agent_id,
                agent_name=agent_name,
                at=self.now,
                **details,
            )
        )


# Describing the state for error messages ---------------------------------------------------


def describe_call(state: RoomState) -> str:
    if state.call is None:
        return "no call is running"
    legs = ", ".join(f"{leg.agent_name!r} ({leg.state})" for leg in state.call.legs.values()) or "no agent"
    return f"call {state.call.call_id} is running with {legs}"


def describe_control(state: RoomState) -> str:
    if state.control is not None:
        return f"{state.control.agent_name!r} controls the page"
    pending = [request for request in state.requests if request.kind == "control"]
    if pending:
        return f"{pending[0].agent_name!r} is waiting for the user to answer a control request"
    return "nobody controls the page"


def rejected(code: str, message: str, state: RoomState, *, status: int = 409) -> ProtocolError:
    return ProtocolError(
        code=code,
        message=message,
        status=status,
        details={"call": describe_call(state), "control": describe_control(state), "revision": state.revision},
    )


# Expiry ------------------------------------------------------------------------------------


def expire_overdue(t: Transition) -> None:
    """End consent requests past their deadline, and the call and control of a page that did not come back."""
    for request in [r for r in t.state.requests if r.expires_at <= t.now]:
        finish_request(t, request, "timeout")
    user = t.state.user
    if not user.connected and user.left_at is not None and t.now - user.left_at >= t.reconnect_grace_ms:
        if t.state.call is not None:
            end_call(t, reason="disconnect")
        if t.state.control is not None:
            end_control(t, reason="disconnect")


def finish_request(t: Transition, request: ConsentRequest, outcome: ConsentOutcome) -> None:
    t.state.requests = [r for r in t.state.requests if r.request_id != request.request_id]
    t.touch()
    t.record(
        "consent.answered",
        agent_id=request.agent_id,
        agent_name=request.agent_name,
        consent_kind=request.kind,
        request_id=request.request_id,
        outcome=outcome,
    )
    t.send(
        request.peer_id,
        {"type": "consent.result", "requestId": request.request_id, "kind": request.kind, "outcome": outcome},
    )


# Members -----------------------------------------------------------------------------------


def agent_join(t: Transition, peer: AgentPeer) -> None:
    t.state.agents[peer.peer_id] = peer
    t.touch()


def agent_leave(t: Transition, peer_id: str) -> None:
    """Remove an agent's socket: its requests are cancelled, its call leg and its control end."""
    peer = t.state.agents.pop(peer_id, None)
    if peer is None:
        return
    t.touch()
    for request in [r for r in t.state.requests if r.peer_id == peer_id]:
        finish_request(t, request, "cancelled")
    if t.state.call is not None and peer_id in t.state.call.legs:
        leave_call(t, peer_id, reason="disconnect")
    if t.state.control is not None and t.state.control.peer_id == peer_id:
        end_control(t, reason="disconnect")


def user_join(t: Transition, connection_id: str) -> None:
    """Record that the tracker connected; after a reload, every call leg is negotiated again for the new page."""
    user = t.state.user
    user.connection_id = connection_id
    user.connected = True
    user.left_at = None
    user.generation += 1
    if t.state.call is not None:
        for leg in t.state.call.legs.values():
            leg.state = "waiting"
            leg.generation = user.generation
    t.touch()


def user_leave(t: Transition, connection_id: str) -> None:
    """Record that the tracker's socket closed, unless a newer socket of the same page generation replaced it."""
    user = t.state.user
    if user.connection_id != connection_id:
        return
    user.connected = False
    user.left_at = t.now
    t.touch()


# Consent -----------------------------------------------------------------------------------


def request_consent(t: Transition, peer_id: str, kind: ConsentKind) -> ConsentRequest:
    state = t.state
    peer = state.agents[peer_id]
    if not state.user.connected:
        raise rejected(
            "user_offline",
            f"The {kind} request was rejected: the user's page is not connected to Assist. Wait until it is.",
            state,
        )
    if any(r.peer_id == peer_id and r.kind == kind for r in state.requests):
        raise rejected(
            "request_pending",
            f"The {kind} request was rejected: your previous {kind} request still waits for the user's answer.",
            state,
        )
    if kind == "call" and state.call is not None and peer_id in state.call.legs:
        raise rejected(
            "already_in_call",
            f"The call request was rejected: you are already in the call ({describe_call(state)}).",
            state,
        )
    if kind == "control":
        check_control_free(state, peer_id)

    request = ConsentRequest(
        request_id=new_id(),
        kind=kind,
        peer_id=peer_id,
        agent_id=peer.agent_id,
        agent_name=peer.name,
        requested_at=t.now,
        expires_at=t.now + t.consent_timeout_ms,
    )
    state.requests.append(request)
    t.touch()
    t.record(
        "consent.requested",
        agent_id=peer.agent_id,
        agent_name=peer.name,
        consent_kind=kind,
        request_id=request.request_id,
    )
    return request


def check_control_free(state: RoomState, peer_id: str) -> None:
    if state.control is not None and state.control.peer_id == peer_id:
        raise rejected("already_controlling", "The control request was rejected: you already control the page.", state)
    holder = state.control.agent_name if state.control is not None else None
    if holder is None:
        others = [r for r in state.requests if r.kind == "control" and r.peer_id != peer_id]
        holder = others[0].agent_name if others else None
    if holder is not None:
        raise rejected(
            "control_busy",
            f"Control is busy: {describe_control(state)}. Try again when they release it.",
            state,
        )


def answer_consent(t: Transition, request_id: str, accepted: bool) -> None:
    state = t.state
    request = next((r for r in state.requests if r.request_id == request_id), None)
    if request is None:
        waiting = ", ".join(f"{r.request_id} ({r.kind} from {r.agent_name!r})" for r in state.requests) or "none"
        raise rejected(
            "unknown_request",
            f"The answer was rejected: no request {request_id!r} waits for an answer (waiting: {waiting}). "
            "It may have timed out or been cancelled.",
            state,
            status=404,
        )
    finish_request(t, request, "accepted" if accepted else "declined")
    if not accepted:
        return
    if request.kind == "call":
        join_call(t, request)
    else:
        start_control(t, request)


# Calls -------------------------------------------------------------------------------------


def join_call(t: Transition, request: ConsentRequest) -> None:
    state = t.state
    if state.call is None:
        state.call = Call(call_id=new_id(), started_at=t.now)
        t.record("call.started", agent_id=request.agent_id, agent_name=request.agent_name, call_id=state.call.call_id)
    state.call.legs[request.peer_id] = CallLeg(
        peer_id=request.peer_id,
        agent_id=request.agent_id,
        agent_name=request.agent_name,
        generation=state.user.generation,
    )
    t.record("call.joined", agent_id=request.agent_id, agent_name=request.agent_name, call_id=state.call.call_id)


def require_call(t: Transition, call_id: str, what: str) -> Call:
    call = t.state.call
    if call is None or call.call_id != call_id:
        raise rejected(
            "unknown_call",
            f"The {what} was rejected: call {call_id!r} is not running ({describe_call(t.state)}).",
            t.state,
            status=404,
        )
    return call


def require_leg(t: Transition, call: Call, peer_id: str, what: str) -> CallLeg:
    leg = call.legs.get(peer_id)
    if leg is None:
        raise rejected(
            "unknown_leg",
            f"The {what} was rejected: agent peer {peer_id!r} is not in the call ({describe_call(t.state)}).",
            t.state,
            status=404,
        )
    return leg


def leave_call(t: Transition, peer_id: str, *, reason: str) -> None:
    call = t.state.call
    assert call is not None
    leg = call.legs.pop(peer_id)
    t.touch()
    t.record("call.left", agent_id=leg.agent_id, agent_name=leg.agent_name, call_id=call.call_id, reason=reason)
    if not call.legs:
        end_call(t, reason=reason, last_leg=leg)


def end_call(t: Transition, *, reason: str, last_leg: CallLeg | None = None) -> None:
    call = t.state.call
    assert call is not None
    legs = list(call.legs.values()) or ([last_leg] if last_leg else [])
    for leg in call.legs.values():
        t.record("call.left", agent_id=leg.agent_id, agent_name=leg.agent_name, call_id=call.call_id, reason=reason)
    first = legs[0] if legs else None
    t.record(
        "call.ended",
        agent_id=first.agent_id if first else "",
        agent_name=first.agent_name if first else "",
        call_id=call.call_id,
        reason=reason,
    )
    t.send(ALL, {"type": "call.ended", "callId": call.call_id, "reason": reason})
    t.state.call = None
    t.touch()


def end_call_by(t: Transition, call_id: str, *, peer_id: str | None) -> None:
    """`peer_id` is the agent hanging up, or None for the user, who ends the call for everyone."""
    call = require_call(t, call_id, "call.end")
    if peer_id is None:
        end_call(t, reason="user")
        return
    require_leg(t, call, peer_id, "call.end")
    leave_call(t, peer_id, reason="agent")


def forward_offer(t: Transition, peer_id: str, call_id: str, generation: int, sdp: str) -> None:
    call = require_call(t, call_id, "call.offer")
    leg = require_leg(t, call, peer_id, "call.offer")
    if generation != t.state.user.generation:
        raise rejected(
            "stale_offer",
            f"The call.offer was rejected: it is for page generation {generation}, but the user's page is at "
            f"generation {t.state.user.generation} (it reloaded). Build a new peer connection and offer again.",
            t.state,
        )
    leg.state = "offered"
    t.touch()
    t.send(USER, {"type": "call.offer", "callId": call_id, "peerId": peer_id, "generation": generation, "sdp": sdp})


def forward_answer(t: Transition, peer_id: str, call_id: str, sdp: str) -> None:
    call = require_call(t, call_id, "call.answer")
    leg = require_leg(t, call, peer_id, "call.answer")
    if leg.state != "offered":
        raise rejected(
            "no_offer",
            f"The call.answer was rejected: the leg of {leg.agent_name!r} in call {call_id} is in state "
            f"{leg.state!r}, not 'offered'. Answer only after receiving a call.offer.",
            t.state,
        )
    leg.state = "connected"
    t.touch()
    t.send(peer_id, {"type": "call.answer", "callId": call_id, "sdp": sdp})


def forward_candidate(t: Transition, *, from_user: bool, peer_id: str, call_id: str, candidate: Any) -> None:
    call = require_call(t, call_id, "call.ice")
    leg = require_leg(t, call, peer_id, "call.ice")
    if leg.state == "waiting":
        raise rejected(
            "no_offer",
            f"The call.ice was rejected: the leg of {leg.agent_name!r} in call {call_id} is in state 'waiting'. "
            "Send candidates only after the offer.",
            t.state,
        )
    if from_user:
        t.send(peer_id, {"type": "call.ice", "callId": call_id, "candidate": candidate})
    else:
        t.send(USER, {"type": "call.ice", "callId": call_id, "peerId": peer_id, "candidate": candidate})


def set_media(t: Transition, *, peer_id: str | None, call_id: str, audio: bool, video: bool) -> None:
    call = require_call(t, call_id, "call.media")
    if peer_id is None:
        call.user_audio, call.user_video = audio, video
    else:
        leg = require_leg(t, call, peer_id, "call.media")
        leg.audio, leg.video = audio, video
    t.touch()


# Control -----------------------------------------------------------------------------------


def start_control(t: Transition, request: ConsentRequest) -> None:
    state = t.state
    peer = state.agents.get(request.peer_id)
    color = peer.color if peer else agent_color(request.agent_id)
    state.control = Control(
        peer_id=request.peer_id,
        agent_id=request.agent_id,
        agent_name=request.agent_name,
        color=color,
        started_at=t.now,
    )
    t.record("control.started", agent_id=request.agent_id, agent_name=request.agent_name)


def end_control(t: Transition, *, reason: str) -> None:
    control = t.state.control
    assert control is not None
    t.state.control = None
    t.touch()
    t.record("control.ended", agent_id=control.agent_id, agent_name=control.agent_name, reason=reason)
    t.send(ALL, {"type": "control.ended", "agentName": control.agent_name, "reason": reason})


def release_control(t: Transition, peer_id: str) -> None:
    control = t.state.control
    if control is None or control.peer_id != peer_id:
        raise rejected(
            "control_not_granted",
            f"The control.release was rejected: you do not control the page ({describe_control(t.state)}).",
            t.state,
        )
    end_control(t, reason="agent")


def user_end_control(t: Transition) -> None:
    if t.state.control is None:
        raise rejected("control_not_granted", "The control.end was rejected: nobody controls the page.", t.state)
    end_control(t, reason="user")


def forward_control_event(t: Transition, peer_id: str, event: RemoteEvent) -> None:
    control = t.state.control
    if control is None or control.peer_id != peer_id:
        raise rejected(
            "control_not_granted",
            f"The control.event was rejected: you do not control the page ({describe_control(t.state)}). "
            "Send control.request and wait for the user to accept.",
            t.state,
            status=403,
        )
    t.send(
        USER,
        {
            "type": "control.event",
            "agentName": control.agent_name,
            "color": control.color,
            "event": event.model_dump(by_alias=True, exclude_none=True),
        },
    )


def forward_annotation(t: Transition, peer_id: str, frame: dict[str, Any]) -> None:
    state = t.state
    in_call = state.call is not None and peer_id in state.call.legs
    controls = state.control is not None and state.control.peer_id == peer_id
    if not (in_call or controls):
        raise rejected(
            "annotation_not_allowed",
            f"The {frame['type']} was rejected: draw only during your call or control "
            f"({describe_call(state)}; {describe_control(state)}).",
            state,
            status=403,
        )
    peer = state.agents[peer_id]
    t.send(USER, {**frame, "peerId": peer_id, "color": frame.get("color") or peer.color, "agentName": peer.name})
