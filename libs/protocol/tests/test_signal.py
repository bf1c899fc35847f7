"""The signalling models against golden payloads, and the client frames' validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from tandem_protocol import decode, encode, subjects
from tandem_protocol.signal import CLIENT_FRAME, AssistEvent, CallIceFrame, ControlEventFrame, RoomState, SignalEnvelope

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize(
    ("name", "model"),
    [
        ("signal_room_state.json", RoomState),
        ("signal_envelope.json", SignalEnvelope),
        ("assist_event.json", AssistEvent),
    ],
)
def test_signal_golden_round_trip(name, model):
    text = (GOLDEN / name).read_text()
    parsed = decode(model, text)
    assert parsed.version == 1
    assert json.loads(encode(parsed)) == json.loads(text)


def test_room_public_hides_connection():
    state = decode(RoomState, (GOLDEN / "signal_room_state.json").read_text())
    public = state.public()
    assert "connectionId" not in public["user"]
    assert public["user"]["generation"] == 2
    assert public["call"]["legs"]["a1b2c3d4e5f60718"]["state"] == "connected"


def test_client_frame_by_type():
    frame = CLIENT_FRAME.validate_json(
        '{"type": "call.ice", "callId": "c1", "peerId": "p1",'
        ' "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}'
    )
    assert isinstance(frame, CallIceFrame)
    assert frame.candidate.sdp_m_line_index == 0
    end = CLIENT_FRAME.validate_json('{"type": "call.ice", "callId": "c1", "candidate": null}')
    assert end.candidate is None
    click = CLIENT_FRAME.validate_json(
        '{"type": "control.event", "event": {"kind": "click", "x": 1, "y": 2, "nodeId": 5}}'
    )
    assert isinstance(click, ControlEventFrame)
    assert click.event.node_id == 5


@pytest.mark.parametrize(
    "document",
    [
        '{"type": "call.teleport"}',
        '{"type": "call.offer", "callId": "c1", "generation": 1}',
        '{"type": "control.event", "event": {"kind": "drag", "x": 1, "y": 1}}',
        '{"type": "consent.answer", "requestId": "a b", "accepted": true}',
    ],
)
def test_client_frame_rejects_invalid(document):
    with pytest.raises(ValidationError):
        CLIENT_FRAME.validate_json(document)


def test_signal_subjects():
    assert subjects.signal_room("demo", "s1") == "tandem.v1.signal.demo.s1"
    assert subjects.signal_room_key("demo", "s1") == "demo.s1"
    assert subjects.assist_event("demo", "call.started") == "tandem.v1.assist.demo.call.started"
