"""Rows extracted from a batch: searchable kinds, masked inputs, and labels for rrweb's own clicks."""

from __future__ import annotations

from tandem_sessions.clicks import ClickLabels
from tandem_sessions.extract import extract

from tests.sessions import builders as b

T = b.BASE_MS


def button_snapshot(ts: int) -> dict:
    """A page with `<button id=7>Add to cart</button>` and a long paragraph (node 9)."""
    button = {
        "type": 2,
        "tagName": "button",
        "attributes": {},
        "childNodes": [{"type": 3, "textContent": " Add  to cart ", "id": 8}],
        "id": 7,
    }
    long_text = {
        "type": 2,
        "tagName": "p",
        "attributes": {},
        "childNodes": [{"type": 3, "textContent": "x" * 500, "id": 10}],
        "id": 9,
    }
    body = {"type": 2, "tagName": "body", "attributes": {}, "childNodes": [button, long_text], "id": 3}
    return {
        "type": 2,
        "timestamp": ts,
        "data": {"node": {"type": 0, "childNodes": [body], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
    }


def rrweb_click(ts: int, node_id: int) -> dict:
    return {"type": 3, "timestamp": ts, "data": {"source": 2, "type": 2, "id": node_id, "x": 1, "y": 1}}


def clicks_of(batch) -> list[tuple[str, str]]:
    return [(row.text, row.name) for row in batch.rows if row.kind == "click"]


def test_extract_kinds():
    events = [
        b.meta(T), b.snapshot(T + 1), b.page(T + 2, "http://shop.test/a", "A"), b.click(T + 3, "Buy", "#buy"),
        b.error(T + 4, "boom"), b.console(T + 5, "warn", "careful"), b.event(T + 6, "purchase", {"total": 3}),
        b.issue(T + 7, "rage_click"), b.custom(T + 8, "tandem.visibility", {"visible": False}),
    ]  # fmt: skip
    extracted = extract(b.batch("s1", 0, events))
    kinds = [(row.kind, row.idx) for row in extracted.rows]
    assert kinds == [("page", 2), ("click", 3), ("error", 4), ("console", 5), ("custom", 6), ("issue", 7)]
    assert extracted.has_meta
    assert extracted.first_url == "http://shop.test/a"
    assert extracted.rows[4].payload == '{"total":3}'
    assert extracted.error_count() == 1


def test_extract_identity_signals():
    events = [
        b.custom(T, "tandem.user", {"userID": "alice"}),
        b.custom(T + 1, "tandem.metadata", {"key": "plan", "value": "pro"}),
        b.custom(T + 2, "tandem.anonymous", {"userAnonymousID": "v1"}),
    ]
    extracted = extract(b.batch("s1", 0, events))
    assert (extracted.user_id, extracted.user_anonymous_id, extracted.metadata) == ("alice", "v1", {"plan": "pro"})
    assert extracted.rows == []


def test_rrweb_click_gets_snapshot_label():
    labels = ClickLabels()
    extract(b.batch("s1", 0, [b.meta(T), button_snapshot(T + 1)]), clicks=labels)
    later = extract(b.batch("s1", 1, [rrweb_click(T + 10, 7), rrweb_click(T + 11, 9)]), clicks=labels)
    assert clicks_of(later) == [("Add to cart", "rrweb"), ("", "rrweb")]


def test_rrweb_click_label_follows_mutations():
    labels = ClickLabels()
    added = {"type": 2, "tagName": "a", "attributes": {"aria-label": "Close"}, "childNodes": [], "id": 20}
    mutation = {
        "type": 3,
        "timestamp": T + 5,
        "data": {
            "source": 0,
            "texts": [{"id": 8, "value": "Added!"}],
            "attributes": [],
            "removes": [],
            "adds": [{"parentId": 3, "nextId": None, "node": added}],
        },
    }
    batch = extract(
        b.batch("s1", 0, [button_snapshot(T), mutation, rrweb_click(T + 6, 7), rrweb_click(T + 7, 20)]), clicks=labels
    )
    assert clicks_of(batch) == [("Added!", "rrweb"), ("Close", "rrweb")]


def test_tracker_clicks_replace_rrweb_clicks():
    labels = ClickLabels()
    extract(b.batch("s1", 0, [button_snapshot(T)]), clicks=labels)
    first = extract(b.batch("s1", 1, [rrweb_click(T + 1, 7), b.click(T + 1, "Add to cart", "#add")]), clicks=labels)
    second = extract(b.batch("s1", 2, [rrweb_click(T + 2, 7)]), clicks=labels)
    assert clicks_of(first) == [("Add to cart", "")]
    assert clicks_of(second) == []


def test_input_value_masked():
    extracted = extract(b.batch("s1", 0, [b.input_event(T, "hunter2")]))
    assert [(row.kind, row.text) for row in extracted.rows] == [("input", "*******")]
