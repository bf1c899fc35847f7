"""Search, sort, pagination and facet counts of the live list, and the updates pushed to agents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tandem_live.index import ProjectIndex
from tandem_live.listing import (
    ListingCache,
    ListRequest,
    QuerySyntaxError,
    compile_search,
    list_sessions,
    parse,
    parse_duration,
)
from tandem_protocol import LiveSession, ProtocolError

from tests.live.test_registry import (
    CHROME_UA,
    FIREFOX_UA,
    Stack,
    custom,
    frames_for,
    ids,
    next_frame,
    running_stack,
    wait_for_list,
)

NOW = 1_764_876_600_000


def session(number: int, **fields) -> LiveSession:
    defaults = {
        "session_id": f"s{number:02d}",
        "project_id": "demo",
        "tab_id": f"tab-{number}",
        "started_at": NOW - 60_000 * number,
        "last_seen_at": NOW,
        "browser": "Chrome",
        "os": "Linux",
        "device": "desktop",
        "country": "FR",
    }
    return LiveSession(**{**defaults, **fields})


SESSIONS = [
    session(1, user_id="alice", metadata={"plan": "pro"}, url="https://shop.test/checkout", title="Checkout"),
    session(2, user_id="bob", metadata={"plan": "free"}, browser="Firefox", os="Windows", country="DE"),
    session(3, user_id="carol", metadata={"plan": "pro", "company": "Acme Inc"}, device="mobile", active=False),
    session(4, user_anonymous_id="anon-7", browser="Safari", os="iOS", device="mobile", country="US", city="Boston"),
    session(5, user_id="alice.smith", metadata={"plan": "enterprise"}, language="fr-FR", utm_source="newsletter"),
]
ORDERED = sorted(SESSIONS, key=lambda s: s.started_at)


def matching(query: str) -> set[str]:
    predicate = compile_search(query).predicate
    return {s.user_id or s.user_anonymous_id for s in SESSIONS if predicate(s, NOW)}


@pytest.mark.parametrize(
    ("query", "users"),
    [
        ("", {"alice", "bob", "carol", "anon-7", "alice.smith"}),
        ("user:alice", {"alice"}),
        ("user:ALICE", set()),
        ("user:alice*", {"alice", "alice.smith"}),
        ("browser:chrome", {"alice", "carol", "alice.smith"}),
        ("browser:chrome country:FR meta.plan:pro", {"alice", "carol"}),
        ("meta.plan:pro", {"alice", "carol"}),
        ('metadata.company:"Acme Inc"', {"carol"}),
        ("meta.company:*", {"carol"}),
        ("browser:firefox OR browser:safari", {"bob", "anon-7"}),
        ("(browser:firefox OR browser:safari) -device:mobile", {"bob"}),
        ("NOT country:FR", {"bob", "anon-7"}),
        ("anon:anon-7", {"anon-7"}),
        ("city:boston", {"anon-7"}),
        ("url:checkout", {"alice"}),
        ("url:https://shop.test/*", {"alice"}),
        ("title:CHECK", {"alice"}),
        ("active:false", {"carol"}),
        ("duration>3m", {"anon-7", "alice.smith"}),
        ("duration<=2m", {"alice", "bob"}),
        ("duration>=1h", set()),
        ("utm_source:newsletter", {"alice.smith"}),
        ("language:fr-fr", {"alice.smith"}),
        ("smith", {"alice.smith"}),
        ("enterprise", {"alice.smith"}),
        ('"acme inc"', {"carol"}),
        ("alice AND meta.plan:pro", {"alice"}),
    ],
)
def test_query_matches(query, users):
    assert matching(query) == users


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("foo:bar", "Unknown field 'foo'"),
        ("clicked:Buy", "clicked needs recorded events"),
        ("user:a THEN user:b", "THEN sequences need recorded events"),
        ("event:buy[plan=pro]", "payload filters need recorded events"),
        ("duration:5m", "duration takes a comparison"),
        ("browser>chrome", "browser takes ':'"),
        ("duration>soon", "Invalid duration 'soon'"),
        ("active:maybe", "active takes true or false"),
        ("(user:a", "This '(' is not closed"),
        ("user:a)", "This ')' has no matching '('"),
        ('user:"alice', 'This " string is not closed'),
        ("user:", "user: needs a value"),
        ("OR user:a", "OR needs a filter before it"),
    ],
)
def test_query_rejected(query, reason):
    with pytest.raises(ProtocolError) as caught:
        compile_search(query)
    assert caught.value.code == "invalid_query"
    assert reason.lower() in caught.value.message.lower()
    assert "position" in caught.value.details


def test_parse_error_position():
    with pytest.raises(QuerySyntaxError) as caught:
        parse("user:a (browser:x")
    assert caught.value.position == 7


@pytest.mark.parametrize(
    ("text", "milliseconds"), [("90", 90_000), ("90s", 90_000), ("5m", 300_000), ("1h30m", 5_400_000), ("500ms", 500)]
)
def test_duration_units(text, milliseconds):
    from tandem_live.listing import Term

    assert parse_duration(Term(field="duration", op=">", value=text, position=0)) == milliseconds


def request(**fields) -> ListRequest:
    return ListRequest.from_fields({"projectId": "demo", **fields}, max_limit=100)


def test_sort_and_pages():
    newest = list_sessions(ORDERED, request(), now_ms=NOW)
    assert [s.session_id for s in newest.sessions] == ["s01", "s02", "s03", "s04", "s05"]
    longest = list_sessions(ORDERED, request(sort="duration"), now_ms=NOW)
    assert [s.session_id for s in longest.sessions] == ["s05", "s04", "s03", "s02", "s01"]
    oldest = list_sessions(ORDERED, request(order="asc"), now_ms=NOW)
    assert [s.session_id for s in oldest.sessions] == ["s05", "s04", "s03", "s02", "s01"]
    second_page = request(limit=2, offset=2)
    assert [s.session_id for s in newest.page(second_page)] == ["s03", "s04"]
    assert newest.total == 5


def test_facets_count_values():
    result = list_sessions(ORDERED, request(query="country:FR"), now_ms=NOW)
    facets = result.facets
    assert result.total == 3
    assert facets["browser"] == [{"value": "Chrome", "count": 3}]
    assert {"value": "mobile", "count": 1} in facets["device"]
    assert facets["meta.plan"][0] == {"value": "pro", "count": 2}
    assert {"value": "false", "count": 1} in facets["active"]
    # The menu of a field the query filters on counts the other values too, so that the agent can switch.
    assert {entry["value"] for entry in facets["country"]} == {"FR", "DE", "US"}


def test_facets_other_metadata_value():
    result = list_sessions(ORDERED, request(query="meta.plan:pro"), now_ms=NOW)
    plans = {entry["value"]: entry["count"] for entry in result.facets["meta.plan"]}
    assert plans == {"pro": 2, "free": 1, "enterprise": 1}
    assert result.facets["meta.company"] == [{"value": "Acme Inc", "count": 1}]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "maximum of 100"),
        ({"offset": -1}, "offset"),
        ({"sort": "user"}, "sort"),
        ({"order": "up"}, "order"),
    ],
)
def test_list_request_rejected(fields, problem):
    with pytest.raises(ProtocolError) as caught:
        request(**fields)
    assert caught.value.status == 400
    assert problem in caught.value.message


def test_cache_follows_version():
    cache = ListingCache()
    index = ProjectIndex(ORDERED)
    first = cache.get(request(), index=index, now_ms=NOW)
    again = cache.get(request(limit=2, offset=2), index=index, now_ms=NOW)
    assert again is first
    assert first.version == index.version

    index.put(session(6, user_id="dave"))
    second = cache.get(request(), index=index, now_ms=NOW)
    assert second is not first
    assert second.total == 6
    # A caller that accepts an older result gets the cached one, marked with the version it shows.
    index.remove("s06")
    tolerated = cache.get(request(), index=index, now_ms=NOW, max_age_seconds=60.0)
    assert tolerated is second
    assert tolerated.version == index.version - 1
    assert cache.get(request(), index=index, now_ms=NOW).total == 5


# Through the socket and HTTP ---------------------------------------------------------------


@pytest.fixture
async def stack(nats_server, nats_client) -> AsyncIterator[Stack]:
    async for running in running_stack(nats_server, nats_client):
        yield running


async def test_subscription_pushes_only_matches(stack):
    pod = await stack.start_pod()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo", "query": "meta.plan:pro browser:firefox"})
    snapshot = await next_frame(ws, "list.snapshot")
    assert snapshot["sessions"] == []
    assert snapshot["query"] == "meta.plan:pro browser:firefox"

    await stack.start(tab_id="tab-1", userID="chrome-pro", metadata={"plan": "pro"}, user_agent=CHROME_UA)
    wanted = await stack.start(tab_id="tab-2", userID="firefox-pro", metadata={"plan": "pro"}, user_agent=FIREFOX_UA)
    await stack.start(tab_id="tab-3", userID="firefox-free", metadata={"plan": "free"}, user_agent=FIREFOX_UA)
    upsert = await next_frame(ws, "list.upsert")
    assert upsert["session"]["sessionId"] == wanted["sessionID"]
    counts = await next_frame(ws, "list.counts")
    assert counts["total"] == 1
    later = await frames_for(ws, 0.6)
    assert [frame for frame in later if frame["type"] == "list.upsert"] == []

    # A metadata change moves the session out of the filter: it leaves the page as "filtered", not "ended".
    await stack.batch(wanted, [custom("tandem.metadata", {"key": "plan", "value": "free"})])
    removed = await next_frame(ws, "list.remove")
    assert removed == {"type": "list.remove", "sessionId": wanted["sessionID"], "reason": "filtered"}


async def test_subscription_page_moves(stack):
    pod = await stack.start_pod()
    first = await stack.start(tab_id="tab-1", userID="first")
    second = await stack.start(tab_id="tab-2", userID="second")
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo", "limit": 1})
    snapshot = await next_frame(ws, "list.snapshot")
    assert ids(snapshot) == [second["sessionID"]]
    assert snapshot["total"] == 2

    third = await stack.start(tab_id="tab-3", userID="third")
    frames = [await next_frame(ws, kind) for kind in ("list.remove", "list.upsert")]
    assert frames[0]["sessionId"] == second["sessionID"]
    assert frames[0]["reason"] == "filtered"
    assert frames[1]["session"]["sessionId"] == third["sessionID"]
    assert first["sessionID"] not in (frames[0]["sessionId"], frames[1]["session"]["sessionId"])


async def test_subscription_bad_query(stack):
    pod = await stack.start_pod()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo", "query": "country:FR OR"})
    error = await next_frame(ws, "error")
    assert error["code"] == "invalid_query"
    assert error["details"]["position"] == 13
    await ws.send_json({"type": "ping"})
    assert (await next_frame(ws, "pong"))["serverTime"] > 0


async def test_watcher_gets_session_updates(stack):
    pod = await stack.start_pod()
    started = await stack.start(userID="watched")
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo", "query": "user:someone-else"})
    await next_frame(ws, "list.snapshot")
    await ws.send_json({"type": "watch", "sessionId": started["sessionID"]})
    first = await next_frame(ws, "session.update")
    assert first["session"]["userId"] == "watched"
    await stack.batch(started, [custom("tandem.visibility", {"visible": False})])
    update = await next_frame(ws, "session.update")
    assert update["session"]["active"] is False


async def test_http_list_filters(stack):
    pod = await stack.start_pod()
    await stack.start(tab_id="tab-1", userID="alice", metadata={"plan": "pro"})
    await stack.start(tab_id="tab-2", userID="bob", metadata={"plan": "free"})
    listed = await wait_for_list(stack, pod, lambda listed: listed["total"] == 1, q="meta.plan:pro")
    assert [s["userId"] for s in listed["sessions"]] == ["alice"]
    assert listed["limit"] == 50
    everyone = await stack.list(pod, sort="startedAt", order="asc")
    assert [s["userId"] for s in everyone["sessions"]] == ["alice", "bob"]
    assert {entry["value"] for entry in everyone["facets"]["meta.plan"]} == {"pro", "free"}


@pytest.mark.parametrize(
    ("params", "headers", "status", "code"),
    [
        ({"projectId": "demo"}, {}, 401, "missing_token"),
        ({"projectId": "demo"}, {"Authorization": "Bearer nope"}, 401, "invalid_token"),
        ({"projectId": "other"}, None, 403, "forbidden"),
        ({}, None, 400, "invalid_request"),
        ({"projectId": "demo", "q": "user:"}, None, 400, "invalid_query"),
        ({"projectId": "demo", "limit": "9999"}, None, 400, "invalid_request"),
    ],
)
async def test_http_list_rejects(stack, params, headers, status, code):
    pod = await stack.start_pod()
    if headers is None:
        headers = {"Authorization": f"Bearer {stack.agent_token}"}
    async with stack.http.get(f"{pod}/live/v1/sessions", params=params, headers=headers) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == code


async def test_duration_filter_updates_with_time(stack):
    pod = await stack.start_pod()
    started = await stack.start()
    ws = await stack.agent(pod)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo", "query": "duration>1s"})
    snapshot = await next_frame(ws, "list.snapshot")
    assert snapshot["sessions"] == []
    await asyncio.sleep(1.0)
    upsert = await next_frame(ws, "list.upsert", timeout=3.0)
    assert upsert["session"]["sessionId"] == started["sessionID"]
