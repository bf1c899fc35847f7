"""Numbered, reversible schema migrations, applied in order at start-up.

`schema_migrations` keeps one row per change of state, and the row with the latest
`changed_at` tells whether a version is applied. Every statement is idempotent
(IF NOT EXISTS, IF EXISTS), so that pods starting at once can all run them.
Never edit a released migration: add the next number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from tandem_sessions.store.driver import ClickHouse

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Migration:
    version: int
    name: str
    up: tuple[str, ...]
    down: tuple[str, ...]


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    applied UInt8,
    changed_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(changed_at)
ORDER BY version
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        name="sessions",
        # One logical row per session. The consumer writes a new full version after each
        # write, computed from session_batches; FINAL (or a merge) keeps the newest.
        up=(
            """
            CREATE TABLE IF NOT EXISTS sessions (
                project_id LowCardinality(String),
                session_id String,
                tab_id String,
                user_id String,
                user_anonymous_id String,
                metadata Map(String, String),
                browser LowCardinality(String),
                browser_version String,
                os LowCardinality(String),
                os_version String,
                device LowCardinality(String),
                country LowCardinality(String),
                first_url String,
                start_at DateTime64(3, 'UTC'),
                end_at DateTime64(3, 'UTC'),
                duration_ms UInt64,
                last_received_at DateTime64(3, 'UTC'),
                pages UInt32,
                events UInt32,
                errors UInt32,
                clicks UInt32,
                ended UInt8,
                updated_at DateTime64(6, 'UTC'),
                INDEX start_at_minmax start_at TYPE minmax GRANULARITY 1,
                INDEX user_id_bloom user_id TYPE bloom_filter GRANULARITY 4
            ) ENGINE = ReplacingMergeTree(updated_at)
            ORDER BY (project_id, session_id)
            """,
        ),
        down=("DROP TABLE IF EXISTS sessions",),
    ),
    Migration(
        version=2,
        name="session_batches",
        # One row per stored tracker batch: the dedupe marker, the index of the replay
        # chunks, and the batch's share of the session summary.
        up=(
            """
            CREATE TABLE IF NOT EXISTS session_batches (
                project_id LowCardinality(String),
                session_id String,
                tab_id String,
                seq UInt32,
                received_at DateTime64(3, 'UTC'),
                first_ts DateTime64(3, 'UTC'),
                last_ts DateTime64(3, 'UTC'),
                event_count UInt32,
                raw_bytes UInt32,
                has_meta UInt8,
                pages UInt32,
                clicks UInt32,
                errors UInt32,
                first_url String,
                user_id String,
                user_anonymous_id String,
                metadata Map(String, String)
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, session_id, tab_id, seq)
            """,
        ),
        down=("DROP TABLE IF EXISTS session_batches",),
    ),
    Migration(
        version=3,
        name="session_events",
        # Searchable events, one row each, keyed by kind first so that a filter reads only its kind.
        up=(
            """
            CREATE TABLE IF NOT EXISTS session_events (
                project_id LowCardinality(String),
                kind LowCardinality(String),
                session_id String,
                tab_id String,
                seq UInt32,
                idx UInt32,
                timestamp DateTime64(3, 'UTC'),
                name String,
                text String,
                selector String,
                url String,
                payload String,
                INDEX timestamp_minmax timestamp TYPE minmax GRANULARITY 1
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, kind, session_id, tab_id, seq, idx)
            """,
        ),
        down=("DROP TABLE IF EXISTS session_events",),
    ),
    Migration(
        version=4,
        name="replay_chunks",
        # rrweb chunks (JSON arrays) of the ClickHouse replay store. Sorted by session, the
        # column codec compresses a session's consecutive chunks together.
        up=(
            """
            CREATE TABLE IF NOT EXISTS replay_chunks (
                project_id LowCardinality(String),
                session_id String,
                tab_id String,
                seq UInt32,
                data String CODEC(ZSTD(3))
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, session_id, tab_id, seq)
            SETTINGS index_granularity = 1024
            """,
        ),
        down=("DROP TABLE IF EXISTS replay_chunks",),
    ),
    Migration(
        version=5,
        name="assist_audit",
        # The audit trail: one row per assist event (watch, consent, call, control). A
        # redelivered event has the same event_id and time, so the merge keeps one row.
        up=(
            """
            CREATE TABLE IF NOT EXISTS assist_audit (
                event_id String,
                project_id LowCardinality(String),
                session_id String,
                kind LowCardinality(String),
                agent_id String,
                agent_name String,
                consent_kind LowCardinality(String),
                outcome LowCardinality(String),
                reason LowCardinality(String),
                request_id String,
                call_id String,
                watch_id String,
                at DateTime64(3, 'UTC'),
                duration_ms Nullable(UInt64),
                received_at DateTime64(3, 'UTC'),
                INDEX agent_id_bloom agent_id TYPE bloom_filter GRANULARITY 4,
                INDEX session_id_bloom session_id TYPE bloom_filter GRANULARITY 4
            ) ENGINE = ReplacingMergeTree
            ORDER BY (project_id, at, event_id)
            """,
        ),
        down=("DROP TABLE IF EXISTS assist_audit",),
    ),
    Migration(
        version=6,
        name="replay_chunks_stored_at",
        # The time a chunk was stored, which the project retention TTL ages chunks by. Rows
        # stored before this migration get the migration's time. Remove the retention TTL
        # (set every project's retention to 0) before reverting: ClickHouse keeps a column
        # that a TTL uses.
        up=(
            "ALTER TABLE replay_chunks ADD COLUMN IF NOT EXISTS stored_at DateTime64(3, 'UTC') DEFAULT now64(3)",
            "ALTER TABLE replay_chunks MATERIALIZE COLUMN stored_at",
        ),
        down=("ALTER TABLE replay_chunks DROP COLUMN IF EXISTS stored_at",),
    ),
    Migration(
        version=7,
        name="session_events_text_indexes",
        # N-gram bloom filters let a search for a rare label, URL or message skip the
        # granules that cannot contain it. The search compiles to LIKE on lowerUTF8(…) to use them.
        up=(
            "ALTER TABLE session_events ADD INDEX IF NOT EXISTS text_ngrams lowerUTF8(text) "
            "TYPE ngrambf_v1(3, 8192, 2, 0) GRANULARITY 1",
            "ALTER TABLE session_events ADD INDEX IF NOT EXISTS url_ngrams lowerUTF8(url) "
            "TYPE ngrambf_v1(3, 8192, 2, 0) GRANULARITY 1",
        ),
        down=(
            "ALTER TABLE session_events DROP INDEX IF EXISTS url_ngrams",
            "ALTER TABLE session_events DROP INDEX IF EXISTS text_ngrams",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


async def applied_versions(db: ClickHouse) -> set[int]:
    await db.command(MIGRATIONS_TABLE)
    rows = await db.query("SELECT version, argMax(applied, changed_at) FROM schema_migrations GROUP BY version")
    return {version for version, applied in rows if applied}


async def migrate(db: ClickHouse, *, target: int = LATEST_VERSION) -> list[int]:
    """Apply every migration up to `target` that is not applied; roll back those above it. Return what changed."""
    applied = await applied_versions(db)
    changed = []
    for migration in MIGRATIONS:
        if migration.version <= target and migration.version not in applied:
            for statement in migration.up:
                await db.command(statement)
            await _record(db, migration, applied=True)
            log.info("store.migration_applied", version=migration.version, migration=migration.name)
            changed.append(migration.version)
    for migration in reversed(MIGRATIONS):
        if migration.version > target and migration.version in applied:
            for statement in migration.down:
                await db.command(statement)
            await _record(db, migration, applied=False)
            log.info("store.migration_reverted", version=migration.version, migration=migration.name)
            changed.append(migration.version)
    return changed


async def _record(db: ClickHouse, migration: Migration, *, applied: bool) -> None:
    now_us = int(time.time() * 1_000_000)
    await db.insert(
        "schema_migrations",
        [[migration.version, migration.name, int(applied), now_us]],
        ["version", "name", "applied", "changed_at"],
    )
