"""Signalling for Assist: the frames of `/signal/v1/ws`, the room state and the typed assist events.

Agents and the tracker each hold one WebSocket per room (one session and tab).
The room state is stored in a key-value bucket, so that every signal pod reads
the same consent, call and control state. Frames between the room's members
travel on `subjects.signal_room` as `SignalEnvelope`s. Every consent request and
answer, call and control start and end is published as an `AssistEvent` on
`subjects.assist_event`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, TypeAdapter

from tandem_protocol.models import Identifier, VersionedModel, WireModel

SIGNAL_VERSION = 1

Sdp = Annotated[str, StringConstraints(min_length=1, max_length=200_000)]
PeerId = Identifier
ConsentKind = Literal["call", "control"]
ConsentOutcome = Literal["accepted", "declined", "timeout", "cancelled"]
LegState = Literal["waiting", "offered", "connected"]


class IceServer(WireModel):
    """One entry of RTCConfiguration.iceServers: STUN, or TURN with coturn REST credentials."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class IceCandidate(WireModel):
    """An RTCIceCandidateInit as the browser serialises it. An empty `candidate` is the end of candidates."""

    candidate: Annotated[str, StringConstraints(max_length=2048)]
    sdp_mid: str | None = None
    sdp_m_line_index: int | None = None
    username_fragment: str | None = None


# Room state ------------------------------------------------------------------------------


class AgentPeer(WireModel):
    """An agent's socket in a room. One agent may have several, one per dashboard tab."""

    peer_id: PeerId
    agent_id: str
    name: str
    color: str


class UserPresence(WireModel):
    """The tracker's socket. `generation` grows each time the page connects again (a reload)."""

    connection_id: str | None = None
    connected: bool = False
    left_at: int | None = None
    generation: int = 0


class ConsentRequest(WireModel):
    """A call or control request waiting for the user's answer until `expires_at` (ms since the epoch)."""

    request_id: Identifier
    kind: ConsentKind
    peer_id: PeerId
    agent_id: str
    agent_name: str
    requested_at: int
    expires_at: int


class CallLeg(WireModel):
    """The peer connection between one agent and the user. The agent offers, the user answers.

    `generation` is the user's page generation the leg was negotiated for: after a
    reload the user has no peer connection left, so the agent builds a new one.
    """

    peer_id: PeerId
    agent_id: str
    agent_name: str
    state: LegState = "waiting"
    generation: int = 0
    audio: bool = True
    video: bool = True


class Call(WireModel):
    call_id: Identifier
    started_at: int
    legs: dict[str, CallLeg] = Field(default_factory=dict)
    user_audio: bool = True
    user_video: bool = True


class Control(WireModel):
    """The agent that controls the user's page."""

    peer_id: PeerId
    agent_id: str
    agent_name: str
    color: str
    started_at: int


class RoomState(VersionedModel):
    """One room, as stored in `subjects.SIGNAL_BUCKET` and sent to its members in `room.state` frames.

    `revision` grows with each change, so that a member can drop a snapshot older than one it has.
    """

    project_id: str
    session_id: str
    user: UserPresence = Field(default_factory=UserPresence)
    agents: dict[str, AgentPeer] = Field(default_factory=dict)
    requests: list[ConsentRequest] = Field(default_factory=list)
    call: Call | None = None
    control: Control | None = None
    revision: int = 0
    updated_at: int = 0

    def public(self) -> dict[str, Any]:
        """Return the state as members receive it: without the tracker's connection id."""
        document = self.model_dump(by_alias=True)
        document["user"].pop("connectionId", None)
        return document


# Client frames ---------------------------------------------------------------------------


class AuthFrame(WireModel):
    """First frame of a socket. Agents name the room; the tracker's session token names it."""

    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    project_id: Identifier | None = None
    session_id: Identifier | None = None


class CallRequestFrame(WireModel):
    type: Literal["call.request"]


class CallEndFrame(WireModel):
    type: Literal["call.end"]
    call_id: Identifier


class CallOfferFrame(WireModel):
    """Agent to user. `generation` is the user's page generation the offer is for."""

    type: Literal["call.offer"]
    call_id: Identifier
    generation: int
    sdp: Sdp


