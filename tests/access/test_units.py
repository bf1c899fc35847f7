"""The access-control building blocks on their own: origins, rate limits, tokens, retention and consent rules."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tandem_ingest.access import sampled_in
from tandem_protocol import Project, ProtocolError
from tandem_protocol.access import ConsentRecord
from tandem_runtime.access import origin_allowed, origin_matches
from tandem_runtime.consent import check_answerable
from tandem_runtime.directory import narrow_projects
from tandem_runtime.ratelimit import TokenBuckets
from tandem_runtime.tokens import AgentClaims, TokenSigner
from tandem_sessions.retention import apply_retention, retention_days, ttl_clause
from tandem_sessions.store import open_store

from tests.conftest import SECRET_KEY
from tests.sessions.conftest import make_settings


@pytest.mark.parametrize(
    ("origin", "pattern", "expected"),
    [
        ("https://shop.example.com", "https://shop.example.com", True),
        ("https://SHOP.example.com", "https://shop.example.com", True),
        ("https://shop.example.com", "*", True),
        ("http://shop.example.com", "https://shop.example.com", False),
        ("https://shop.example.com:8443", "https://shop.example.com", False),
        ("https://shop.example.com.evil.net", "https://shop.example.com", False),
        ("https://a.example.com", "https://*.example.com", True),
        ("https://a.b.example.com", "https://*.example.com", True),
        ("https://example.com", "https://*.example.com", False),
        ("https://evilexample.com", "https://*.example.com", False),
        ("https://a.example.com:8443", "https://*.example.com:8443", True),
        ("https://a.example.com", "https://*.example.com:8443", False),
        ("null", "https://shop.example.com", False),
    ],
)
def test_origin_matches(origin, pattern, expected):
    assert origin_matches(origin, pattern) is expected


def test_origin_allowed_defaults():
    assert origin_allowed(None, ["https://shop.example.com"]), "a request without Origin is not from a page"
    assert origin_allowed("https://any.example", []), "an empty list allows any origin"
    assert not origin_allowed("null", ["https://shop.example.com"])


def test_token_bucket_refills():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert buckets.take("p") == 0
    assert buckets.take("p") == 0
    assert buckets.take("p") == pytest.approx(0.5)
    assert buckets.take("q") == 0, "each key has its own bucket"
    now[0] = 0.5
    assert buckets.take("p") == 0
    assert buckets.take("p", rate=100, burst=1) == pytest.approx(0.01)


def test_narrow_projects():
    assert narrow_projects(["*"], []) == ["*"]
    assert narrow_projects(["*"], ["a"]) == ["a"]
    assert narrow_projects(["a", "b"], ["b", "c"]) == ["b"]
    assert narrow_projects(["a"], ["*"]) == ["a"]


def test_socket_token_scope():
    signer = TokenSigner(secret_key=SECRET_KEY)
    agent = AgentClaims(agent_id="agent-x", name="x", role="agent", projects=["a", "b"])
    token, expires_at = signer.sign_socket(agent, project_id="a", ttl_seconds=60)
    claims = signer.verify_agent(token)
    assert claims.kind == "socket"
    assert claims.projects == ["a"]
    assert expires_at <= (time.time() + 61) * 1000
    with pytest.raises(ProtocolError) as caught:
        signer.sign_socket(agent, project_id="c", ttl_seconds=60)
    assert caught.value.status == 403


def test_signer_rejects_short_key():
    with pytest.raises(ValueError, match="too short"):
        TokenSigner(secret_key="short-key-0123456789")


def test_sampled_in_stable():
    project = Project(id="p", key="key-0123456789", sample_rate=0.3)
    answers = [sampled_in(project, f"tab-{n}") for n in range(2000)]
    assert answers == [sampled_in(project, f"tab-{n}") for n in range(2000)]
    assert 0.25 < sum(answers) / len(answers) < 0.35
    assert not any(sampled_in(project.model_copy(update={"sample_rate": 0.0}), f"tab-{n}") for n in range(100))


def test_ttl_clause():
    projects = [
        Project(id="a", key="key-a-01234567", retention_days=30),
        Project(id="b", key="key-b-01234567"),
    ]
    days = retention_days(projects, default_days=0)
    assert days == {"a": 30}
    clause = ttl_clause("start_at", days, 0)
    assert clause == "toDateTime(start_at) + toIntervalDay(multiIf(project_id = 'a', 30, 0)) WHERE project_id IN ('a')"
    assert ttl_clause("start_at", {}, 0) is None
    everyone = retention_days(projects, default_days=90)
    assert everyone == {"a": 30, "b": 90}
    assert "WHERE" not in ttl_clause("start_at", everyone, 90)


def test_consent_answer_rules():
    now = int(time.time() * 1000)
    pending = ConsentRecord(
        project_id="p",
        session_id="s",
        state="pending",
        request_id="r1",
        agent_id="a",
        agent_name="a",
        requested_at=now,
        expires_at=now + 60_000,
    )
    check_answerable(pending, request_id="r1", accepted=True)
    for record, request_id, accepted, code in [
        (pending, "r2", True, "unknown_request"),
        (None, "r1", True, "unknown_request"),
        (pending.model_copy(update={"expires_at": now - 1}), "r1", True, "request_closed"),
        (pending.model_copy(update={"state": "declined"}), "r1", True, "request_closed"),
        (pending, None, False, "consent_not_given"),
        (pending, None, True, "invalid_request"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            check_answerable(record, request_id=request_id, accepted=accepted)
        assert caught.value.code == code
    check_answerable(pending.model_copy(update={"state": "accepted"}), request_id=None, accepted=False)


async def test_retention_deletes_old_rows(tmp_path: Path):
    store = await open_store(make_settings(tmp_path / "data"))
    try:
        db = store.db
        await db.command(
            "INSERT INTO sessions (project_id, session_id, start_at, end_at, updated_at) VALUES "
            "('short', 'old', now64(3) - INTERVAL 10 DAY, now64(3), now64(6)), "
            "('short', 'new', now64(3) - INTERVAL 1 DAY, now64(3), now64(6)), "
            "('kept', 'old', now64(3) - INTERVAL 1000 DAY, now64(3), now64(6))"
        )
        projects = [
            Project(id="short", key="key-short-0123", retention_days=7),
            Project(id="kept", key="key-kept-01234"),
        ]
        changed = await apply_retention(db, projects, default_days=0)
        assert sorted(changed) == ["replay_chunks", "session_batches", "session_events", "sessions"]
        assert await apply_retention(db, projects, default_days=0) == [], "an unchanged TTL is not applied again"
        await db.command("OPTIMIZE TABLE sessions FINAL")
        rows = await db.query("SELECT project_id, session_id FROM sessions ORDER BY project_id, session_id")
        assert rows == [("kept", "old"), ("short", "new")]
        assert sorted(await apply_retention(db, projects[1:], default_days=0)) == sorted(changed)
        (engine,) = (await db.query("SELECT engine_full FROM system.tables WHERE name = 'sessions'"))[0]
        assert " TTL " not in engine
    finally:
        await store.close()
