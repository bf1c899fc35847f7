"""Turn one tracker batch into what the store keeps: searchable event rows, the batch's summary row and its chunk.

Searchable kinds come from the tracker's `tandem.*` custom events and from rrweb's
Input events. Input values are kept masked only: each character becomes `*`.

A `tandem.part` event is a slice of an event too large for one batch. It adds no row,
and its batch is stored as it came, because the export and the players rebuild the
event. The click labels never see a split snapshot. They do not need it, because the
tracker that splits events also sends `tandem.click`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tandem_sessions.clicks import ClickLabels, is_click
from tandem_sessions.store.replay import ChunkKey

# rrweb numbers (rrweb 2.x, @rrweb/types): event types and incremental sources.
META = 4
INCREMENTAL_SNAPSHOT = 3
CUSTOM = 5
SOURCE_INPUT = 5

MAX_NAME = 256
MAX_TEXT = 1024
MAX_SELECTOR = 512
MAX_URL = 2048
MAX_PAYLOAD = 16_384
MAX_MASKED_INPUT = 64

EVENT_COLUMNS = (
    "project_id", "kind", "session_id", "tab_id", "seq", "idx", "timestamp",
    "name", "text", "selector", "url", "payload",
)  # fmt: skip
BATCH_COLUMNS = (
    "project_id", "session_id", "tab_id", "seq", "received_at", "first_ts", "last_ts", "event_count", "raw_bytes",
    "has_meta", "pages", "clicks", "errors", "first_url", "user_id", "user_anonymous_id", "metadata",
)  # fmt: skip

ERROR_KINDS = ("error",)
"""Kinds counted as errors, with console messages of level `error`."""


@dataclass
class EventRow:
    kind: str
    idx: int
    timestamp: int
    name: str = ""
    text: str = ""
    selector: str = ""
    url: str = ""
    payload: str = ""


@dataclass
class ExtractedBatch:
    """Everything one batch adds to the store."""

    project_id: str
    session_id: str
    tab_id: str
    seq: int
    received_at: int
    events_json: bytes
    event_count: int
    first_ts: int
    last_ts: int
    has_meta: bool
    rows: list[EventRow] = field(default_factory=list)
    first_url: str = ""
    user_id: str = ""
    user_anonymous_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> ChunkKey:
        return ChunkKey(seq=self.seq, tab_id=self.tab_id)

    def count(self, kind: str) -> int:
        return sum(1 for row in self.rows if row.kind == kind)

    def error_count(self) -> int:
        return sum(1 for row in self.rows if row.kind in ERROR_KINDS or (row.kind == "console" and row.name == "error"))

    def event_rows(self) -> list[list[Any]]:
        return [
            [
                self.project_id,
                row.kind,
                self.session_id,
                self.tab_id,
                self.seq,
                row.idx,
                row.timestamp,
                row.name,
                row.text,
                row.selector,
                row.url,
                row.payload,
            ]  # fmt: skip
            for row in self.rows
        ]

    def batch_row(self) -> list[Any]:
        return [
            self.project_id, self.session_id, self.tab_id, self.seq, self.received_at, self.first_ts, self.last_ts,
            self.event_count, len(self.events_json), int(self.has_meta), self.count("page"),
            self.count("click"), self.error_count(), self.first_url, self.user_id, self.user_anonymous_id,
            self.metadata,
        ]  # fmt: skip


def extract(batch: dict[str, Any], *, clicks: ClickLabels | None = None) -> ExtractedBatch:
    """Build the rows of a batch already validated as an EventBatch (a dict with its wire keys).

    With `clicks`, rrweb's own click events become click rows labelled from the page's
    text, unless the session sends `tandem.click` events.
    """
    events: list[dict[str, Any]] = batch["events"]
    events_json = orjson.dumps(events)
    timestamps = [int(event["timestamp"]) for event in events]
    received_at = int(batch["receivedAt"])
    extracted = ExtractedBatch(
        project_id=batch["projectId"],
        session_id=batch["sessionId"],
        tab_id=batch["tabId"],
        seq=int(batch["seq"]),
        received_at=received_at,
        events_json=events_json,
        event_count=len(events),
        first_ts=min(timestamps, default=received_at),
        last_ts=max(timestamps, default=received_at),
        has_meta=any(event["type"] == META for event in events),
    )
    for index, event in enumerate(events):
        _extract_event(extracted, index, event)
    if clicks is not None:
        _label_rrweb_clicks(extracted, events, clicks)
    # The first page view names the page better than the Meta event's href, which comes before it.
    page_urls = [row.url for row in extracted.rows if row.kind == "page" and row.url]
    if page_urls:
        extracted.first_url = page_urls[0]
    return extracted


def _extract_event(batch: ExtractedBatch, index: int, event: dict[str, Any]) -> None:
    data = event.get("data")
    if not isinstance(data, dict):
        return
    timestamp = int(event["timestamp"])
    if event["type"] == META and not batch.first_url:
        batch.first_url = _text(data.get("href"), MAX_URL)
    elif event["type"] == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_INPUT:
        batch.rows.append(_input_row(index, timestamp, data))
    elif event["type"] == CUSTOM and isinstance(data.get("tag"), str):
        payload = data.get("payload")
        row = _custom_row(batch, index, timestamp, data["tag"], payload if isinstance(payload, dict) else {})
        if row is not None:
            batch.rows.append(row)


def _label_rrweb_clicks(batch: ExtractedBatch, events: list[dict[str, Any]], clicks: ClickLabels) -> None:
    if any(row.kind == "click" for row in batch.rows):
        clicks.mark_tracker_clicks(batch.session_id)
    derive = not clicks.uses_tracker_clicks(batch.session_id)
    for index, event in enumerate(events):
        if derive and is_click(event):
            label = clicks.label(batch.session_id, event["data"].get("id"))
            batch.rows.append(
                EventRow(kind="click", idx=index, timestamp=int(event["timestamp"]), name="rrweb", text=label)
            )
        else:
            clicks.observe(batch.session_id, event)


def _input_row(index: int, timestamp: int, data: dict[str, Any]) -> EventRow:
    value = data.get("text")
    masked = "*" * min(len(value), MAX_MASKED_INPUT) if isinstance(value, str) else ""
    return EventRow(kind="input", idx=index, timestamp=timestamp, name=_text(data.get("id"), MAX_NAME), text=masked)


def _custom_row(
    batch: ExtractedBatch, index: int, timestamp: int, tag: str, payload: dict[str, Any]
) -> EventRow | None:
    """Return the searchable row of a `tandem.*` event, and apply identity signals to the batch."""
    row = EventRow(kind="", idx=index, timestamp=timestamp)
    if tag == "tandem.page":
        row.kind = "page"
        row.url = _text(payload.get("url"), MAX_URL)
        row.text = _text(payload.get("title"), MAX_TEXT)
    elif tag == "tandem.click":
        row.kind = "click"
        row.text = _text(payload.get("label"), MAX_TEXT)
        row.selector = _text(payload.get("selector"), MAX_SELECTOR)
    elif tag in ("tandem.event", "tandem.issue"):
        row.kind = "custom" if tag == "tandem.event" else "issue"
        row.name = _text(payload.get("name"), MAX_NAME)
        row.payload = _json(payload.get("payload"))
    elif tag == "tandem.error":
        row.kind = "error"
        row.text = _text(payload.get("message"), MAX_TEXT)
        row.payload = _json({"stack": payload.get("stack")} if payload.get("stack") else None)
    elif tag == "tandem.console":
        row.kind = "console"
        row.name = _text(payload.get("level"), MAX_NAME)
        row.text = _text(payload.get("message"), MAX_TEXT)
    elif tag == "tandem.user":
        batch.user_id = _text(payload.get("userID"), MAX_NAME)
        return None
    elif tag == "tandem.anonymous":
        batch.user_anonymous_id = _text(payload.get("userAnonymousID"), MAX_NAME)
        return None
    elif tag == "tandem.metadata" and isinstance(payload.get("key"), str) and payload["key"]:
        batch.metadata[payload["key"][:128]] = _text(payload.get("value"), MAX_TEXT)
        return None
    else:
        return None
    return row


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    return (value if isinstance(value, str) else str(value))[:limit]


def _json(value: Any) -> str:
    """Serialise a payload to JSON, or "" for none; a payload over the size limit is dropped, not cut."""
    if value is None:
        return ""
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        return ""
    return text if len(text) <= MAX_PAYLOAD else ""
