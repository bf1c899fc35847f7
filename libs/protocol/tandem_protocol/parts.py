"""Events larger than a batch, which the tracker sends as consecutive `tandem.part` custom events.

The payload of each part is `{"id", "index", "count", "data"}`: `data` is a slice of the event's
JSON, and the slices of parts 0 to `count - 1` joined are the whole JSON (docs/PROTOCOL.md). The
parts of one event come one after the other in the tab's batches, in order. Consumers that
need rrweb events (the export, the leak alarm) rebuild them with `PartJoiner`. The store keeps
the parts as they came.
"""

from __future__ import annotations

from typing import Any

import orjson

PART_TAG = "tandem.part"
CUSTOM = 5
"""rrweb's event type of custom events (rrweb 2.x, `@rrweb/types`)."""

MAX_EVENT_CHARS = 8 * 1024 * 1024
"""Largest event rebuilt, in characters of JSON: twice the largest the tracker sends, 4 MiB, its queue's size.

It bounds what a joiner holds for a group that never ends, which a hostile client can send."""


def is_part(event: dict[str, Any]) -> bool:
    """Tell whether an event (a dict with its wire keys) is a `tandem.part` custom event."""
    data = event.get("data")
    return event.get("type") == CUSTOM and isinstance(data, dict) and data.get("tag") == PART_TAG


class PartJoiner:
    """Rebuilds the events of one tab's stream from their parts, fed in stream order.

    A group of parts that misses one (the tracker dropped it, or the stream starts inside the
    group), has a part that is not valid, or grows past `max_chars` is dropped. A new part 0
    drops the group begun before.
    """

    def __init__(self, *, max_chars: int = MAX_EVENT_CHARS) -> None:
        self._max_chars = max_chars
        self._id: str | None = None
        self._count = 0
        self._slices: list[str] = []
        self._chars = 0

    @property
    def pending(self) -> bool:
        """True while a group has begun and not ended."""
        return self._id is not None

    @property
    def pending_chars(self) -> int:
        """Characters of JSON held for the group that has begun."""
        return self._chars

    def join(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return `events` with each complete group of parts replaced by its event, at the place of its last part."""
        joined: list[dict[str, Any]] = []
        for event in events:
            if not is_part(event):
                joined.append(event)
                continue
            rebuilt = self.add(event["data"].get("payload"))
            if rebuilt is not None:
                joined.append(rebuilt)
        return joined

    def add(self, payload: Any) -> dict[str, Any] | None:
        """Add the payload of the next part; return the rebuilt event when it was the group's last part."""
        if not valid_payload(payload):
            self._forget()
            return None
        if payload["index"] == 0:
            self._forget()
            self._id = payload["id"]
            self._count = payload["count"]
        expected = self._id == payload["id"] and self._count == payload["count"]
        data: str = payload["data"]
        if not expected or len(self._slices) != payload["index"] or self._chars + len(data) > self._max_chars:
            self._forget()
            return None
        self._slices.append(data)
        self._chars += len(data)
        if len(self._slices) < self._count:
            return None

        text = "".join(self._slices)
        self._forget()
        return _parse_event(text)

    def _forget(self) -> None:
        self._id = None
        self._count = 0
        self._slices = []
        self._chars = 0


def valid_payload(payload: Any) -> bool:
    """Tell whether a part's payload has the fields and types of the protocol: ingest rejects any other."""
    if not isinstance(payload, dict):
        return False
    index, count = payload.get("index"), payload.get("count")
    return (
        isinstance(payload.get("id"), str)
        and type(index) is int  # Not `isinstance`: JSON's true and false are Python ints too.
        and type(count) is int
        and 0 <= index < count
        and isinstance(payload.get("data"), str)
    )


def _parse_event(text: str) -> dict[str, Any] | None:
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    valid = isinstance(event, dict) and type(event.get("type")) is int and type(event.get("timestamp")) is int
    return event if valid else None
