"""The search language: the parser's trees and errors, and each filter run against chdb."""

from __future__ import annotations

import pytest
from tandem_protocol import LiveSession
from tandem_sessions.search.query import And, Not, Or, QuerySyntaxError, Term, Then, parse
from tandem_sessions.search.sql import compile_query
from tandem_sessions.store.reader import SessionReader
from tandem_sessions.store.writer import Lifecycle, SessionWriter

from tests.sessions import builders as b
from tests.sessions.conftest import write_batches

MINUTE = 60_000


def test_parser_precedence():
    tree = parse('user:alice browser:firefox duration>1m clicked:"Place order" then error:*')
    assert isinstance(tree, And)
    assert [type(item) for item in tree.items] == [Term, Term, Term, Then]
    sequence = tree.items[3]
    assert [step.field for step in sequence.steps] == ["clicked", "error"]
    assert sequence.steps[0].value == "Place order"


def test_parser_or_and_not():
    tree = parse("(browser:chrome OR browser:firefox) AND NOT os:linux")
    assert isinstance(tree, And)
    assert isinstance(tree.items[0], Or)
    assert isinstance(tree.items[1], Not)
    assert tree.items[1].item == Term("os", ":", "linux", 44)


def test_parser_attributes():
    tree = parse("event:purchase[plan=pro, total=42]")
    assert tree.field == "event"
    assert [(a.key, a.value) for a in tree.attributes] == [("plan", "pro"), ("total", "42")]


def test_parser_keeps_url_colons():
    tree = parse("url:http://shop.test/cart?x=1")
    assert tree.value == "http://shop.test/cart?x=1"


@pytest.mark.parametrize(
    ("query", "position", "reason"),
    [
        ("user:", 5, "needs a value"),
        ("user:alice AND", 14, "ends where a filter was expected"),
        ("(user:alice", 0, "is not closed"),
        ("user:alice)", 10, "no matching '('"),
        ('clicked:"Place order', 8, "string is not closed"),
        ("alice", 5, "Expected ':'"),
        ("OR user:bob", 0, "needs a filter before it"),
        ("event:x[plan]", 12, "Expected '='"),
        ("()", 1, "empty"),
        ("   ", 3, "empty"),
    ],
)
def test_parser_rejects(query, position, reason):
    with pytest.raises(QuerySyntaxError) as caught:
        parse(query)
    assert caught.value.position == position
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("query", "position", "reason"),
    [
        ("colour:red", 0, "Unknown field"),
        ("duration:5m", 0, "takes a comparison"),
        ("duration>soon", 0, "not a duration"),
        ("user>alice", 0, "takes ':'"),
        ("date>yesterday", 0, "not a date"),
        ("user:alice then error:*", 0, "session field"),
        ("browser:x[a=b]", 0, "payload filters"),
        ("clicked:a then NOT error:*", 15, "cannot be negated"),
    ],
)
def test_compiler_rejects(query, position, reason):
    with pytest.raises(QuerySyntaxError) as caught:
        compile_query(parse(query))
    assert caught.value.position == position
    assert reason in caught.value.reason


def test_compiler_never_inlines_values():
    hostile = "x' OR 1=1 --"
    compiled = compile_query(parse(f'user:"{hostile}" clicked:"{hostile}" event:"{hostile}"[k="{hostile}"]'))
    assert hostile not in compiled.where
    assert hostile.lower() not in compiled.where.lower()
    carried = [value for value in compiled.parameters.values() if hostile.lower() in str(value).lower()]
    assert len(carried) == 4


DEVICES = {
    "alice1": {"browser": "Firefox", "os": "Linux", "device": "desktop", "country": "FR"},
    "bob1": {"browser": "Chrome", "os": "Android", "device": "mobile", "country": "DE"},
}


async def start_info(project_id: str, session_id: str) -> LiveSession | None:
    """What ingest's live registry would hold for the sessions below."""
    if session_id not in DEVICES:
        return None
    return LiveSession(
        session_id=session_id,
        project_id=project_id,
        tab_id="tab-1",
        started_at=0,
        last_seen_at=0,
        **DEVICES[session_id],
    )


