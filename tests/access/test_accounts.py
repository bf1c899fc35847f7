"""Sign-in, its lockout, agent accounts, API tokens and socket tokens."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from tandem_runtime.accounts import ACCOUNT_CACHE_SECONDS, RECHECK_SECONDS

from tests.access.conftest import LOGIN_MAX_FAILURES, LiveClient, Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_login_wrong_password(server: Server):
    status, body, _ = await server.call(
        "POST",
        "/api/v1/auth/login",
        json={"username": "admin", "password": "wrong-password"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert status == 401
    assert body["error"]["code"] == "invalid_credentials"


async def test_login_lockout(server: Server):
    address = {"X-Forwarded-For": "203.0.113.7"}
    wrong = {"username": "admin", "password": "wrong-password"}
    for _ in range(LOGIN_MAX_FAILURES - 1):
        status, _, _ = await server.call("POST", "/api/v1/auth/login", json=wrong, headers=address)
        assert status == 401
    status, body, headers = await server.call("POST", "/api/v1/auth/login", json=wrong, headers=address)
    assert status == 429, body
    assert body["error"]["code"] == "too_many_failed_logins"
    assert int(headers["Retry-After"]) >= 1
    right = {"username": "admin", "password": server.tandem.admin_password}
    status, body, _ = await server.call("POST", "/api/v1/auth/login", json=right, headers=address)
    assert status == 429, "a locked-out address may not sign in even with the right password"
    status, body, _ = await server.call(
        "POST", "/api/v1/auth/login", json=right, headers={"X-Forwarded-For": "203.0.113.8"}
    )
    assert status == 200, "the lockout is per address"


async def test_login_lockout_ignores_spoofed_hops(server: Server):
    """Hops left of the trusted proxy's are the client's own words: they do not pick the locked address."""
    wrong = {"username": "admin", "password": "wrong-password"}
    for spoofed in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        headers = {"X-Forwarded-For": f"{spoofed}, 203.0.113.50"}
        status, _, _ = await server.call("POST", "/api/v1/auth/login", json=wrong, headers=headers)
    assert status == 429


async def test_agent_lifecycle(server: Server):
    name, token = await server.account("carol", role="agent")
    status, me, _ = await server.call("GET", "/api/v1/auth/me", token)
    assert status == 200, me
    assert me["name"] == name
    assert me["role"] == "agent"
    assert me["tokenKind"] == "login"

    status, body, _ = await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"disabled": True})
    assert status == 200, body
    assert body["disabled"] is True
    status, body, _ = await server.login(name, f"password-of-{name}")
    assert status == 401, "a disabled agent cannot sign in"

    status, body, _ = await server.call("GET", "/api/v1/agents", server.admin_token)
    assert status == 200
    listed = next(agent for agent in body["agents"] if agent["name"] == name)
    assert "passwordHash" not in listed
    assert "password_hash" not in listed


async def test_agent_create_checks(server: Server):
    name, _ = await server.account("dave")
    duplicate = {"name": name, "password": "another-long-password", "role": "agent"}
    status, body, _ = await server.call("POST", "/api/v1/agents", server.admin_token, json=duplicate)
    assert status == 409, body
    short = {"name": server.unique("erin"), "password": "short", "role": "agent"}
    status, body, _ = await server.call("POST", "/api/v1/agents", server.admin_token, json=short)
    assert status == 400, body


async def test_last_admin_kept(server: Server):
    status, body, _ = await server.call("PATCH", "/api/v1/agents/admin", server.admin_token, json={"role": "viewer"})
    assert status == 409, body
    assert body["error"]["code"] == "last_admin"


async def test_api_token_lifecycle(server: Server):
    name, login_token = await server.account("frank", role="agent")
    status, created, _ = await server.call("POST", "/api/v1/tokens", login_token, json={"name": "nightly export"})
    assert status == 201, created
    api_token = created["token"]
    assert api_token.startswith("tdm_")

    status, me, _ = await server.call("GET", "/api/v1/auth/me", api_token)
    assert status == 200, me
    assert me["name"] == name
    assert me["tokenKind"] == "api"

    status, listed, _ = await server.call("GET", "/api/v1/tokens", login_token)
    assert [token["id"] for token in listed["tokens"]] == [created["id"]]
    assert "token" not in listed["tokens"][0]
    assert "secretSha256" not in listed["tokens"][0]

    status, body, _ = await server.call("POST", "/api/v1/tokens", api_token, json={"name": "from an API token"})
    assert status == 403, "an API token cannot mint another one"

    status, _, _ = await server.call("DELETE", f"/api/v1/tokens/{created['id']}", login_token)
    assert status == 204
    status, body, _ = await server.call("GET", "/api/v1/auth/me", api_token)
    assert status == 401, body


async def test_api_token_of_others(server: Server):
    _, owner = await server.account("gina")
    _, other = await server.account("hank")
    status, created, _ = await server.call("POST", "/api/v1/tokens", owner, json={"name": "mine"})
    assert status == 201
    status, listed, _ = await server.call("GET", "/api/v1/tokens", other)
    assert created["id"] not in [token["id"] for token in listed["tokens"]]
    status, _, _ = await server.call("DELETE", f"/api/v1/tokens/{created['id']}", other)
    assert status == 404
    status, listed, _ = await server.call("GET", "/api/v1/tokens", server.admin_token)
    assert created["id"] in [token["id"] for token in listed["tokens"]]


async def test_api_token_follows_account(server: Server):
    name, login_token = await server.account("ivan", role="agent")
    status, created, _ = await server.call("POST", "/api/v1/tokens", login_token, json={"name": "script"})
    assert status == 201
    await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"role": "viewer"})
    status, me, _ = await server.call("GET", "/api/v1/auth/me", created["token"])
    assert me["role"] == "viewer", "a token acts with its agent's current role"
    await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"disabled": True})
    status, body, _ = await server.call("GET", "/api/v1/auth/me", created["token"])
    assert status == 401, body


async def test_api_token_narrows_projects(server: Server):
    project = await server.create_project("narrow", allowedOrigins=["*"])
    _, login_token = await server.account("judy", projects=[project["id"]])
    wider = {"name": "too wide", "projects": ["demo"]}
    status, body, _ = await server.call("POST", "/api/v1/tokens", login_token, json=wider)
    assert status == 403, body
    every = {"name": "every project", "projects": ["*"]}
    status, body, _ = await server.call("POST", "/api/v1/tokens", login_token, json=every)
    assert status == 403, body


async def test_socket_token_from_api_token(server: Server):
    _, login_token = await server.account("kate")
    status, created, _ = await server.call("POST", "/api/v1/tokens", login_token, json={"name": "bot"})
    assert status == 201
    status, exchanged, _ = await server.call(
        "POST", "/api/v1/auth/socket-token", created["token"], json={"projectId": "demo"}
    )
    assert status == 200, exchanged
    assert exchanged["projectId"] == "demo"
    live = await LiveClient.connect(server, exchanged["token"])
    hello = await live.next("hello")
    assert hello["agentId"].startswith("agent-kate")
    await live.close()


async def test_socket_token_not_renewable(server: Server):
    status, first, _ = await server.call(
        "POST", "/api/v1/auth/socket-token", server.admin_token, json={"projectId": "demo"}
    )
    assert status == 200, first
    status, body, _ = await server.call("POST", "/api/v1/auth/socket-token", first["token"], json={"projectId": "demo"})
    assert status == 403, body
    status, body, _ = await server.call("POST", "/api/v1/tokens", first["token"], json={"name": "from a socket token"})
    assert status == 403, body


async def close_reason(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> str:
    """Read frames until the server closes the socket; return the reason it gave."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.CLOSE:
                return message.extra or ""
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ""


