"""Builders of rrweb events and EventBatch messages for the session store tests."""

from __future__ import annotations

from typing import Any

import orjson
from nats.js import JetStreamContext
from tandem_protocol import subjects

BASE_MS = 1_764_876_000_000


def meta(ts: int, href: str = "http://shop.test/") -> dict[str, Any]:
    return {"type": 4, "timestamp": ts, "data": {"href": href, "width": 1280, "height": 800}}


def snapshot(ts: int, text: str = "Welcome") -> dict[str, Any]:
    """A FullSnapshot of `<html><body><p>text</p></body></html>`."""
    paragraph = {
        "type": 2,
        "tagName": "p",
        "attributes": {},
        "childNodes": [{"type": 3, "textContent": text, "id": 5}],
        "id": 4,
    }
    body = {"type": 2, "tagName": "body", "attributes": {}, "childNodes": [paragraph], "id": 3}
    html = {"type": 2, "tagName": "html", "attributes": {}, "childNodes": [body], "id": 2}
    return {
        "type": 2,
        "timestamp": ts,
        "data": {"node": {"type": 0, "childNodes": [html], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
    }


def custom(ts: int, tag: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": 5, "timestamp": ts, "data": {"tag": tag, "payload": payload}}


def page(ts: int, url: str, title: str = "Shop") -> dict[str, Any]:
    return custom(ts, "tandem.page", {"url": url, "title": title, "referrer": ""})


def click(ts: int, label: str, selector: str = "button") -> dict[str, Any]:
    return custom(ts, "tandem.click", {"label": label, "selector": selector})


def error(ts: int, message: str) -> dict[str, Any]:
    return custom(ts, "tandem.error", {"message": message, "stack": "at app.js:1"})


def console(ts: int, level: str, message: str) -> dict[str, Any]:
    return custom(ts, "tandem.console", {"level": level, "message": message})


def event(ts: int, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    return custom(ts, "tandem.event", {"name": name, "payload": payload or {}})


def issue(ts: int, name: str) -> dict[str, Any]:
    return custom(ts, "tandem.issue", {"name": name, "payload": {}})


def mouse_move(ts: int) -> dict[str, Any]:
    return {
        "type": 3,
        "timestamp": ts,
        "data": {"source": 1, "positions": [{"x": 10, "y": 20, "id": 4, "timeOffset": 0}]},
    }


def text_change(ts: int, text: str) -> dict[str, Any]:
    """A mutation that sets the paragraph's text (node 5)."""
    return {
        "type": 3,
        "timestamp": ts,
        "data": {"source": 0, "texts": [{"id": 5, "value": text}], "attributes": [], "removes": [], "adds": []},
    }


def input_event(ts: int, text: str) -> dict[str, Any]:
    return {"type": 3, "timestamp": ts, "data": {"source": 5, "id": 9, "text": text, "isChecked": False}}


def batch(
    session_id: str, seq: int, events: list[dict[str, Any]], *, project_id: str = "demo", tab_id: str = "tab-1"
) -> dict[str, Any]:
    received = max((e["timestamp"] for e in events), default=BASE_MS) + 50
    return {
        "version": 1,
        "projectId": project_id,
        "sessionId": session_id,
        "tabId": tab_id,
        "seq": seq,
        "receivedAt": received,
        "events": events,
    }


async def publish(js: JetStreamContext, message: dict[str, Any], *, msg_id: bool = True) -> None:
    """Publish a batch as ingest does; without `msg_id` JetStream keeps a second copy of a batch."""
    headers = {"Nats-Msg-Id": f"{message['sessionId']}:{message['tabId']}:{message['seq']}"} if msg_id else None
    await js.publish(
        subjects.events(message["projectId"], message["sessionId"]), orjson.dumps(message), headers=headers
    )


def visit(session_id: str, *, start: int = BASE_MS, user: str | None = None, batches: int = 3) -> list[dict[str, Any]]:
    """A small visit: a page load, then batches of mouse moves and text changes, `batches` batches in all."""
    first = [meta(start), snapshot(start + 1), page(start + 2, "http://shop.test/")]
    if user:
        first.append(custom(start + 3, "tandem.user", {"userID": user}))
    messages = [batch(session_id, 0, first)]
    for seq in range(1, batches):
        ts = start + seq * 1000
        messages.append(batch(session_id, seq, [mouse_move(ts), text_change(ts + 1, f"step {seq}")]))
    return messages
