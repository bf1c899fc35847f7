"""Writing batches, and the session summaries computed from them.

A batch is written in an order that makes a crash at any point safe: the replay
chunks and the searchable events first, then its `session_batches` row, which is
the marker that the batch is stored. A redelivered batch whose marker exists is
skipped. One whose marker is missing is written again, and the ReplacingMergeTree
keys (project, session, tab, seq[, kind, idx]) fold the copies into one row.

The summary row of a session is not added up from deltas: it is recomputed from
the session's deduplicated `session_batches` rows and written as a new version,
so that redeliveries, crashes and several consumer pods all give the same result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Counter
from tandem_protocol import LiveSession

from tandem_sessions.extract import BATCH_COLUMNS, EVENT_COLUMNS, ExtractedBatch
from tandem_sessions.store import Store
from tandem_sessions.store.replay import ReplayChunk

log = structlog.get_logger(__name__)

BatchId = tuple[str, str, str, int]
"""(project_id, session_id, tab_id, seq): the identity of a tracker batch."""

StartInfoLookup = Callable[[str, str], Awaitable[LiveSession | None]]
"""Returns what ingest recorded when a session started (browser, OS, user), or None."""

SESSION_COLUMNS = (
    "project_id", "session_id", "tab_id", "user_id", "user_anonymous_id", "metadata", "browser", "browser_version",
    "os", "os_version", "device", "country", "first_url", "start_at", "end_at", "duration_ms", "last_received_at",
    "pages", "events", "errors", "clicks", "ended", "updated_at",
)  # fmt: skip

SESSIONS_ENDED = Counter("tandem_sessions_ended_total", "Sessions marked ended by the end pass (idle or too long).")

START_FIELDS = ("user_id", "user_anonymous_id", "browser", "browser_version", "os", "os_version", "device", "country")
MAX_CACHED_START_INFO = 50_000


@dataclass
class StartInfo:
    """Fields a session's summary keeps from its start: the device, and the user known then."""

    values: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_live(cls, live: LiveSession) -> StartInfo:
        values = {name: getattr(live, name) or "" for name in START_FIELDS}
        return cls(values=values, metadata=dict(live.metadata))


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
    inactivity_ms: int
    max_duration_ms: int

    def has_ended(self, *, now_ms: int, start_ms: int, last_received_ms: int) -> bool:
        return now_ms - last_received_ms >= self.inactivity_ms or now_ms - start_ms >= self.max_duration_ms


