"""Events larger than a batch: the tracker's split rule, the joiners, and the server code that reads parts.

The split rule is the tracker's own code: web/tracker/src/queue.ts is bundled with web/'s esbuild
and run in Node, which queues events and takes them in batches as the transport does. The
dashboard's joiner (web/dashboard/src/event-parts.ts) runs in the same bundle, and Python's
`tandem_protocol.parts.PartJoiner` must rebuild the same events from the same parts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from tandem_ingest.leak_alarm import MAX_SPLIT_SESSIONS, LeakAlarm
from tandem_protocol.parts import PART_TAG, PartJoiner
from tandem_sessions.api import rebuild_parts
from tandem_sessions.extract import extract

from tests.node_bundle import DASHBOARD_SOURCES, TRACKER_SOURCES, bundle

META, FULL_SNAPSHOT, INCREMENTAL, CUSTOM = 4, 2, 3, 5

MAX_BATCH_BYTES = 20_000
PART_BYTES = MAX_BATCH_BYTES - 4096
"""The transport's rule (web/tracker/src/transport.ts): `maxBatchBytes` less 4096 bytes of headroom."""
ENVELOPE = '{"version":1,"tabId":"k3j2h4g5f6d7s8a9","seq":0,"events":[]}'

# Reads {"events": [...], "limits": {...}} or {"join": [[...], ...]} on stdin and writes the result.
HARNESS = """
import { EventQueue, toQueuedEvent } from "%(tracker)s/queue.ts";
import { EventPartJoiner } from "%(dashboard)s/event-parts.ts";

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  const joiner = new EventPartJoiner();
  if (request.join) {
    const calls = request.join.map((events) => joiner.join(events));
    process.stdout.write(JSON.stringify({ calls, pending: joiner.pending }));
    return;
  }
  const queue = new EventQueue({ maxEvents: 5000, maxBytes: 4 * 1024 * 1024 });
  for (const event of request.events) queue.push(toQueuedEvent(event));
  const batches = [];
  for (let batch = queue.takeBatch(request.limits); batch.length > 0; batch = queue.takeBatch(request.limits)) {
    batches.push(batch.map((item) => item.json));
  }
  const joined = joiner.join(batches.flat().map((json) => JSON.parse(json)));
  process.stdout.write(JSON.stringify({ batches, joined, left: queue.length }));
});
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = HARNESS % {"tracker": TRACKER_SOURCES, "dashboard": DASHBOARD_SOURCES}
    return bundle(source, tmp_path_factory.mktemp("parts"), for_node=True)


def run(harness: Path, request: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        ["node", str(harness)], input=json.dumps(request), capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(done.stdout)


def take_batches(harness: Path, events: list[dict[str, Any]]) -> dict[str, Any]:
    limits = {
        "maxBytes": MAX_BATCH_BYTES,
        "overheadBytes": len(ENVELOPE),
        "maxMutationRecords": 10_000,
        "oversize": "send-alone",
        "partBytes": PART_BYTES,
    }
    return run(harness, {"events": events, "limits": limits})


def compact(event: dict[str, Any]) -> str:
    """Return the event's JSON as JSON.stringify writes it."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def event_of_size(size: int, timestamp: int = 1764876000000) -> dict[str, Any]:
    """Return an rrweb Input event whose JSON is `size` bytes."""
    event = {"type": INCREMENTAL, "timestamp": timestamp, "data": {"source": 5, "id": 7, "text": ""}}
    event["data"]["text"] = "x" * (size - len(compact(event)))
    assert len(compact(event).encode()) == size
    return event


def meta(timestamp: int = 1764876000000) -> dict[str, Any]:
    return {
        "type": META,
        "timestamp": timestamp,
        "data": {"href": "http://127.0.0.1/big/", "width": 1280, "height": 800},
    }


def snapshot(text: str, timestamp: int = 1764876000000) -> dict[str, Any]:
    node = {"type": 0, "id": 1, "childNodes": [{"type": 3, "id": 2, "textContent": text}]}
    return {
        "type": FULL_SNAPSHOT,
        "timestamp": timestamp,
        "data": {"node": node, "initialOffset": {"left": 0, "top": 0}},
    }


