"""Projects: their administration, allowed origins, sampling, the ingest rate limit and retention."""

from __future__ import annotations

import pytest
from tandem_sessions.api import RUNTIME

from tests.access.conftest import META, SHOP_ORIGIN, SNAPSHOT, Server
from tests.signal.peers import SignalClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVIL_ORIGIN = "https://evil.example.net"


async def test_project_create_and_list(server: Server):
    project = await server.create_project(
        "store", allowedOrigins=["https://Store.example.com/"], sampleRate=0.25, retentionDays=30
    )
    assert project["allowedOrigins"] == ["https://store.example.com"]
    assert len(project["key"]) >= 16
    status, body, _ = await server.call("GET", "/api/v1/projects", server.admin_token)
    assert status == 200
    assert project["id"] in [listed["id"] for listed in body["projects"]]
    status, body, _ = await server.call("POST", "/api/v1/projects", server.admin_token, json={"id": project["id"]})
    assert status == 409, body


async def test_project_rejects_bad_origin(server: Server):
    bad = {"id": server.unique("bad"), "allowedOrigins": ["https://shop.example.com/checkout"]}
    status, body, _ = await server.call("POST", "/api/v1/projects", server.admin_token, json=bad)
    assert status == 400, body
    assert "allowedOrigins" in body["error"]["message"]


async def test_project_update(server: Server):
    project = await server.create_project("patch")
    status, body, _ = await server.call(
        "PATCH", f"/api/v1/projects/{project['id']}", server.admin_token, json={"sessionConfirm": True}
    )
    assert status == 200, body
    assert body["sessionConfirm"] is True
    assert body["key"] == project["key"]
    status, body, _ = await server.call("PATCH", "/api/v1/projects/no-such-project", server.admin_token, json={})
    assert status == 404


async def test_tracker_origin_allowed(server: Server):
    project = await server.create_project("cors", allowedOrigins=[SHOP_ORIGIN, "https://*.example.org"])
    for origin in (SHOP_ORIGIN, "https://www.example.org"):
        status, body, headers = await server.start_raw(project["key"], origin=origin)
        assert status == 200, (origin, body)
        assert headers["Access-Control-Allow-Origin"] == origin
        status, body, headers = await server.batch(body["token"], 0, [META, SNAPSHOT], origin=origin)
        assert status == 200, (origin, body)
        assert headers["Access-Control-Allow-Origin"] == origin


async def test_tracker_origin_rejected(server: Server):
    project = await server.create_project("cors", allowedOrigins=[SHOP_ORIGIN])
    for origin in (EVIL_ORIGIN, "https://example.org", "http://shop.example.com", "https://shop.example.com:8443"):
        status, body, headers = await server.start_raw(project["key"], origin=origin)
        assert status == 403, (origin, body)
        assert body["error"]["code"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in headers

    started = await server.start(project["key"], origin=SHOP_ORIGIN)
    status, body, headers = await server.batch(started["token"], 0, [META, SNAPSHOT], origin=EVIL_ORIGIN)
    assert status == 403, body
    assert "Access-Control-Allow-Origin" not in headers
    status, body, _ = await server.call(
        "GET", "/ingest/v1/web/consent", started["token"], headers={"Origin": EVIL_ORIGIN}
    )
    assert status == 403, body


async def test_tracker_preflight(server: Server):
    async with server.http.options(
        server.url + "/ingest/v1/web/start",
        headers={"Origin": EVIL_ORIGIN, "Access-Control-Request-Method": "POST"},
    ) as response:
        assert response.status == 204
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


async def test_signal_tracker_origin(server: Server):
    project = await server.create_project("assist", allowedOrigins=[SHOP_ORIGIN])
    started = await server.start(project["key"])
    ws = await server.http.ws_connect(server.signal_ws, headers={"Origin": EVIL_ORIGIN})
    await ws.send_json({"type": "auth", "token": started["token"]})
    frame = await ws.receive_json(timeout=5)
    assert frame["type"] == "error"
    assert frame["code"] == "origin_not_allowed"
    await ws.receive(timeout=5)
    assert ws.close_code == 1008
    ws = await server.http.ws_connect(server.signal_ws, headers={"Origin": SHOP_ORIGIN})
    await ws.send_json({"type": "auth", "token": started["token"]})
    frame = await ws.receive_json(timeout=5)
    assert frame["type"] == "hello"
    await ws.close()


async def test_agent_socket_origin(server: Server):
    token = server.agent("olga")
    async with server.http.get(
        server.live_ws, headers={"Origin": EVIL_ORIGIN, "Connection": "Upgrade", "Upgrade": "websocket"}
    ) as response:
        assert response.status == 403
    ws = await server.http.ws_connect(server.live_ws, headers={"Origin": server.url})
    await ws.send_json({"type": "auth", "token": token})
    assert (await ws.receive_json(timeout=5))["type"] == "hello"
    await ws.close()
    client = await SignalClient.connect(
        server.http, server.tandem, {"token": token, "projectId": "demo", "sessionId": "s1"}
    )
    assert client.hello, "no Origin header: not a browser page, accepted"
    await client.close()
    ws = await server.http.ws_connect(server.signal_ws, headers={"Origin": EVIL_ORIGIN})
    await ws.send_json({"type": "auth", "token": token, "projectId": "demo", "sessionId": "s1"})
    frame = await ws.receive_json(timeout=5)
    assert frame["code"] == "origin_not_allowed"


async def test_sampling(server: Server):
    never = await server.create_project("never", allowedOrigins=["*"], sampleRate=0.0)
    status, body, _ = await server.start_raw(never["key"])
    assert status == 200, body
    assert body["record"] is False
    assert body["token"] == ""
    half = await server.create_project("half", allowedOrigins=["*"], sampleRate=0.5)
    answers = [(await server.start(half["key"], tab_id=f"tab-{n}"))["record"] for n in range(40)]
    assert 5 < sum(answers) < 35, answers
    again = [(await server.start(half["key"], tab_id=f"tab-{n}"))["record"] for n in range(40)]
    assert again == answers, "a tab gets the same answer on every page load"


async def test_ingest_rate_limit(server: Server):
    status, body, _ = await server.call(
        "POST", "/api/v1/projects", server.admin_token, json={"id": "throttled", "allowedOrigins": ["*"]}
    )
    assert status == 201, body
    statuses = []
    for n in range(4):
        status, answer, headers = await server.start_raw(body["key"], tab_id=f"tab-{n}")
        statuses.append(status)
    assert statuses[:2] == [200, 200], "a burst of twice the rate passes"
    assert 429 in statuses[2:]
    assert answer["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) >= 1
    status, _, _ = await server.start_raw("demo-key")
    assert status == 200, "the limit is per project"


async def test_retention_ttl(server: Server):
    project = await server.create_project("kept", allowedOrigins=["*"])
    status, body, _ = await server.call(
        "PATCH", f"/api/v1/projects/{project['id']}", server.admin_token, json={"retentionDays": 7}
    )
    assert status == 200, body
    db = server.sessions_app()[RUNTIME].store.db
    rows = await db.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name IN ('sessions', 'session_batches', 'session_events', 'replay_chunks')"
    )
    assert len(rows) == 4
    for name, engine in rows:
        assert f"project_id = '{project['id']}', 7" in engine, (name, engine)
        assert "WHERE project_id IN" in engine, (name, engine)
