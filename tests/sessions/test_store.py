"""The store against chdb in a tmp folder: migrations, errors, replay chunk stores, summaries."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from tandem_sessions.store import ClickHouse, StoreError, open_store
from tandem_sessions.store.migrations import LATEST_VERSION, MIGRATIONS, applied_versions, migrate
from tandem_sessions.store.replay import (
    ChunkKey,
    ClickHouseReplayStore,
    FolderReplayStore,
    ReplayChunk,
)

from tests.sessions import builders as b
from tests.sessions.conftest import make_settings, write_batches


async def table_names(db: ClickHouse) -> set[str]:
    rows = await db.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {name for (name,) in rows}


async def test_migrations_up_and_down(store):
    db = store.db
    assert await applied_versions(db) == set(range(1, LATEST_VERSION + 1))
    assert {"sessions", "session_batches", "session_events", "replay_chunks"} <= await table_names(db)

    later = [migration.version for migration in MIGRATIONS if migration.version > 2]
    reverted = await migrate(db, target=2)
    assert reverted == sorted(later, reverse=True)
    assert await applied_versions(db) == {1, 2}
    assert "session_events" not in await table_names(db)
    assert "replay_chunks" not in await table_names(db)

    reapplied = await migrate(db)
    assert reapplied == later
    assert await migrate(db) == []


async def test_store_error_has_server_code(store):
    with pytest.raises(StoreError) as caught:
        await store.db.query("SELECT * FROM no_such_table")
    assert caught.value.code == 60
    assert "no_such_table" in caught.value.message
    assert "Stack trace" not in caught.value.message
    assert caught.value.retryable is False


async def test_store_unreachable_server_is_retryable(tmp_path):
    from tandem_runtime.embedded import free_port

    settings = make_settings(tmp_path, clickhouse_dsn=f"clickhouse://default:@127.0.0.1:{free_port()}/default")
    with pytest.raises(StoreError) as caught:
        await open_store(settings)
    assert caught.value.retryable is True


@pytest.mark.parametrize("kind", ["clickhouse", "folder"])
async def test_replay_store_round_trip(store, tmp_path, kind):
    replay = ClickHouseReplayStore(db=store.db) if kind == "clickhouse" else FolderReplayStore(root=tmp_path / "replay")
    events = [b.meta(1), b.snapshot(2)]
    data = orjson.dumps(events)
    chunks = [ReplayChunk("demo", "s1", ChunkKey(seq=seq, tab_id="t"), data) for seq in range(3)]
    await replay.write(chunks)
    await replay.write(chunks[:1])  # written twice: still one chunk
    if kind == "folder":
        assert len(list((tmp_path / "replay").rglob("*.json.zst"))) == 3
        assert (tmp_path / "replay" / "demo" / "s1" / "t" / "0000000000.json.zst").read_bytes() != data

    keys = [ChunkKey(seq=2, tab_id="t"), ChunkKey(seq=0, tab_id="t")]
    read = await replay.read("demo", "s1", keys)
    assert [orjson.loads(chunk) for chunk in read] == [events, events]
    with pytest.raises(StoreError):
        await replay.read("demo", "s1", [ChunkKey(seq=9, tab_id="t")])


async def test_summary_merges_batches(store, writer, reader):
    messages = b.visit("s1", user="alice", batches=3)
    messages[1]["events"].append(b.click(b.BASE_MS + 1500, "Add to cart"))
    messages[2]["events"].append(b.error(b.BASE_MS + 2500, "TypeError: x is undefined"))
    messages[2]["events"].append(b.custom(b.BASE_MS + 2600, "tandem.metadata", {"key": "plan", "value": "pro"}))
    await write_batches(writer, messages[:2])
    await write_batches(writer, messages[2:])
    await write_batches(writer, messages[:1])  # a batch written again changes nothing

    summary = await reader.session("s1")
    assert summary["userId"] == "alice"
    assert summary["metadata"] == {"plan": "pro"}
    assert summary["pages"] == 1
    assert summary["clicks"] == 1
    assert summary["errors"] == 1
    assert summary["events"] == sum(len(m["events"]) for m in messages)
    assert summary["startedAt"] == b.BASE_MS
    assert summary["durationMs"] == 2600
    assert summary["firstUrl"] == "http://shop.test/"
    rows = await store.db.query("SELECT count() FROM sessions FINAL WHERE session_id = 's1'")
    assert rows == [(1,)]


async def test_input_values_stored_masked(store, writer):
    messages = b.visit("s1", batches=1)
    messages[0]["events"].append(b.input_event(b.BASE_MS + 10, "secret"))
    await write_batches(writer, messages)
    rows = await store.db.query("SELECT text FROM session_events WHERE kind = 'input'")
    assert rows == [("******",)]


async def test_summary_uses_start_info(store):
    from tandem_protocol import LiveSession
    from tandem_sessions.store.writer import Lifecycle, SessionWriter

    async def lookup(project_id: str, session_id: str) -> LiveSession:
        return LiveSession(
            session_id=session_id, project_id=project_id, tab_id="tab-1", user_id="bob", metadata={"plan": "free"},
            started_at=b.BASE_MS, last_seen_at=b.BASE_MS, browser="Firefox", os="Linux", device="desktop",
        )  # fmt: skip

    writer = SessionWriter(
        store=store, lifecycle=Lifecycle(inactivity_ms=1000, max_duration_ms=10**12), start_info=lookup
    )
    await write_batches(writer, b.visit("s1", batches=2))
    rows = await store.db.query_dicts(
        "SELECT user_id, browser, os, device, metadata, ended FROM sessions FINAL WHERE session_id = 's1'"
    )
    assert rows == [
        {
            "user_id": "bob",
            "browser": "Firefox",
            "os": "Linux",
            "device": "desktop",
            "metadata": {"plan": "free"},
            "ended": 1,
        }
    ]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
async def test_open_cancelled_releases_chdb(tmp_path, delay):
    """Regression: a cancelled open left its chdb engine open, so the next store on another path failed."""
    opening = asyncio.create_task(open_store(make_settings(tmp_path / "first")))
    await asyncio.sleep(delay)
    opening.cancel()
    results = await asyncio.gather(opening, return_exceptions=True)
    if not isinstance(results[0], BaseException):
        await results[0].close()
    second = await open_store(make_settings(tmp_path / "second"))
    try:
        assert await second.db.query("SELECT 1") == [(1,)]
    finally:
        await second.close()
