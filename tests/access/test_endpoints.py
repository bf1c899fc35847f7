"""Every HTTP and WebSocket endpoint: 401 without credentials, 403 for a role or project it does not grant."""

from __future__ import annotations

import pytest

from tests.access.conftest import LiveClient, Server
from tests.signal.peers import SignalClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGENT_ENDPOINTS = [
    ("GET", "/api/v1/sessions?projectId=demo"),
    ("GET", "/api/v1/sessions/0123456789abcdef"),
    ("GET", "/api/v1/sessions/0123456789abcdef/events"),
    ("GET", "/api/v1/sessions/0123456789abcdef/export"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/projects/demo"),
    ("PATCH", "/api/v1/projects/demo"),
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents"),
    ("PATCH", "/api/v1/agents/admin"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/abc"),
    ("GET", "/api/v1/audit"),
    ("GET", "/api/v1/audit/totals"),
    ("POST", "/api/v1/auth/socket-token"),
    ("GET", "/api/v1/auth/me"),
    ("GET", "/live/v1/sessions?projectId=demo"),
]
TRACKER_ENDPOINTS = [
    ("POST", "/ingest/v1/web/i"),
    ("GET", "/ingest/v1/web/consent"),
    ("POST", "/ingest/v1/web/consent"),
]
ADMIN_ENDPOINTS = [
    ("GET", "/api/v1/projects", None),
    ("POST", "/api/v1/projects", {"id": "viewer-made"}),
    ("GET", "/api/v1/projects/demo", None),
    ("PATCH", "/api/v1/projects/demo", {"sampleRate": 0.5}),
    ("GET", "/api/v1/agents", None),
    ("POST", "/api/v1/agents", {"name": "mallory", "password": "a-long-password", "role": "admin"}),
    ("PATCH", "/api/v1/agents/admin", {"disabled": True}),
    ("GET", "/api/v1/audit", None),
    ("GET", "/api/v1/audit/totals", None),
]


async def test_http_without_credentials(server: Server):
    for method, path in AGENT_ENDPOINTS + TRACKER_ENDPOINTS:
        status, body, _ = await server.call(method, path, json={})
        assert status == 401, (method, path, body)
        assert body["error"]["code"] == "missing_token", (method, path, body)


async def test_http_with_forged_token(server: Server):
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJ0eXAiOiJhZ2VudCJ9.c2lnbmF0dXJl"
    for method, path in AGENT_ENDPOINTS + TRACKER_ENDPOINTS:
        status, body, _ = await server.call(method, path, forged, json={})
        assert status == 401, (method, path, body)
        assert body["error"]["code"] == "invalid_token", (method, path, body)


async def test_http_unknown_api_token(server: Server):
    for method, path in AGENT_ENDPOINTS:
        status, body, _ = await server.call(method, path, "tdm_0000_notatoken", json={})
        assert status == 401, (method, path, body)


async def test_tracker_token_not_agent(server: Server):
    started = await server.start("demo-key")
    for method, path in AGENT_ENDPOINTS:
        status, body, _ = await server.call(method, path, started["token"], json={})
        assert status == 401, (method, path, body)


async def test_admin_routes_reject_others(server: Server):
    viewer = server.agent("vera", role="viewer")
    agent = server.agent("ada", role="agent")
    for token in (viewer, agent):
        for method, path, body in ADMIN_ENDPOINTS:
            status, answer, _ = await server.call(method, path, token, json=body)
            assert status == 403, (method, path, answer)
            assert answer["error"]["code"] == "forbidden"


async def test_live_socket_without_credentials(server: Server):
    for first in ({"type": "watch", "sessionId": "x"}, {"type": "auth"}, {"type": "auth", "token": "garbage"}):
        ws = await server.http.ws_connect(server.live_ws)
        await ws.send_json(first)
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "error"
        assert frame["code"] in ("auth_required", "invalid_token"), frame
        await ws.receive(timeout=5)
        assert ws.close_code == 1008


async def test_sockets_reject_api_token(server: Server):
    status, created, _ = await server.call("POST", "/api/v1/tokens", server.admin_token, json={"name": "ci"})
    assert status == 201, created
    live = await LiveClient.connect(server, created["token"])
    error = await live.next("error")
    assert error["code"] == "invalid_token"
    assert "socket-token" in error["message"]
    signal = await SignalClient.connect(
        server.http, server.tandem, {"token": created["token"], "projectId": "demo", "sessionId": "s1"}
    )
    assert not signal.hello
    assert (await signal.error("invalid_token"))["code"] == "invalid_token"


async def test_signal_socket_without_credentials(server: Server):
    for auth in ({"token": "garbage", "projectId": "demo", "sessionId": "s1"}, {"token": "x"}):
        client = await SignalClient.connect(server.http, server.tandem, auth)
        assert not client.hello
        error = await client.next("error")
        assert error["code"] in ("invalid_token", "auth_required"), error
        await client.close()


async def test_viewer_may_not_watch(server: Server):
    viewer = server.agent("vera", role="viewer")
    started = await server.start("demo-key")
    await server.page(started["token"])
    live = await LiveClient.connect(server, viewer)
    await live.next("hello")
    await live.send({"type": "watch", "sessionId": started["sessionID"]})
    error = await live.next("error")
    assert error["code"] == "forbidden"
    assert "viewer" in error["message"]
    assert not live.seen("events")
    assert not live.seen("watch.started")


async def test_viewer_may_not_assist(server: Server):
    viewer = server.agent("vera", role="viewer")
    started = await server.start("demo-key")
    user = await SignalClient.connect(server.http, server.tandem, {"token": started["token"]})
    assert user.hello
    agent = await SignalClient.agent(server.http, server.tandem, started["sessionID"], viewer)
    for kind in ("call.request", "control.request"):
        await agent.send({"type": kind})
        error = await agent.error("forbidden")
        assert "viewer" in error["message"]
    assert not [frame for frame in user.frames if frame["type"] == "room.state" and frame["state"]["requests"]]


async def test_viewer_may_replay(server: Server):
    viewer = server.agent("vera", role="viewer")
    status, body, _ = await server.call("GET", "/api/v1/sessions?projectId=demo", viewer)
    assert status == 200, body
    status, body, _ = await server.call("GET", "/live/v1/sessions?projectId=demo", viewer)
    assert status == 200, body


@pytest.mark.parametrize("kind", ["login", "api"])
async def test_project_scope_http(server: Server, kind: str):
    a = (await server.create_project("shop-a", allowedOrigins=["*"]))["id"]
    b = (await server.create_project("shop-b", allowedOrigins=["*"]))["id"]
    _, token = await server.account("alice", projects=[a])
    if kind == "api":
        status, created, _ = await server.call("POST", "/api/v1/tokens", token, json={"name": "script"})
        assert status == 201, created
        token = created["token"]
    for path in (f"/api/v1/sessions?projectId={a}", f"/live/v1/sessions?projectId={a}"):
        status, body, _ = await server.call("GET", path, token)
        assert status == 200, (path, body)
    for path in (f"/api/v1/sessions?projectId={b}", f"/live/v1/sessions?projectId={b}"):
        status, body, _ = await server.call("GET", path, token)
        assert status == 403, (path, body)
        assert body["error"]["code"] == "forbidden"
    status, body, _ = await server.call("POST", "/api/v1/auth/socket-token", token, json={"projectId": b})
    assert status == 403, body


async def test_project_scope_live_socket(server: Server):
    project_b = await server.create_project("shop-b", allowedOrigins=["*"])
    a = (await server.create_project("shop-a", allowedOrigins=["*"]))["id"]
    token = server.agent("alice", projects=[a])
    started = await server.start(project_b["key"])
    await server.page(started["token"])
    live = await LiveClient.connect(server, token)
    await live.next("hello")
    await live.send({"type": "list.subscribe", "projectId": project_b["id"]})
    assert (await live.next("error"))["code"] == "forbidden"
    await live.send({"type": "watch", "sessionId": started["sessionID"]})
    assert (await live.next("error"))["code"] == "forbidden"
    assert not live.seen("events")
    assert not live.seen("list.snapshot")


async def test_project_scope_signal_socket(server: Server):
    a = (await server.create_project("shop-a", allowedOrigins=["*"]))["id"]
    token = server.agent("alice", projects=[a])
    client = await SignalClient.connect(
        server.http, server.tandem, {"token": token, "projectId": "demo", "sessionId": "s1"}
    )
    assert not client.hello
    assert (await client.error("forbidden"))["code"] == "forbidden"


async def test_socket_token_scoped_to_project(server: Server):
    a = (await server.create_project("shop-a", allowedOrigins=["*"]))["id"]
    status, body, _ = await server.call("POST", "/api/v1/auth/socket-token", server.admin_token, json={"projectId": a})
    assert status == 200, body
    live = await LiveClient.connect(server, body["token"])
    await live.next("hello")
    await live.send({"type": "list.subscribe", "projectId": "demo"})
    assert (await live.next("error"))["code"] == "forbidden"
    await live.send({"type": "list.subscribe", "projectId": a})
    assert (await live.next("list.snapshot"))["projectId"] == a