async def test_disabled_agent_loses_sockets(server: Server):
    """Disabling an account ends its login and socket tokens and closes its open sockets within seconds."""
    name, login_token = await server.account("mallory")
    demo = {"projectId": "demo"}
    status, exchanged, _ = await server.call("POST", "/api/v1/auth/socket-token", login_token, json=demo)
    assert status == 200, exchanged
    live = await server.http.ws_connect(server.live_ws)
    await live.send_json({"type": "auth", "token": exchanged["token"]})
    assert (await live.receive_json(timeout=5))["type"] == "hello"
    assist = await server.http.ws_connect(server.signal_ws)
    await assist.send_json({"type": "auth", "token": login_token, "projectId": "demo", "sessionId": "s-mallory"})
    assert (await assist.receive_json(timeout=5))["type"] != "error"

    status, body, _ = await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"disabled": True})
    assert status == 200, body
    status, body, _ = await server.call("GET", "/api/v1/auth/me", login_token)
    assert status == 401, body
    assert body["error"]["code"] == "invalid_token"
    status, body, _ = await server.call("POST", "/api/v1/auth/socket-token", login_token, json=demo)
    assert status == 401, body

    closing = ACCOUNT_CACHE_SECONDS + RECHECK_SECONDS + 5
    assert await close_reason(live, closing) == "agent_disabled"
    assert await close_reason(assist, closing) == "agent_disabled"
    again = await LiveClient.connect(server, exchanged["token"])
    error = await again.next("error")
    assert error["code"] == "invalid_token", "the socket token, though unexpired, no longer opens a socket"
    await again.close()