@pytest.fixture
async def sessions(store):
    """Four sessions with different users, devices, lengths and events."""
    t = b.BASE_MS
    alice = b.visit("alice1", start=t, user="alice", batches=1)
    alice[0]["events"] += [
        b.custom(t + 5, "tandem.metadata", {"key": "plan", "value": "pro"}),
        b.click(t + 10_000, "Add to cart", "[data-testid=add-to-cart-1]"),
        b.page(t + 20_000, "http://shop.test/checkout.html", "Checkout"),
        b.click(t + 30_000, "Place order"),
        b.error(t + 40_000, "TypeError: cart is undefined"),
        b.event(t + 50_000, "purchase", {"plan": "pro", "total": 42}),
        b.mouse_move(t + 5 * MINUTE),
    ]
    bob = b.visit("bob1", start=t + MINUTE, user="bob", batches=1)
    bob[0]["events"] += [
        b.error(t + MINUTE + 1000, "ReferenceError: order is not defined"),
        b.click(t + MINUTE + 2000, "Place order"),
        b.issue(t + MINUTE + 3000, "rage_click"),
        b.console(t + MINUTE + 500, "error", "Failed to load resource"),
    ]
    anon = b.visit("anon1", start=t + 2 * MINUTE, batches=1)
    anon[0]["events"] += [
        b.custom(t + 2 * MINUTE + 1, "tandem.anonymous", {"userAnonymousID": "visitor-7"}),
        b.event(t + 2 * MINUTE + 2, "purchase", {"plan": "free", "total": 10}),
        b.console(t + 2 * MINUTE + 3, "warn", "deprecated API"),
    ]
    other = b.visit("other1", start=t, user="alice", batches=1)
    for message in other:
        message["projectId"] = "other"
    writer = SessionWriter(
        store=store, lifecycle=Lifecycle(inactivity_ms=10**12, max_duration_ms=10**12), start_info=start_info
    )
    await write_batches(writer, alice + bob + anon + other)


async def search_ids(reader: SessionReader, query: str, **options) -> list[str]:
    compiled = compile_query(parse(query) if query else None)
    page = await reader.search(
        project_id=options.get("project_id", "demo"),
        compiled=compiled,
        from_ms=options.get("from_ms"),
        to_ms=options.get("to_ms"),
        sort=options.get("sort", "startedAt"),
        descending=options.get("descending", False),
        offset=0,
        limit=50,
    )
    return [session["sessionId"] for session in page.sessions]


FILTERS = [
    ("", ["alice1", "bob1", "anon1"]),
    ("user:alice", ["alice1"]),
    ("user:ali*", ["alice1"]),
    ("user:*", ["alice1", "bob1"]),
    ("anon:visitor-7", ["anon1"]),
    ("meta.plan:pro", ["alice1"]),
    ("browser:firefox", ["alice1"]),
    ("os:android", ["bob1"]),
    ("device:mobile", ["bob1"]),
    ("country:fr", ["alice1"]),
    ("duration>1m", ["alice1"]),
    ("duration<=10s", ["bob1", "anon1"]),
    ("url:checkout", ["alice1"]),
    ("url:http://shop.test/*", ["alice1", "bob1", "anon1"]),
    ('clicked:"add to cart"', ["alice1"]),
    ('clicked:"Place order"', ["alice1", "bob1"]),
    ("event:purchase", ["alice1", "anon1"]),
    ("event:purchase[plan=pro]", ["alice1"]),
    ("event:purchase[total=10]", ["anon1"]),
    ("error:TypeError", ["alice1"]),
    ("error:*", ["alice1", "bob1"]),
    ('error:"failed to load"', ["bob1"]),
    ("issue:rage_click", ["bob1"]),
    ("errors>=2", ["bob1"]),
    ("clicks>1", ["alice1"]),
    ("user:alice OR user:bob", ["alice1", "bob1"]),
    ("user:alice AND browser:chrome", []),
    ("NOT user:alice", ["bob1", "anon1"]),
    ('-clicked:"Place order"', ["anon1"]),
    ('clicked:"Place order" then error:*', ["alice1"]),
    ('error:* then clicked:"Place order"', ["bob1"]),
    ('clicked:"add to cart" then url:checkout then (error:* OR issue:*)', ["alice1"]),
    ('user:alice browser:firefox duration>1m clicked:"Place order" then error:*', ["alice1"]),
    (f"date>={b.BASE_MS + MINUTE}", ["bob1", "anon1"]),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS)
async def test_search_filter(sessions, reader, query, expected):
    assert await search_ids(reader, query) == expected


async def test_search_date_range(sessions, reader):
    found = await search_ids(reader, "", from_ms=b.BASE_MS + 1, to_ms=b.BASE_MS + MINUTE)
    assert found == ["bob1"]


async def test_search_sort_and_total(sessions, reader):
    assert await search_ids(reader, "", sort="duration", descending=True) == ["alice1", "bob1", "anon1"]
    compiled = compile_query(None)
    page = await reader.search(
        project_id="demo",
        compiled=compiled,
        from_ms=None,
        to_ms=None,
        sort="startedAt",
        descending=True,
        offset=2,
        limit=2,
    )
    assert page.total == 3
    assert [s["sessionId"] for s in page.sessions] == ["alice1"]


async def test_search_project_scope(sessions, reader):
    assert await search_ids(reader, "user:alice", project_id="other") == ["other1"]
