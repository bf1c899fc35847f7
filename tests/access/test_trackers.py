"""Session tokens: a tracker writes only to its own session and receives nothing of another session."""

from __future__ import annotations

import asyncio

import pytest
from tandem_runtime.tokens import TokenSigner

from tests.access.conftest import META, SNAPSHOT, Server
from tests.signal.peers import SignalClient

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_token_writes_own_session_only(server: Server):
    first = await server.start("demo-key", tab_id="tab-a")
    second = await server.start("demo-key", tab_id="tab-b")
    status, body, _ = await server.batch(
        first["token"], 0, [META, SNAPSHOT], tab_id="tab-a", sessionID=second["sessionID"]
    )
    assert status == 403, body
    assert body["error"]["code"] == "session_mismatch"
    status, body, _ = await server.batch(first["token"], 0, [META, SNAPSHOT], tab_id="tab-b")
    assert status == 403, body
    assert body["error"]["code"] == "tab_mismatch"


async def test_token_of_other_key_rejected(server: Server):
    forged = TokenSigner(secret_key="another-secret-key-0123456789abcdef").sign_session(
        session_id="0123456789abcdef", project_id="demo", tab_id="tab-1", started_at=0, ttl_seconds=600
    )
    status, body, _ = await server.batch(forged, 0, [META, SNAPSHOT])
    assert status == 401, body
    assert body["error"]["code"] == "invalid_token"


async def test_token_not_resumed_in_other_project(server: Server):
    project = await server.create_project("resume", allowedOrigins=["*"])
    first = await server.start("demo-key")
    body = {"projectKey": project["key"], "tabId": "tab-1", "token": first["token"]}
    status, answer, _ = await server.call("POST", "/ingest/v1/web/start", json=body)
    assert status == 200, answer
    assert answer["resumed"] is False
    assert answer["sessionID"] != first["sessionID"]
    assert answer["projectID"] == project["id"]


async def test_signal_tracker_sees_own_room_only(server: Server):
    mine = await server.start("demo-key", tab_id="tab-mine")
    other = await server.start("demo-key", tab_id="tab-other")
    user_mine = await SignalClient.connect(server.http, server.tandem, {"token": mine["token"]})
    user_other = await SignalClient.connect(server.http, server.tandem, {"token": other["token"]})
    assert user_mine.hello["state"]["sessionId"] == mine["sessionID"]
    agent = await SignalClient.agent(server.http, server.tandem, other["sessionID"], server.agent("hal"))
    await agent.send({"type": "call.request"})
    await user_other.state(lambda state: bool(state["requests"]))
    await asyncio.sleep(0.3)
    for frame in user_mine.frames:
        if frame["type"] == "room.state":
            assert frame["state"]["sessionId"] == mine["sessionID"], frame
        assert other["sessionID"] not in str(frame), frame
    for client in (user_mine, user_other, agent):
        await client.close()


async def test_signal_tracker_cannot_name_other_room(server: Server):
    mine = await server.start("demo-key", tab_id="tab-mine")
    other = await server.start("demo-key", tab_id="tab-other")
    client = await SignalClient.connect(
        server.http, server.tandem, {"token": mine["token"], "projectId": "demo", "sessionId": other["sessionID"]}
    )
    assert not client.hello
    assert (await client.error("forbidden"))["code"] == "forbidden"
