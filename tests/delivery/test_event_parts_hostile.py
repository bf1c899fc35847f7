"""Part events that no tracker sends: the joiners must drop them, agree, and hold little for them.

A hostile client can send `tandem.part` events straight to ingest. Ingest checks each payload's
fields, but not that the parts form whole groups, and stores them as they came. The joiners are
Python's `tandem_protocol.parts.PartJoiner` (the export, the leak alarm) and the dashboard's
`EventPartJoiner` (web/dashboard/src/event-parts.ts), run in Node through the harness of
test_event_parts.py.
"""

from __future__ import annotations

from pathlib import Path

from tandem_protocol.parts import MAX_EVENT_CHARS, PartJoiner

from tests.delivery.test_event_parts import compact, harness, part, run, snapshot

__all__ = ["harness"]  # The fixture, imported so that pytest finds it here.


def both(harness_path: Path, calls: list[list[dict]]) -> tuple[list[list[dict]], list[list[dict]], bool, bool]:
    """Return the calls' results and `pending` of the Python and the TypeScript joiner."""
    python_joiner = PartJoiner()
    python_calls = [python_joiner.join(call) for call in calls]
    typescript = run(harness_path, {"join": calls})
    return python_calls, typescript["calls"], python_joiner.pending, typescript["pending"]


def test_boolean_index_dropped(harness: Path):
    """JSON's false and true are not part numbers, though Python's bool is an int."""
    event = snapshot("row " * 10)
    text = compact(event)
    parts = [part("b1", False, 2, text[:10]), part("b1", True, 2, text[10:])]

    python_calls, typescript_calls, _, _ = both(harness, [parts])

    assert python_calls == typescript_calls == [[]]


def test_non_integer_timestamp_dropped(harness: Path):
    """A rebuilt event must have the integer timestamp that ingest requires of every event."""
    text = '{"type":3,"timestamp":1e300,"data":{"source":2,"type":2,"id":9}}'

    python_calls, typescript_calls, _, _ = both(harness, [[part("t1", 0, 2, text[:20]), part("t1", 1, 2, text[20:])]])

    assert python_calls == typescript_calls == [[]]


def test_never_ending_group_bounded():
    """A group of parts that claims a huge count is dropped once it is larger than any event can be."""
    slice_chars = 1024 * 1024
    joiner = PartJoiner()
    held = []
    for index in range(MAX_EVENT_CHARS // slice_chars + 1):
        joiner.add({"id": "big", "index": index, "count": 10**30, "data": "x" * slice_chars})
        held.append(joiner.pending_chars)

    assert MAX_EVENT_CHARS <= 8 * 1024 * 1024
    assert max(held) == MAX_EVENT_CHARS
    assert joiner.pending is False