async def test_login_lockout_concurrent(server: Server):
    """Wrong passwords sent all at once get no more tries than sent one by one."""
    address = {"X-Forwarded-For": "203.0.113.90"}
    wrong = {"username": "admin", "password": "wrong-password"}
    answers = await asyncio.gather(
        *(server.call("POST", "/api/v1/auth/login", json=wrong, headers=address) for _ in range(4 * LOGIN_MAX_FAILURES))
    )
    statuses = sorted(status for status, _, _ in answers)
    # A wrong password gets 429 instead of 401 when another attempt locked the address meanwhile.
    assert statuses.count(401) <= LOGIN_MAX_FAILURES - 1, statuses
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) >= len(statuses) - (LOGIN_MAX_FAILURES - 1), statuses
    right = {"username": "admin", "password": server.tandem.admin_password}
    status, body, _ = await server.call("POST", "/api/v1/auth/login", json=right, headers=address)
    assert status == 429, body


async def test_enabled_again_old_tokens_dead(server: Server):
    """Enabling an account again, or a new password, does not bring back the tokens issued before."""
    name, old_token = await server.account("oscar")
    await asyncio.sleep(1.1)  # Tokens carry whole seconds: change the account in a later one.
    await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"disabled": True})
    status, body, _ = await server.call("PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"disabled": False})
    assert status == 200, body
    status, body, _ = await server.call("GET", "/api/v1/auth/me", old_token)
    assert status == 401, body
    status, body, _ = await server.login(name, f"password-of-{name}")
    assert status == 200, body
    new_token = body["token"]
    status, body, _ = await server.call("GET", "/api/v1/auth/me", new_token)
    assert status == 200, body
    await asyncio.sleep(1.1)

    status, body, _ = await server.call(
        "PATCH", f"/api/v1/agents/{name}", server.admin_token, json={"password": "another-password-123"}
    )
    assert status == 200, body
    status, body, _ = await server.call("GET", "/api/v1/auth/me", new_token)
    assert status == 401, "a new password ends the tokens signed in with the old one"


async def test_lockout_unparsable_hop(server: Server):
    """Hops a trusted proxy wrote that are not addresses share one count, not the proxy's own."""
    wrong = {"username": "admin", "password": "wrong-password"}
    for hop in ("unknown", "198.51.100.20:443", "not an address"):
        status, _, _ = await server.call("POST", "/api/v1/auth/login", json=wrong, headers={"X-Forwarded-For": hop})
    assert status == 429
    right = {"username": "admin", "password": server.tandem.admin_password}
    status, body, _ = await server.call("POST", "/api/v1/auth/login", json=right)
    assert status == 200, "the proxy's own address is not locked"
