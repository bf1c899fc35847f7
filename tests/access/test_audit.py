"""The audit trail: a whole assist visit (watch, call, control) lands in ClickHouse with its durations."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.access.conftest import LiveClient, Server
from tests.signal.peers import SignalClient, grant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOLD_SECONDS = 0.6


async def audit_events(server: Server, query: str, count: int, timeout: float = 20.0) -> list[dict]:
    """Poll the audit API until it returns at least `count` events for `query`; return them oldest first."""
    deadline = time.monotonic() + timeout
    while True:
        status, body, _ = await server.call("GET", f"/api/v1/audit?{query}&limit=1000", server.admin_token)
        assert status == 200, body
        if len(body["events"]) >= count or time.monotonic() > deadline:
            return sorted(body["events"], key=lambda event: (event["at"], event["kind"]))
        await asyncio.sleep(0.2)


def one(events: list[dict], kind: str, **where) -> dict:
    found = [e for e in events if e["kind"] == kind and all(e.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (kind, where, [e["kind"] for e in events])
    return found[0]


async def test_assist_visit_recorded(server: Server):
    started = await server.start("demo-key", tab_id="tab-visit")
    await server.page(started["token"], tab_id="tab-visit")
    await asyncio.sleep(0.3)
    session_id = started["sessionID"]
    token = server.agent("auditee")

    visit_started = time.monotonic()
    live = await LiveClient.connect(server, token)
    await live.next("hello")
    await live.send({"type": "watch", "sessionId": session_id})
    await live.next("watch.started")

    user = await SignalClient.connect(server.http, server.tandem, {"token": started["token"]})
    agent = await SignalClient.agent(server.http, server.tandem, session_id, token)
    state = await grant(user, agent, "call")
    call_started = time.monotonic()
    await asyncio.sleep(HOLD_SECONDS)
    await agent.send({"type": "call.end", "callId": state["call"]["callId"]})
    await agent.next("call.ended")
    call_seconds = time.monotonic() - call_started

    await grant(user, agent, "control")
    control_started = time.monotonic()
    await asyncio.sleep(HOLD_SECONDS)
    await agent.send({"type": "control.release"})
    await agent.next("control.ended")
    control_seconds = time.monotonic() - control_started

    await live.send({"type": "unwatch", "sessionId": session_id})
    await live.next("watch.stopped")
    visit_seconds = time.monotonic() - visit_started
    for client in (live, user, agent):
        await client.close()

    events = await audit_events(server, f"session={session_id}", count=12)
    kinds = [event["kind"] for event in events]
    assert kinds[0] == "watch.started", kinds
    assert kinds[-1] == "watch.stopped", kinds
    for kind in ("call.started", "call.joined", "call.left", "call.ended", "control.started", "control.ended"):
        assert kind in kinds, kinds
    assert len([e for e in events if e["kind"] == "consent.answered" and e["outcome"] == "accepted"]) == 2

    call = one(events, "call.ended")
    assert HOLD_SECONDS * 1000 <= call["durationMs"] <= (call_seconds + 0.5) * 1000, call
    assert one(events, "call.left")["durationMs"] == call["durationMs"]
    control = one(events, "control.ended")
    assert HOLD_SECONDS * 1000 <= control["durationMs"] <= (control_seconds + 0.5) * 1000, control
    watch = one(events, "watch.stopped")
    assert call["durationMs"] + control["durationMs"] <= watch["durationMs"] <= visit_seconds * 1000, watch
    assert watch["watchId"] == one(events, "watch.started")["watchId"]
    for answered in [e for e in events if e["kind"] == "consent.answered"]:
        assert 0 <= answered["durationMs"] < 5000, answered

    agent_name = call["agentName"]
    status, totals, _ = await server.call("GET", f"/api/v1/audit/totals?agent={agent_name}", server.admin_token)
    assert status == 200, totals
    (row,) = totals["agents"]
    assert row["agentName"] == agent_name
    assert (row["watches"], row["calls"], row["controls"]) == (1, 1, 1)
    assert row["watchMs"] == watch["durationMs"]
    assert row["callMs"] == call["durationMs"]
    assert row["controlMs"] == control["durationMs"]
    assert row["consentAccepted"] == 2


async def test_viewing_consent_recorded(server: Server):
    project = await server.create_project("audited", allowedOrigins=["*"], sessionConfirm=True)
    started = await server.start(project["key"])
    await server.page(started["token"])
    await asyncio.sleep(0.3)
    live = await LiveClient.connect(server, server.agent("asker"))
    await live.next("hello")
    await live.send({"type": "watch", "sessionId": started["sessionID"]})
    pending = await live.next("watch.pending")
    answer = {"requestId": pending["requestId"], "accepted": True}
    status, body, _ = await server.call("POST", "/ingest/v1/web/consent", started["token"], json=answer)
    assert status == 200, body
    await live.next("watch.started")
    await live.close()

    events = await audit_events(server, f"project={project['id']}", count=4)
    requested = one(events, "consent.requested")
    answered = one(events, "consent.answered")
    assert requested["consentKind"] == answered["consentKind"] == "watch"
    assert answered["outcome"] == "accepted"
    assert answered["requestId"] == pending["requestId"]
    assert answered["durationMs"] is not None
    one(events, "watch.started")
    stopped = one(events, "watch.stopped")
    assert stopped["reason"] == "disconnected"


async def test_audit_filters(server: Server):
    status, body, _ = await server.call("GET", "/api/v1/audit?from=2030-01-01&to=2020-01-01", server.admin_token)
    assert status == 400, body
    status, body, _ = await server.call("GET", "/api/v1/audit?from=2999-01-01", server.admin_token)
    assert status == 200, body
    assert body["events"] == []
    assert body["total"] == 0
    status, body, _ = await server.call("GET", "/api/v1/audit?agent=nobody-at-all", server.admin_token)
    assert body["events"] == []