def payloads(batch: list[str]) -> list[dict[str, Any]]:
    """Return the `tandem.part` payloads of a batch, in order."""
    events = [json.loads(item) for item in batch]
    return [
        event["data"]["payload"] for event in events if event["type"] == CUSTOM and event["data"]["tag"] == PART_TAG
    ]


def body_of(batch: list[str]) -> str:
    return ENVELOPE.replace("[]", "[" + ",".join(batch) + "]")


def all_parts(batches: list[list[str]]) -> list[dict[str, Any]]:
    return [part for batch in batches for part in payloads(batch)]


def test_split_at_part_size(harness: Path):
    event = event_of_size(PART_BYTES)

    result = take_batches(harness, [event])

    assert result["batches"] == [[compact(event)]]
    assert result["joined"] == [event]


def test_split_one_byte_over(harness: Path):
    event = event_of_size(PART_BYTES + 1)

    result = take_batches(harness, [event])
    parts = all_parts(result["batches"])

    events = [item for batch in result["batches"] for item in batch]
    assert len(parts) == 2
    assert len(events) == 2
    assert all(len(item.encode()) <= PART_BYTES for item in events)
    assert all(len(body_of(batch).encode()) <= MAX_BATCH_BYTES for batch in result["batches"])
    assert [part["index"] for part in parts] == [0, 1]
    assert {part["count"] for part in parts} == {2}
    assert len({part["id"] for part in parts}) == 1
    assert [json.loads(item)["timestamp"] for item in events] == [event["timestamp"]] * 2
    assert "".join(part["data"] for part in parts) == compact(event)
    assert result["joined"] == [event]


def test_split_snapshot_meta_with_part0(harness: Path):
    events = [meta(), snapshot("row " * 12_000), event_of_size(300)]

    result = take_batches(harness, events)
    batches = result["batches"]
    first = [json.loads(item) for item in batches[0]]

    assert [event["type"] for event in first] == [META, CUSTOM]
    assert payloads(batches[0])[0]["index"] == 0
    assert len(all_parts(batches)) >= 3
    assert len(batches) >= 3
    assert json.loads(batches[-1][-1]) == events[2]
    for batch in batches:
        assert len(body_of(batch).encode()) <= MAX_BATCH_BYTES
    assert result["joined"] == events
    assert PartJoiner().join([json.loads(item) for batch in batches for item in batch]) == events


def test_split_escapes_and_surrogates(harness: Path):
    """Quotes, backslashes and non-ASCII text grow once escaped or encoded, and a cut must not split an emoji."""
    text = ('"quoted" \\path\\ é 中文 ' + "😀" * 40) * 300
    event = snapshot(text)

    result = take_batches(harness, [event])
    parts = all_parts(result["batches"])

    assert len(parts) >= 3
    for batch in result["batches"]:
        assert len(batch[0].encode()) <= PART_BYTES
    for part in parts:
        part["data"].encode()  # A slice with half a surrogate pair cannot be encoded.
    assert "".join(part["data"] for part in parts) == compact(event)
    assert result["joined"] == [event]
    assert PartJoiner().join([json.loads(batch[0]) for batch in result["batches"]]) == [event]


def part(part_id: str, index: int, count: int, data: str, timestamp: int = 1764876000000) -> dict[str, Any]:
    payload = {"id": part_id, "index": index, "count": count, "data": data}
    return {"type": CUSTOM, "timestamp": timestamp, "data": {"tag": PART_TAG, "payload": payload}}


