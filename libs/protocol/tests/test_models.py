"""The wire models against golden payloads: they parse, and encode back to the same document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tandem_protocol import (
    EventBatch,
    IngestBatchRequest,
    LiveSession,
    ProtocolError,
    SnapshotPointer,
    StartRequest,
    decode,
    encode,
    subjects,
)

GOLDEN = Path(__file__).parent / "golden"

CASES = [
    ("start_request.json", StartRequest),
    ("ingest_batch.json", IngestBatchRequest),
    ("event_batch.json", EventBatch),
    ("live_session.json", LiveSession),
    ("snapshot_pointer.json", SnapshotPointer),
]


@pytest.mark.parametrize(("name", "model"), CASES)
def test_golden_round_trip(name, model):
    text = (GOLDEN / name).read_text()
    parsed = decode(model, text)
    assert parsed.version == 1
    assert json.loads(encode(parsed)) == json.loads(text)


def test_batch_detects_meta():
    batch = decode(EventBatch, (GOLDEN / "event_batch.json").read_text())
    assert batch.has_meta()
    batch.events = [event for event in batch.events if event.type != 4]
    assert not batch.has_meta()


def test_decode_malformed_json():
    with pytest.raises(ProtocolError) as caught:
        decode(StartRequest, b'{"projectKey": ')
    assert caught.value.code == "malformed_json"
    assert caught.value.status == 400


def test_decode_names_each_bad_field():
    with pytest.raises(ProtocolError) as caught:
        decode(
            IngestBatchRequest, b'{"tabId": "a b", "seq": -1, "events": [{"type": 9, "timestamp": 1}]}', what="batch"
        )
    fields = {problem["field"] for problem in caught.value.details["problems"]}
    assert fields == {"tabId", "seq", "events.0.type"}
    assert "batch is invalid" in caught.value.message


def test_decode_rejects_newer_version():
    document = json.loads((GOLDEN / "snapshot_pointer.json").read_text())
    document["version"] = 2
    with pytest.raises(ProtocolError) as caught:
        decode(SnapshotPointer, json.dumps(document))
    assert caught.value.details["problems"][0]["field"] == "version"


def test_subjects_of_session():
    assert subjects.events("demo", "s1") == "tandem.v1.events.demo.s1"
    assert subjects.events_of_session("s1") == "tandem.v1.events.*.s1"
    assert subjects.live_key("demo", "s1") == "demo.s1"


@pytest.mark.parametrize("bad", ["a.b", "*", ">", "", "a b", "x" * 129])
def test_subjects_reject_unsafe_identifier(bad):
    with pytest.raises(ProtocolError) as caught:
        subjects.events("demo", bad)
    assert caught.value.code == "invalid_identifier"