class CallAnswerFrame(WireModel):
    """User to agent: `peer_id` names the agent's leg."""

    type: Literal["call.answer"]
    call_id: Identifier
    peer_id: PeerId
    sdp: Sdp


class CallIceFrame(WireModel):
    """A trickled candidate, or None for the end of candidates. The user names the leg with `peer_id`."""

    type: Literal["call.ice"]
    call_id: Identifier
    peer_id: PeerId | None = None
    candidate: IceCandidate | None = None


class CallMediaFrame(WireModel):
    """The sender's microphone and camera are on (True) or off."""

    type: Literal["call.media"]
    call_id: Identifier
    audio: bool
    video: bool


class ConsentAnswerFrame(WireModel):
    type: Literal["consent.answer"]
    request_id: Identifier
    accepted: bool


class ControlRequestFrame(WireModel):
    type: Literal["control.request"]


class ControlReleaseFrame(WireModel):
    """The agent gives control back."""

    type: Literal["control.release"]


class ControlEndFrame(WireModel):
    """The user takes control back (the button or Esc)."""

    type: Literal["control.end"]


class RemoteEvent(WireModel):
    """One input of the controlling agent, in the user's page coordinates (CSS pixels of its viewport).

    `node_id` is the rrweb id of the target element; `rx` and `ry` place the point
    inside its box as fractions of its width and height. The tracker uses them
    when it finds the node, and `x` and `y` otherwise.
    """

    kind: Literal["move", "click", "scroll", "input", "select"]
    x: float = 0
    y: float = 0
    node_id: int | None = None
    rx: float | None = None
    ry: float | None = None
    dx: float = 0
    dy: float = 0
    value: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    index: int | None = None
    sent_at: int | None = None


class ControlEventFrame(WireModel):
    type: Literal["control.event"]
    event: RemoteEvent


class AnnotateDrawFrame(WireModel):
    """A stroke in the user's page coordinates."""

    type: Literal["annotate.draw"]
    points: Annotated[list[tuple[float, float]], Field(min_length=1, max_length=2000)]
    color: Annotated[str, StringConstraints(max_length=32)] | None = None


class AnnotateClearFrame(WireModel):
    type: Literal["annotate.clear"]


class PingFrame(WireModel):
    type: Literal["ping"]


ClientFrame = Annotated[
    AuthFrame
    | CallRequestFrame
    | CallEndFrame
    | CallOfferFrame
    | CallAnswerFrame
    | CallIceFrame
    | CallMediaFrame
    | ConsentAnswerFrame
    | ControlRequestFrame
    | ControlReleaseFrame
    | ControlEndFrame
    | ControlEventFrame
    | AnnotateDrawFrame
    | AnnotateClearFrame
    | PingFrame,
    Field(discriminator="type"),
]
CLIENT_FRAME = TypeAdapter(ClientFrame)
"""Validates any client frame by its `type`."""


# Bus ---------------------------------------------------------------------------------------


class SignalEnvelope(VersionedModel):
    """A frame for some members of a room, published on `subjects.signal_room`.

    `to` is "user", "agents" (every agent), "all", or one agent's peer id.
    """

    project_id: str
    session_id: str
    to: str
    frame: dict[str, Any]


AssistEventKind = Literal[
    "consent.requested",
    "consent.answered",
    "call.started",
    "call.joined",
    "call.left",
    "call.ended",
    "control.started",
    "control.ended",
    "watch.started",
    "watch.stopped",
]


class AssistEvent(VersionedModel):
    """An audit record, published on `subjects.assist_event(project_id, kind)`.

    `outcome` is set on `consent.answered` (accepted, declined, timeout, cancelled);
    `reason` says who or what ended a call or control (user, agent, disconnect).
    """

    event_id: Identifier
    kind: AssistEventKind
    project_id: str
    session_id: str
    agent_id: str
    agent_name: str
    consent_kind: ConsentKind | Literal["watch"] | None = None
    request_id: str | None = None
    call_id: str | None = None
    outcome: ConsentOutcome | None = None
    reason: str | None = None
    at: int
    watch_id: str | None = None
    """Set on `watch.started` and `watch.stopped`, which the live service publishes."""
    duration_ms: int | None = None
    """Set on `watch.stopped`: time since the matching `watch.started`."""