def split(event: dict[str, Any], pieces: int, *, part_id: str = "p1") -> list[dict[str, Any]]:
    """Return `event` as `pieces` part events, cut at equal character counts."""
    text = compact(event)
    step = -(-len(text) // pieces)
    slices = [text[start : start + step] for start in range(0, len(text), step)]
    return [part(part_id, i, len(slices), data, event["timestamp"]) for i, data in enumerate(slices)]


def click(timestamp: int) -> dict[str, Any]:
    return {"type": INCREMENTAL, "timestamp": timestamp, "data": {"source": 2, "type": 2, "id": 9}}


JOIN_CASES = {
    "whole": lambda whole, other: ([[*whole[:2]], [other, whole[2]]], [[], [other, "rebuilt"]]),
    "missing part": lambda whole, other: ([[whole[0], whole[2], other]], [[other]]),
    "restart": lambda whole, other: ([[whole[0], whole[1]], [*whole, other]], [[], ["rebuilt", other]]),
    "starts inside": lambda whole, other: ([[whole[1], whole[2], other]], [[other]]),
    "invalid payload": lambda whole, other: (
        [[whole[0], {**whole[1], "data": {"tag": PART_TAG, "payload": {"id": "p1"}}}, whole[2]]],
        [[]],
    ),
}


@pytest.mark.parametrize("case", list(JOIN_CASES))
def test_joiners_same_events(harness: Path, case: str):
    event = snapshot("row " * 100)
    other = click(event["timestamp"] + 5)
    calls, expected = JOIN_CASES[case](split(event, 3), other)
    expected = [[event if item == "rebuilt" else item for item in call] for call in expected]

    python_joiner = PartJoiner()
    python_calls = [python_joiner.join(call) for call in calls]
    typescript = run(harness, {"join": calls})

    assert python_calls == expected
    assert typescript["calls"] == expected
    assert python_joiner.pending is False
    assert typescript["pending"] is False


def test_joiner_pending_and_limit():
    parts = split(snapshot("row " * 100), 3)
    joiner = PartJoiner()

    assert joiner.join(parts[:2]) == []
    assert joiner.pending is True
    assert joiner.pending_chars == sum(len(part["data"]["payload"]["data"]) for part in parts[:2])

    small = PartJoiner(max_chars=len(parts[0]["data"]["payload"]["data"]) + 1)
    assert small.join(parts) == []
    assert small.pending is False


def test_leak_alarm_straddling_parts():
    """An email typed into an input, cut in two by the parts, is still found once the snapshot is rebuilt."""
    email = "alice.martin@example.com"
    node = {
        "type": 0,
        "id": 1,
        "childNodes": [{"type": 2, "id": 2, "tagName": "input", "attributes": {"type": "text", "value": email}}],
    }
    event = {"type": FULL_SNAPSHOT, "timestamp": 1764876000000, "data": {"node": node}}
    text = compact(event)
    cut = text.index(email) + len(email) // 2
    parts = [part("e1", 0, 2, text[:cut]), part("e1", 1, 2, text[cut:])]
    alarm = LeakAlarm()

    first = alarm.check(project_id="demo", session_id="s1", seq=0, events=[meta(), parts[0]])
    elsewhere = alarm.check(project_id="demo", session_id="s2", seq=0, events=[click(1)])
    second = alarm.check(project_id="demo", session_id="s1", seq=1, events=[parts[1], click(2)])

    assert first == []
    assert elsewhere == []
    assert [finding.kind for finding in second] == ["email"]
    assert second[0].path == "split[0].data.node.childNodes[0].attributes.value"


def test_leak_alarm_counts_unchecked():
    """Past MAX_SPLIT_SESSIONS unfinished groups, the oldest is given up and counted, never dropped silently."""
    alarm = LeakAlarm()
    before = REGISTRY.get_sample_value("tandem_ingest_leak_unchecked_splits_total") or 0
    for index in range(MAX_SPLIT_SESSIONS + 1):
        alarm.check(project_id="demo", session_id=f"s{index}", seq=0, events=[part(f"g{index}", 0, 2, "{")])
    after = REGISTRY.get_sample_value("tandem_ingest_leak_unchecked_splits_total")
    assert after - before == 1


def test_extract_parts_no_rows():
    parts = split(snapshot("row " * 100), 2)
    batch = {
        "projectId": "demo",
        "sessionId": "s1",
        "tabId": "t1",
        "seq": 0,
        "receivedAt": 1764876000500,
        "events": [meta(), parts[0]],
    }

    extracted = extract(batch)

    assert extracted.rows == []
    assert extracted.event_count == 2
    assert extracted.has_meta is True
    assert extracted.first_url == "http://127.0.0.1/big/"


def test_export_rebuilds_across_chunks():
    event = snapshot("row " * 100)
    parts = split(event, 3)
    other = click(event["timestamp"] + 5)
    chunks = [orjson.dumps([meta(), parts[0]]), orjson.dumps([parts[1]]), orjson.dumps([parts[2], other])]
    joiner = PartJoiner()

    rebuilt = [orjson.loads(rebuild_parts(chunk, joiner)) for chunk in chunks]

    assert rebuilt == [[meta()], [], [event, other]]