class SessionWriter:
    """Writes extracted batches and keeps session summaries up to date."""

    def __init__(self, *, store: Store, lifecycle: Lifecycle, start_info: StartInfoLookup | None = None) -> None:
        self._store = store
        self._lifecycle = lifecycle
        self._lookup = start_info
        self._start_info: dict[str, StartInfo] = {}

    async def stored(self, ids: Sequence[BatchId]) -> set[BatchId]:
        """Return which of `ids` already have their `session_batches` marker."""
        if not ids:
            return set()
        rows = await self._store.db.query(
            """
            SELECT project_id, session_id, tab_id, seq FROM session_batches
            WHERE (project_id, session_id, tab_id, seq) IN {ids:Array(Tuple(String, String, String, UInt32))}
            """,
            {"ids": list(ids)},
        )
        return {(project, session, tab, seq) for project, session, tab, seq in rows}

    async def write(self, batches: Sequence[ExtractedBatch]) -> None:
        """Write chunks, then events, then the markers; see the module docstring for why in this order."""
        if not batches:
            return
        chunks = [ReplayChunk(b.project_id, b.session_id, b.key, b.events_json) for b in batches]
        event_rows = [row for batch in batches for row in batch.event_rows()]
        await asyncio.gather(
            self._store.replay.write(chunks), self._store.db.insert("session_events", event_rows, EVENT_COLUMNS)
        )
        await self._store.db.insert("session_batches", [batch.batch_row() for batch in batches], BATCH_COLUMNS)

    async def summarize(self, sessions: Iterable[tuple[str, str]]) -> int:
        """Recompute and write the summary of each (project_id, session_id); return how many were written."""
        by_project: dict[str, set[str]] = {}
        for project_id, session_id in sessions:
            by_project.setdefault(project_id, set()).add(session_id)
        written = 0
        for project_id, session_ids in by_project.items():
            written += await self._summarize_project(project_id, sorted(session_ids))
        return written

    async def _summarize_project(self, project_id: str, session_ids: list[str]) -> int:
        # The version is taken before reading: a later summary has read at least as much.
        version_us = time.time_ns() // 1000
        aggregates = await self._store.db.query_dicts(
            """
            SELECT
                session_id,
                argMin(tab_id, (first_ts, seq)) AS tab_id,
                toUnixTimestamp64Milli(min(first_ts)) AS start_ms,
                toUnixTimestamp64Milli(max(last_ts)) AS end_ms,
                toUnixTimestamp64Milli(max(received_at)) AS last_received_ms,
                sum(event_count) AS events,
                sum(pages) AS pages,
                sum(clicks) AS clicks,
                sum(errors) AS errors,
                argMinIf(first_url, (first_ts, seq), first_url != '') AS first_url,
                argMaxIf(user_id, (last_ts, seq), user_id != '') AS user_id,
                argMaxIf(user_anonymous_id, (last_ts, seq), user_anonymous_id != '') AS user_anonymous_id,
                arraySort(update -> update.1, groupArrayIf((seq, metadata), length(metadata) > 0)) AS metadata_updates
            FROM session_batches FINAL
            WHERE project_id = {project:String} AND session_id IN {ids:Array(String)}
            GROUP BY session_id
            """,
            {"project": project_id, "ids": session_ids},
        )
        if not aggregates:
            return 0
        starts = await self._start_infos(project_id, [row["session_id"] for row in aggregates])
        now_ms = int(time.time() * 1000)
        rows = [
            self._summary_row(project_id, row, starts.get(row["session_id"]), now_ms, version_us) for row in aggregates
        ]
        await self._store.db.insert("sessions", rows, SESSION_COLUMNS)
        return len(rows)

    def _summary_row(
        self, project_id: str, row: dict[str, Any], start: StartInfo | None, now_ms: int, version_us: int
    ) -> list[Any]:
        start = start or StartInfo()
        metadata = dict(start.metadata)
        for _, update in row["metadata_updates"]:
            metadata.update(update)
        values = dict(start.values)
        for name in ("user_id", "user_anonymous_id"):
            values[name] = row[name] or values.get(name, "")
        ended = self._lifecycle.has_ended(
            now_ms=now_ms, start_ms=row["start_ms"], last_received_ms=row["last_received_ms"]
        )
        summary = {
            **{name: values.get(name, "") for name in START_FIELDS},
            "project_id": project_id,
            "session_id": row["session_id"],
            "tab_id": row["tab_id"],
            "metadata": metadata,
            "first_url": row["first_url"],
            "start_at": row["start_ms"],
            "end_at": row["end_ms"],
            "duration_ms": max(0, row["end_ms"] - row["start_ms"]),
            "last_received_at": row["last_received_ms"],
            "pages": row["pages"],
            "events": row["events"],
            "errors": row["errors"],
            "clicks": row["clicks"],
            "ended": int(ended),
            "updated_at": version_us,
        }
        return [summary[name] for name in SESSION_COLUMNS]

    async def _start_infos(self, project_id: str, session_ids: list[str]) -> dict[str, StartInfo]:
        """Return the start info of each session: cached, else from its stored summary, else from ingest's registry."""
        infos = {sid: self._start_info[sid] for sid in session_ids if sid in self._start_info}
        unknown = [sid for sid in session_ids if sid not in infos]
        if unknown:
            for row in await self._store.db.query_dicts(
                f"""
                SELECT session_id, metadata, {", ".join(START_FIELDS)} FROM sessions FINAL
                WHERE project_id = {{project:String}} AND session_id IN {{ids:Array(String)}}
                """,
                {"project": project_id, "ids": unknown},
            ):
                values = {name: row[name] for name in START_FIELDS}
                infos[row["session_id"]] = StartInfo(values=values, metadata=dict(row["metadata"]))
        for session_id in [sid for sid in unknown if sid not in infos]:
            live = await self._lookup(project_id, session_id) if self._lookup else None
            if live is None:
                log.info("session.start_info_missing", project_id=project_id, session_id=session_id)
                continue
            infos[session_id] = StartInfo.from_live(live)
        if len(self._start_info) + len(infos) > MAX_CACHED_START_INFO:
            self._start_info.clear()
        self._start_info.update(infos)
        return infos

    async def end_idle_sessions(self, *, limit: int = 10_000) -> int:
        """Mark ended the sessions idle past the inactivity timeout or older than the maximum duration."""
        now_ms = int(time.time() * 1000)
        rows = await self._store.db.query(
            """
            SELECT project_id, session_id FROM sessions FINAL
            WHERE ended = 0 AND (
                last_received_at <= fromUnixTimestamp64Milli({idle_before:Int64}, 'UTC')
                OR start_at <= fromUnixTimestamp64Milli({started_before:Int64}, 'UTC'))
            LIMIT {limit:UInt32}
            """,
            {
                "idle_before": now_ms - self._lifecycle.inactivity_ms,
                "started_before": now_ms - self._lifecycle.max_duration_ms,
                "limit": limit,
            },
        )
        if not rows:
            return 0
        written = await self.summarize(rows)
        SESSIONS_ENDED.inc(written)
        log.info("sessions.ended", count=written)
        return written
