"""The indexed live list against a plain walk over every session: same matches, same order, same facet counts."""

from __future__ import annotations

import random

import pytest
from tandem_live.index import ProjectIndex, ValueIndex
from tandem_live.listing import (
    FACET_FIELDS,
    MAX_FACET_VALUES,
    ListRequest,
    compile_query,
    compile_search,
    list_sessions,
    metadata_key,
    without_field,
)
from tandem_protocol import LiveSession

NOW = 1_764_876_600_000
BROWSERS = ["Chrome", "Firefox", "Safari", "Mobile Safari", "Edge", "chrome", ""]
COUNTRIES = ["FR", "DE", "US", "JP", ""]
PLANS = ["free", "pro", "enterprise", ""]

QUERIES = [
    "",
    "browser:chrome",
    "browser:CHROME",
    "browser:*",
    "-browser:*",
    "browser:*safari",
    'browser:"mobile safari" OR browser:edge',
    "(browser:firefox OR browser:safari) -device:mobile",
    "country:FR meta.plan:pro",
    "country:fr -meta.plan:free",
    "NOT country:FR",
    "meta.plan:*",
    "-meta.plan:*",
    "meta.plan:pr*",
    "meta.team:team-1",
    "meta.missing:x",
    "user:u1*",
    "user:u12",
    "user:*",
    "-user:*",
    "anon:anon-3",
    "session:*",
    "url:checkout",
    "url:*",
    "url:https://shop.test/p/1*",
    "title:PRODUCT",
    "referrer:*search*",
    "city:boston",
    "language:fr-fr",
    "timezone:europe/paris",
    "utm_source:newsletter",
    "active:true",
    "active:no",
    "duration>10m",
    "duration>=20m",
    "duration<5m",
    "duration<=30m",
    "duration>1h",
    "u42",
    '"product 7"',
    "pro country:DE",
    "team-3 OR user:u7",
    "NOT (browser:chrome OR country:US) active:true",
    "browser:firefox AND (meta.plan:pro OR duration>40m) AND -country:JP",
]


def random_session(rng: random.Random, number: int) -> LiveSession:
    metadata = {}
    if rng.random() < 0.8:
        metadata["plan"] = rng.choice(PLANS)
    if rng.random() < 0.5:
        metadata["team"] = f"team-{rng.randrange(5)}"
    if rng.random() < 0.1:
        metadata[f"key{rng.randrange(30)}"] = f"v{rng.randrange(3)}"
    return LiveSession(
        session_id=f"{NOW - number * 1000:012x}{number:04d}",
        project_id="demo",
        tab_id=f"tab-{number}",
        user_id=rng.choice([None, f"u{number}", f"u{rng.randrange(20)}"]),
        user_anonymous_id=rng.choice([None, f"anon-{rng.randrange(5)}"]),
        metadata=metadata,
        started_at=NOW - rng.randrange(0, 3_600_000, 500),
        last_seen_at=NOW,
        url=f"https://shop.test/p/{rng.randrange(12)}" + rng.choice(["", "/checkout"]),
        title=rng.choice(["", f"Product {rng.randrange(12)}"]),
        referrer=rng.choice(["", "https://search.test/?q=shoes"]),
        browser=rng.choice(BROWSERS),
        os=rng.choice(["Linux", "Windows", "iOS", ""]),
        device=rng.choice(["desktop", "mobile", ""]),
        country=rng.choice(COUNTRIES),
        city=rng.choice(["", "Boston", "boston", "Paris"]),
        language=rng.choice(["en-US", "fr-FR", ""]),
        timezone=rng.choice(["Europe/Paris", "America/New_York"]),
        utm_source=rng.choice(["", "newsletter"]),
        active=rng.random() < 0.7,
    )


def walk(sessions: list[LiveSession], query: str) -> list[LiveSession]:
    """Every session, oldest start first, that the compiled predicate accepts."""
    predicate = compile_search(query).predicate
    ordered = sorted(sessions, key=lambda s: (s.started_at, s.session_id))
    return [s for s in ordered if predicate(s, NOW)]


def counted(sessions: list[LiveSession], name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for session in sessions:
        if name == "active":
            value = "true" if session.active else "false"
        elif metadata_key(name) is not None:
            value = session.metadata.get(metadata_key(name))
        else:
            value = getattr(session, name) or None
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    return counts


def walked_facets(sessions: list[LiveSession], query: str) -> dict[str, dict[str, int]]:
    """Facet counts by walking the sessions: a filtered facet counts as if its filter were absent."""
    node = compile_search(query).node
    matches = walk(sessions, query)

    def base(name: str) -> list[LiveSession]:
        reduced = without_field(node, name)
        if reduced is node:
            return matches
        if reduced is None:
            return sessions
        check = compile_query(reduced)
        return [s for s in sessions if check(s, NOW)]

    facets = {name: counted(base(name), name) for name in FACET_FIELDS}
    keys = {f"meta.{key}" for session in matches for key in session.metadata}
    for name in keys:
        facets[name] = counted(base(name), name)
    return facets


def top(counts: dict[str, int]) -> list[dict]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MAX_FACET_VALUES]
    return [{"value": value, "count": count} for value, count in ranked]


def check_same(index: ProjectIndex, sessions: list[LiveSession], query: str) -> None:
    request = ListRequest.from_fields({"projectId": "demo", "query": query, "order": "asc"}, max_limit=500)
    result = list_sessions(index, request, now_ms=NOW)
    expected = walk(sessions, query)
    assert [s.session_id for s in result.sessions] == [s.session_id for s in expected], query
    facets = walked_facets(sessions, query)
    assert set(result.facets) == set(facets), query
    for name, counts in facets.items():
        assert result.facets[name] == top(counts), (query, name)


@pytest.fixture(scope="module")
def population() -> list[LiveSession]:
    rng = random.Random(7)
    return [random_session(rng, number) for number in range(400)]


@pytest.mark.parametrize("query", QUERIES)
def test_index_query(population, query):
    check_same(ProjectIndex(population), population, query)


def test_index_follows_changes(population):
    """Replace, remove and add sessions; after each round the index returns what a walk over the rest returns."""
    rng = random.Random(11)
    sessions = {s.session_id: s for s in population}
    index = ProjectIndex(population)
    number = len(population)
    for _ in range(6):
        for session_id in rng.sample(sorted(sessions), 40):
            changed = random_session(rng, 0).model_dump()
            kept = sessions[session_id].model_dump()
            for name in ("browser", "country", "metadata", "active", "url", "user_id", "city"):
                kept[name] = changed[name]
            if rng.random() < 0.1:
                kept["started_at"] = changed["started_at"]
            sessions[session_id] = LiveSession(**kept)
            index.put(sessions[session_id])
        for session_id in rng.sample(sorted(sessions), 30):
            assert index.remove(session_id) is sessions.pop(session_id)
        for _ in range(30):
            number += 1
            added = random_session(rng, number)
            sessions[added.session_id] = added
            index.put(added)
        for query in rng.sample(QUERIES, 12):
            check_same(index, list(sessions.values()), query)
    assert len(index) == len(sessions)
    assert [s.session_id for s in index.ordered()] == [s.session_id for s in walk(list(sessions.values()), "")]


def test_value_index_shrinks():
    values = ValueIndex()
    values.add("Chrome", "a")
    assert values.ids["Chrome"] == "a"
    values.add("Chrome", "b")
    assert values.of("Chrome") == {"a", "b"}
    values.remove("Chrome", "a")
    assert values.ids["Chrome"] == "b"
    values.remove("Chrome", "b")
    assert "Chrome" not in values.ids
    assert values.of("Chrome") == set()
