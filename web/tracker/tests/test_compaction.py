"""Compaction of queued mutations: values that a later queued mutation overwrites are left out of batches.

The code under test is the tracker's own: web/tracker/src/queue.ts and compaction.ts are
bundled with web/'s esbuild and run in Node. A script of steps pushes rrweb mutation events
and takes batches, as the transport does. Each test then replays what the batches carry
and compares it with what the events carried before compaction.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.node_bundle import TRACKER_SOURCES, bundle

INCREMENTAL, MUTATION = 3, 0

# Reads {"steps": [{"push": event} | {"take": true}, ...]} on stdin; writes the batches' JSON.
HARNESS = """
import { EventQueue, toQueuedEvent } from "%(tracker)s/queue.ts";

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { steps } = JSON.parse(input);
  const limits = { maxBytes: 1 << 20, overheadBytes: 64, maxMutationRecords: 100000, oversize: "send-alone", partBytes: 1 << 19 };
  const queue = new EventQueue({ maxEvents: 5000, maxBytes: 4 << 20 });
  const batches = [];
  const take = () => {
    const batch = queue.takeBatch(limits);
    if (batch.length > 0) batches.push(batch.map((item) => item.json));
  };
  for (const step of steps) {
    if (step.push) queue.push(toQueuedEvent(step.push));
    else take();
  }
  while (queue.length > 0) take();
  process.stdout.write(JSON.stringify({ batches }));
});
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = HARNESS % {"tracker": TRACKER_SOURCES}
    return bundle(source, tmp_path_factory.mktemp("compaction"), for_node=True)


def run(harness: Path, steps: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Run `steps` in the tracker's queue and return the events of each batch."""
    done = subprocess.run(
        ["node", str(harness)],
        input=json.dumps({"steps": steps}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [[json.loads(item) for item in batch] for batch in json.loads(done.stdout)["batches"]]


def mutation(timestamp: int, texts=(), attributes=(), adds=(), removes=()) -> dict[str, Any]:
    return {
        "type": INCREMENTAL,
        "timestamp": timestamp,
        "data": {
            "source": MUTATION,
            "texts": [{"id": node, "value": value} for node, value in texts],
            "attributes": [{"id": node, "attributes": values} for node, values in attributes],
            "adds": list(adds),
            "removes": list(removes),
        },
    }


def final_state(events: list[dict[str, Any]]) -> dict[tuple[int, str], Any]:
    """Apply the texts and attributes of `events` in order, as a replayer would."""
    state: dict[tuple[int, str], Any] = {}
    for event in events:
        data = event["data"]
        for change in data["texts"]:
            state[(change["id"], "#text")] = change["value"]
        for change in data["attributes"]:
            for name, value in change["attributes"].items():
                if isinstance(value, dict):  # A style change lists only the properties it changes.
                    style = dict(state.get((change["id"], name)) or {})
                    style.update(value)
                    state[(change["id"], name)] = style
                else:
                    state[(change["id"], name)] = value
    return state


def sent(batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for batch in batches for event in batch]


def test_overwritten_text_left_out(harness: Path):
    steps = [
        {"push": mutation(1, texts=[(5, "first"), (6, "kept")])},
        {"push": mutation(2, texts=[(5, "second")])},
    ]

    batches = run(harness, steps)

    assert len(batches) == 1
    first, second = batches[0]
    assert first["data"]["texts"] == [{"id": 6, "value": "kept"}]
    assert second["data"]["texts"] == [{"id": 5, "value": "second"}]


def test_repeated_text_in_one_event(harness: Path):
    steps = [{"push": mutation(1, texts=[(5, "first"), (6, "kept"), (5, "second")])}]

    (event,) = run(harness, steps)[0]

    assert event["data"]["texts"] == [{"id": 6, "value": "kept"}, {"id": 5, "value": "second"}]


def test_overwritten_attribute_left_out(harness: Path):
    steps = [
        {"push": mutation(1, attributes=[(9, {"class": "hot", "title": "a"})])},
        {"push": mutation(2, attributes=[(9, {"class": ""})])},
    ]

    first, second = run(harness, steps)[0]

    assert first["data"]["attributes"] == [{"id": 9, "attributes": {"title": "a"}}]
    assert second["data"]["attributes"] == [{"id": 9, "attributes": {"class": ""}}]


def test_style_changes_all_kept(harness: Path):
    """A style change is partial (an object of properties): it neither replaces nor is replaced by an object."""
    steps = [
        {"push": mutation(1, attributes=[(3, {"style": {"color": "red"}})])},
        {"push": mutation(2, attributes=[(3, {"style": {"width": "10px"}})])},
    ]

    first, second = run(harness, steps)[0]

    assert first["data"]["attributes"] == [{"id": 3, "attributes": {"style": {"color": "red"}}}]
    assert second["data"]["attributes"] == [{"id": 3, "attributes": {"style": {"width": "10px"}}}]


def test_sent_batch_never_changed(harness: Path):
    """A value already taken into a batch stays in it, whatever later events change."""
    steps = [
        {"push": mutation(1, texts=[(5, "sent")])},
        {"take": True},
        {"push": mutation(2, texts=[(5, "queued")])},
        {"push": mutation(3, texts=[(5, "last")])},
    ]

    batches = run(harness, steps)

    assert batches[0][0]["data"]["texts"] == [{"id": 5, "value": "sent"}]
    assert [event["data"]["texts"] for event in batches[1]] == [[], [{"id": 5, "value": "last"}]]


def test_random_storm_same_final_state(harness: Path):
    """Over a storm of changes with batches taken between them, the replayed end state is the same."""
    generator = random.Random(20261205)
    steps: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for timestamp in range(300):
        texts = [(generator.randrange(40), f"t{timestamp}-{n}") for n in range(generator.randrange(6))]
        attributes = []
        for _ in range(generator.randrange(4)):
            name = generator.choice(["class", "title", "style"])
            style = {generator.choice(["color", "width"]): generator.choice(["red", "1px"])}
            value: Any = style if name == "style" else str(timestamp)
            attributes.append((generator.randrange(20), {name: value}))
        event = mutation(timestamp, texts=texts, attributes=attributes)
        events.append(json.loads(json.dumps(event)))
        steps.append({"push": event})
        if generator.random() < 0.1:
            steps.append({"take": True})

    batches = run(harness, steps)

    assert final_state(sent(batches)) == final_state(events)
    sent_values = sum(len(e["data"]["texts"]) + len(e["data"]["attributes"]) for e in sent(batches))
    pushed_values = sum(len(e["data"]["texts"]) + len(e["data"]["attributes"]) for e in events)
    assert sent_values < pushed_values, "nothing was left out"
