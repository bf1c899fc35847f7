"""Viewing consent (sessionConfirm): no live data reaches an agent before the user accepts."""

from __future__ import annotations

import asyncio

import pytest
from tandem_protocol import subjects

from tests.access.conftest import WATCH_CONSENT_TIMEOUT_SECONDS, LiveClient, Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def confirming_session(server: Server, project: dict | None = None, tab_id: str = "tab-1") -> dict:
    """Start a session of a project with sessionConfirm (a new one unless given), with one page sent."""
    project = project or await server.create_project("confirm", allowedOrigins=["*"], sessionConfirm=True)
    started = await server.start(project["key"], tab_id=tab_id)
    started["projectKey"] = project["key"]
    assert started["sessionConfirm"] is True
    await server.page(started["token"], tab_id=tab_id)
    await asyncio.sleep(0.3)  # the live registry follows the bucket asynchronously
    return started


async def poll(server: Server, token: str, wait: float = 0) -> dict:
    status, body, _ = await server.call("GET", f"/ingest/v1/web/consent?wait={wait}", token)
    assert status == 200, body
    return body


async def answer(server: Server, token: str, **fields) -> tuple[int, dict]:
    status, body, _ = await server.call("POST", "/ingest/v1/web/consent", token, json=fields)
    return status, body


async def watching(server: Server, session_id: str, prefix: str = "agent") -> LiveClient:
    live = await LiveClient.connect(server, server.agent(prefix))
    await live.next("hello")
    await live.send({"type": "watch", "sessionId": session_id})
    return live


async def test_watch_waits_for_accept(server: Server):
    started = await confirming_session(server)
    live = await watching(server, started["sessionID"], "ana")
    pending = await live.next("watch.pending")
    await asyncio.sleep(0.5)
    assert not live.seen("events"), "no event before the user accepts"
    assert not live.seen("watch.started")

    consent = await poll(server, started["token"])
    assert consent["state"] == "pending"
    assert consent["request"]["requestId"] == pending["requestId"]
    assert consent["request"]["agentName"].startswith("ana")
    status, body = await answer(server, started["token"], requestId=pending["requestId"], accepted=True)
    assert status == 200, body
    assert body["state"] == "accepted"

    await live.next("watch.started")
    events = await live.next("events")
    assert events["events"][0]["type"] == 4
    await live.close()


async def test_consent_covers_later_agents(server: Server):
    started = await confirming_session(server)
    first = await watching(server, started["sessionID"], "bea")
    pending = await first.next("watch.pending")
    await answer(server, started["token"], requestId=pending["requestId"], accepted=True)
    await first.next("watch.started")
    second = await watching(server, started["sessionID"], "cid")
    await second.next("watch.started")
    assert not second.seen("watch.pending")

    status, body = await answer(server, started["token"], accepted=False)
    assert status == 200, body
    assert body["state"] == "declined"
    for live in (first, second):
        stopped = await live.next("watch.stopped")
        assert stopped["reason"] == "consent_withdrawn"
        await live.close()


async def test_watch_declined(server: Server):
    started = await confirming_session(server)
    live = await watching(server, started["sessionID"], "dan")
    pending = await live.next("watch.pending")
    status, _ = await answer(server, started["token"], requestId=pending["requestId"], accepted=False)
    assert status == 200
    error = await live.next("error")
    assert error["code"] == "consent_declined"
    await asyncio.sleep(0.3)
    assert not live.seen("events")
    status, body = await answer(server, started["token"], requestId=pending["requestId"], accepted=True)
    assert status == 409, "an answered request cannot be answered again"
    assert body["error"]["code"] == "request_closed"
    await live.close()


async def test_watch_request_expires(server: Server):
    started = await confirming_session(server)
    live = await watching(server, started["sessionID"], "eve")
    pending = await live.next("watch.pending")
    error = await live.next("error", timeout=WATCH_CONSENT_TIMEOUT_SECONDS + 5)
    assert error["code"] == "consent_timeout"
    assert not live.seen("events")
    status, body = await answer(server, started["token"], requestId=pending["requestId"], accepted=True)
    assert status == 409, body
    await live.close()


async def test_poll_waits_for_request(server: Server):
    started = await confirming_session(server)
    polling = asyncio.create_task(poll(server, started["token"], wait=10))
    await asyncio.sleep(0.5)
    assert not polling.done()
    live = await watching(server, started["sessionID"], "fay")
    pending = await live.next("watch.pending")
    consent = await asyncio.wait_for(polling, timeout=5)
    assert consent["request"]["requestId"] == pending["requestId"]
    await live.close()


async def test_poll_without_confirm(server: Server):
    started = await server.start("demo-key")
    consent = await asyncio.wait_for(poll(server, started["token"], wait=20), timeout=5)
    assert consent["sessionConfirm"] is False
    assert consent["request"] is None


async def test_other_session_cannot_answer(server: Server):
    started = await confirming_session(server)
    other = await confirming_session(server, {"key": started["projectKey"]}, tab_id="tab-other")
    live = await watching(server, started["sessionID"], "gus")
    pending = await live.next("watch.pending")
    assert (await poll(server, other["token"]))["request"] is None, "a tracker never sees another session's request"
    status, body = await answer(server, other["token"], requestId=pending["requestId"], accepted=True)
    assert status == 409, body
    await asyncio.sleep(0.3)
    assert not live.seen("watch.started")
    await live.close()


async def test_watch_without_project_refused(server: Server):
    """A session whose project is gone is never shown, since its consent setting is unknown."""
    started = await confirming_session(server)
    kv = await server.tandem.nc.jetstream().key_value(subjects.PROJECTS_BUCKET)
    await kv.delete(started["projectKey"])
    live = await watching(server, started["sessionID"], "hal")
    error = await live.next("error")
    assert error["code"] == "unknown_project"
    await asyncio.sleep(0.3)
    assert not live.seen("watch.started")
    assert not live.seen("events")
    await live.close()
