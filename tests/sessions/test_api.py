"""The recorded-session API of the all-in-one server: tracker batches in, search, timeline, event pages, export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from tandem_runtime import bus
from tandem_runtime.directory import AgentDirectory

from tests.conftest import RunningTandem, start_tandem
from tests.sessions import builders as b
from tests.sessions.conftest import wait_for

FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningTandem]:
    # A session ends after 2 s without data here, and the end pass runs twice a second.
    monkeypatch.setenv("TANDEM_SESSION_INACTIVITY_SECONDS", "2")
    monkeypatch.setenv("TANDEM_LIFECYCLE_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("TANDEM_CONSUMER_FETCH_TIMEOUT_SECONDS", "0.2")
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


@pytest.fixture
async def token(server: RunningTandem, http: aiohttp.ClientSession) -> str:
    return await server.agent_token(http)


async def record(server: RunningTandem, http: aiohttp.ClientSession, *, user: str, batches: list[list[dict]]) -> str:
    """Start a session through the tracker API and post each list of events as one batch; return its id."""
    body = {"projectKey": "demo-key", "tabId": "tab-1", "userID": user, "url": "http://shop.test/"}
    async with http.post(
        f"{server.url}/ingest/v1/web/start", json=body, headers={"User-Agent": FIREFOX_UA}
    ) as response:
        assert response.status == 200, await response.text()
        started = await response.json()
    for seq, events in enumerate(batches):
        payload = {"tabId": "tab-1", "seq": seq, "events": events}
        headers = {"Authorization": f"Bearer {started['token']}"}
        async with http.post(f"{server.url}/ingest/v1/web/i", json=payload, headers=headers) as response:
            assert response.status == 200, await response.text()
    return started["sessionID"]


async def get(http, url: str, token: str | None, **params) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, params=params, headers=headers) as response:
        return response.status, await response.json()


def shop_visit() -> list[list[dict]]:
    t = b.BASE_MS
    return [
        [b.meta(t), b.snapshot(t + 1, "Products"), b.page(t + 2, "http://shop.test/")],
        [b.click(t + 1000, "Add to cart", "[data-testid=add-to-cart-1]"), b.text_change(t + 1001, "Cart: 1")],
        [b.mouse_move(t + 2000 + i) for i in range(5)],
        [b.error(t + 3000, "TypeError: total is NaN"), b.text_change(t + 3001, "Cart: 2")],
    ]


async def search(server, http, token, q: str, **params) -> list[dict]:
    status, body = await get(http, f"{server.url}/api/v1/sessions", token, projectId="demo", q=q, **params)
    assert status == 200, body
    return body["sessions"]


async def test_api_search_finds_recorded(server, http, token):
    session_id = await record(server, http, user="api-alice", batches=shop_visit())

    async def found() -> list[dict]:
        sessions = await search(server, http, token, 'user:api-alice clicked:"add to cart" then error:TypeError')
        # The summary row follows the event rows by one write: wait until it counts every event.
        return [s for s in sessions if s["events"] == sum(len(events) for events in shop_visit())]

    sessions = await wait_for(found, what="the session in search results")
    assert [s["sessionId"] for s in sessions] == [session_id]
    assert sessions[0]["browser"] == "Firefox"
    assert sessions[0]["clicks"] == 1
    assert sessions[0]["errors"] == 1
    assert await search(server, http, token, "user:api-alice browser:chrome") == []


async def test_api_session_markers(server, http, token):
    session_id = await record(server, http, user="api-bob", batches=shop_visit())
    await wait_for(lambda: search(server, http, token, "user:api-bob errors>0"), what="the session stored")
    status, body = await get(http, f"{server.url}/api/v1/sessions/{session_id}", token)
    assert status == 200
    assert body["session"]["userId"] == "api-bob"
    kinds = [(marker["kind"], marker.get("text")) for marker in body["markers"]]
    assert kinds == [("page", "Shop"), ("click", "Add to cart"), ("error", "TypeError: total is NaN")]


async def test_api_events_paging_and_export(server, http, token):
    visit = shop_visit()
    session_id = await record(server, http, user="api-carol", batches=visit)
    await wait_for(lambda: search(server, http, token, "user:api-carol errors>0"), what="the session stored")

    pages, after = [], None
    while True:
        params = {"limit": "4"} | ({"after": after} if after else {})
        status, body = await get(http, f"{server.url}/api/v1/sessions/{session_id}/events", token, **params)
        assert status == 200, body
        pages.append(len(body["events"]))
        after = body["next"]
        if after is None:
            break
    expected = [event for events in visit for event in events]
    assert pages == [3, 2, 5, 2]

    async with http.get(
        f"{server.url}/api/v1/sessions/{session_id}/export", headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200
        exported = orjson.loads(await response.read())
    assert exported == expected


async def test_api_session_ends(server, http, token):
    session_id = await record(server, http, user="api-dave", batches=shop_visit()[:1])

    async def ended() -> bool:
        status, body = await get(http, f"{server.url}/api/v1/sessions/{session_id}", token)
        return status == 200 and body["session"]["ended"]

    await wait_for(ended, what="the session marked ended after 2 s without data")


@pytest.mark.parametrize(
    ("q", "position"),
    [("user:", 5), ('clicked:"x', 8), ("user:a )", 7), ("colour:red", 0)],
)
async def test_api_bad_query(server, http, token, q, position):
    status, body = await get(http, f"{server.url}/api/v1/sessions", token, projectId="demo", q=q)
    assert status == 400
    assert body["error"]["code"] == "invalid_query"
    assert body["error"]["details"]["position"] == position
    assert f"position {position}" in body["error"]["message"]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"sort": "bogus"}, "sort"), ({"limit": "0"}, "limit"), ({"from": "yesterday"}, "from"), ({}, "projectId")],
)
async def test_api_bad_parameter(server, http, token, params, parameter):
    query = {"projectId": "demo", **params} if parameter != "projectId" else {}
    status, body = await get(http, f"{server.url}/api/v1/sessions", token, **query)
    assert status == 400
    assert body["error"]["details"]["parameter"] == parameter


async def test_api_requires_agent_token(server, http):
    status, body = await get(http, f"{server.url}/api/v1/sessions", None, projectId="demo")
    assert status == 401
    assert body["error"]["code"] == "missing_token"


async def test_api_project_scope(server, http):
    nc = await bus.connect(server.nats_url, name="test-agents")
    try:
        await AgentDirectory(js=nc.jetstream()).create(
            name="scoped", password="scoped-password", role="agent", projects=["other"]
        )
    finally:
        await nc.drain()
    async with http.post(
        f"{server.url}/api/v1/auth/login", json={"username": "scoped", "password": "scoped-password"}
    ) as response:
        scoped_token = (await response.json())["token"]
    status, body = await get(http, f"{server.url}/api/v1/sessions", scoped_token, projectId="demo")
    assert status == 403
    assert body["error"]["code"] == "forbidden"


async def test_api_unknown_session(server, http, token):
    status, body = await get(http, f"{server.url}/api/v1/sessions/nope", token)
    assert status == 404
    assert body["error"]["code"] == "session_not_found"
