"""The ingest leak alarm: what it counts as personal data, where it looks, and what it logs."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY
from tandem_ingest.leak_alarm import Finding, LeakAlarm, classify, luhn_valid, scan_events

from tests.ingest.test_ingest_api import post_batch, start_session

EMAIL = "jane.doe@example.test"
CARD = "4111 1111 1111 1111"
PHONE = "+44 7700 900123"


def input_event(text: str, node_id: int = 7) -> dict:
    return {"type": 3, "timestamp": 5, "data": {"source": 5, "id": node_id, "text": text, "isChecked": False}}


def element(tag: str, attributes: dict, children: list | None = None, node_id: int = 10) -> dict:
    return {"type": 2, "tagName": tag, "attributes": attributes, "childNodes": children or [], "id": node_id}


def text_node(text: str, node_id: int = 20) -> dict:
    return {"type": 3, "textContent": text, "id": node_id}


def snapshot(*children: dict) -> dict:
    return {"type": 2, "timestamp": 2, "data": {"node": {"type": 0, "id": 1, "childNodes": list(children)}}}


def leaks(kind: str) -> float:
    return REGISTRY.get_sample_value("tandem_ingest_suspected_leaks_total", {"kind": kind}) or 0.0


class RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def warning(self, event: str, **fields) -> None:
        self.calls.append((event, fields))


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        (f"mail {EMAIL}", ["email"]),
        ("mail jane.doe%40example.test", ["email"]),
        (CARD, ["card"]),
        ("4111-1111-1111-1111", ["card"]),
        ("4111 1111 1111 1112", []),  # Fails the Luhn check, and 16 digits are too many for a phone number.
        (PHONE, ["phone"]),
        ("(415) 555-0134", ["phone"]),
        ("+1 (415) 555-0134", ["phone"]),
        ("2024-05-17 at 12:30", []),
        ("****************", []),
        ("Order 48213", []),
        ("", []),
    ],
)
def test_classify(text, kinds):
    assert classify(text) == kinds


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("5555555555554444")
    assert not luhn_valid("4111111111111112")


def test_scan_input_event():
    assert scan_events([input_event(f"to {EMAIL}")]) == [Finding("email", "events[0].data.text")]
    assert scan_events([input_event("*" * 20)]) == []


def test_scan_input_values_in_snapshot():
    events = [
        snapshot(
            element("input", {"type": "PASSWORD", "value": "hunter2"}, node_id=3),
            element("input", {"type": "text", "value": CARD}, node_id=4),
            element("input", {"type": "text", "value": "*" * 10}, node_id=5),
            element("p", {"title": EMAIL}, [text_node(EMAIL)], node_id=6),
        )
    ]
    findings = scan_events(events)
    assert Finding("password", "events[0].data.node.childNodes[0].attributes.value") in findings
    assert Finding("card", "events[0].data.node.childNodes[1].attributes.value") in findings
    assert len(findings) == 2, "plain page text and non-form attributes are not masked fields"


def test_scan_text_inside_masked_elements():
    events = [
        snapshot(
            element("div", {"data-tandem-obscured": ""}, [element("span", {}, [text_node(PHONE)])], node_id=3),
            element("div", {"data-openreplay-hidden": ""}, [text_node(EMAIL, node_id=21)], node_id=4),
            element("textarea", {}, [text_node(CARD, node_id=22)], node_id=5),
            element("div", {"contenteditable": "true"}, [text_node(EMAIL, node_id=23)], node_id=6),
            element("div", {"contenteditable": "false"}, [text_node(EMAIL, node_id=24)], node_id=7),
        )
    ]
    kinds = [finding.kind for finding in scan_events(events)]
    assert kinds.count("phone") == 1
    assert kinds.count("card") == 1
    assert kinds.count("email") == 2


def test_scan_mutations():
    mutation = {
        "type": 3,
        "timestamp": 9,
        "data": {
            "source": 0,
            "adds": [{"parentId": 1, "nextId": None, "node": element("input", {"value": EMAIL}, node_id=30)}],
            "attributes": [{"id": 7, "attributes": {"value": PHONE, "title": EMAIL}}],
            "texts": [{"id": 8, "value": EMAIL}],
            "removes": [],
        },
    }
    assert scan_events([mutation]) == [
        Finding("email", "events[0].data.adds[0].node.attributes.value"),
        Finding("phone", "events[0].data.attributes[0].attributes.value"),
    ]


def test_alarm_counts_and_logs_without_value():
    logger = RecordingLogger()
    alarm = LeakAlarm(logger=logger, warn_interval_seconds=60)
    before_email, before_card = leaks("email"), leaks("card")

    alarm.check(project_id="demo", session_id="s-1", seq=3, events=[input_event(EMAIL), input_event(CARD, 8)])

    assert leaks("email") == before_email + 1
    assert leaks("card") == before_card + 1
    assert len(logger.calls) == 1
    event, fields = logger.calls[0]
    assert event == "batch.suspected_leak"
    assert fields["session_id"] == "s-1"
    assert fields["fields"] == ["events[0].data.text", "events[1].data.text"]
    assert fields["kinds"] == {"email": 1, "card": 1}
    logged = json.dumps(fields)
    assert EMAIL not in logged
    assert CARD not in logged


def test_alarm_limits_warnings_per_session():
    logger = RecordingLogger()
    alarm = LeakAlarm(logger=logger, warn_interval_seconds=60)
    before = leaks("email")
    for seq in range(3):
        alarm.check(project_id="demo", session_id="s-2", seq=seq, events=[input_event(EMAIL)])
    alarm.check(project_id="demo", session_id="s-3", seq=0, events=[input_event(EMAIL)])

    assert leaks("email") == before + 4
    assert [fields["session_id"] for _, fields in logger.calls] == ["s-2", "s-3"]


def test_alarm_quiet_for_masked_batch():
    logger = RecordingLogger()
    alarm = LeakAlarm(logger=logger)
    assert alarm.check(project_id="demo", session_id="s-4", seq=0, events=[input_event("*****")]) == []
    assert logger.calls == []


async def test_ingest_counts_leaks(tandem, http):
    started = await start_session(tandem, http)
    before = leaks("email")
    body = {"version": 1, "tabId": "tab-1", "seq": 0, "events": [input_event(f"mail {EMAIL}")]}
    status, _, _ = await post_batch(tandem, http, started["token"], body)
    assert status == 200, "the alarm never rejects a batch"
    assert leaks("email") == before + 1
