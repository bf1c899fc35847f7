"""Reading recorded sessions: search, one session's summary and markers, and its replay chunks in order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tandem_sessions.search.sql import Compiled
from tandem_sessions.store import Store
from tandem_sessions.store.replay import ChunkKey

SORT_COLUMNS = {
    "startedAt": "start_at",
    "duration": "duration_ms",
    "events": "events",
    "errors": "errors",
    "clicks": "clicks",
    "pages": "pages",
    "user": "user_id",
}

SUMMARY_SELECT = """
    project_id, session_id, tab_id, user_id, user_anonymous_id, metadata, browser, browser_version, os, os_version,
    device, country, first_url, toUnixTimestamp64Milli(start_at) AS start_ms, toUnixTimestamp64Milli(end_at) AS end_ms,
    duration_ms, toUnixTimestamp64Milli(last_received_at) AS last_received_ms, pages, events, errors, clicks, ended
"""

MARKER_KINDS = ("page", "click", "error", "console", "custom", "issue")
MAX_MARKERS = 5000
CHUNKS_PER_READ = 1024


def summary_json(row: dict[str, Any]) -> dict[str, Any]:
    """Return the wire form (camelCase) of a `sessions` row selected with SUMMARY_SELECT."""
    return {
        "sessionId": row["session_id"],
        "projectId": row["project_id"],
        "tabId": row["tab_id"],
        "userId": row["user_id"] or None,
        "userAnonymousId": row["user_anonymous_id"] or None,
        "metadata": dict(row["metadata"]),
        "browser": row["browser"],
        "browserVersion": row["browser_version"],
        "os": row["os"],
        "osVersion": row["os_version"],
        "device": row["device"],
        "country": row["country"],
        "firstUrl": row["first_url"],
        "startedAt": row["start_ms"],
        "endedAt": row["end_ms"],
        "durationMs": row["duration_ms"],
        "lastReceivedAt": row["last_received_ms"],
        "pages": row["pages"],
        "events": row["events"],
        "errors": row["errors"],
        "clicks": row["clicks"],
        "ended": bool(row["ended"]),
    }


@dataclass(frozen=True, kw_only=True)
class SearchPage:
    sessions: list[dict[str, Any]]
    total: int


@dataclass(frozen=True, kw_only=True)
class EventsPage:
    events_json: list[bytes]
    """Each chunk's events as a JSON array, in replay order."""
    event_count: int
    next_cursor: ChunkKey | None


class SessionReader:
    def __init__(self, *, store: Store) -> None:
        self._store = store

    async def search(
        self,
        *,
        project_id: str,
        compiled: Compiled,
        from_ms: int | None,
        to_ms: int | None,
        sort: str,
        descending: bool,
        offset: int,
        limit: int,
    ) -> SearchPage:
        parameters = {**compiled.parameters, "project": project_id}
        where = ["project_id = {project:String}", compiled.where]
        if from_ms is not None:
            where.append("start_at >= fromUnixTimestamp64Milli({from_ms:Int64}, 'UTC')")
            parameters["from_ms"] = from_ms
        if to_ms is not None:
            where.append("start_at <= fromUnixTimestamp64Milli({to_ms:Int64}, 'UTC')")
            parameters["to_ms"] = to_ms
        condition = " AND ".join(where)
        order = f"{SORT_COLUMNS[sort]} {'DESC' if descending else 'ASC'}, session_id {'DESC' if descending else 'ASC'}"
        rows = await self._store.db.query_dicts(
            f"""
            SELECT {SUMMARY_SELECT}, count() OVER () AS total
            FROM sessions FINAL
            WHERE {condition}
            ORDER BY {order}
            LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}
            """,
            {**parameters, "limit": limit, "offset": offset},
        )
        if rows:
            total = rows[0]["total"]
        elif offset == 0:
            total = 0
        else:
            counted = await self._store.db.query(f"SELECT count() FROM sessions FINAL WHERE {condition}", parameters)
            total = counted[0][0]
        return SearchPage(sessions=[summary_json(row) for row in rows], total=total)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        rows = await self._store.db.query_dicts(
            f"SELECT {SUMMARY_SELECT} FROM sessions FINAL WHERE session_id = {{session:String}} LIMIT 1",
            {"session": session_id},
        )
        return summary_json(rows[0]) if rows else None

    async def markers(self, project_id: str, session_id: str) -> list[dict[str, Any]]:
        """The session's page views, clicks, errors, console messages, custom events and issues, in time order."""
        rows = await self._store.db.query(
            """
            SELECT kind, toUnixTimestamp64Milli(timestamp), name, text, selector, url, payload
            FROM session_events FINAL
            WHERE project_id = {project:String} AND kind IN {kinds:Array(String)} AND session_id = {session:String}
            ORDER BY timestamp, seq, idx
            LIMIT {limit:UInt32}
            """,
            {"project": project_id, "session": session_id, "kinds": list(MARKER_KINDS), "limit": MAX_MARKERS},
        )
        markers = []
        for kind, timestamp, name, text, selector, url, payload in rows:
            marker: dict[str, Any] = {"kind": kind, "timestamp": timestamp}
            for key, value in (
                ("name", name),
                ("text", text),
                ("selector", selector),
                ("url", url),
                ("payload", payload),
            ):
                if value:
                    marker[key] = value
            markers.append(marker)
        return markers

    async def chunk_index(
        self, project_id: str, session_id: str, *, after: ChunkKey | None, max_events: int | None
    ) -> tuple[list[ChunkKey], int, bool]:
        """Return the next chunks after `after` holding up to `max_events` events (at least one chunk),
        their event count, and whether more chunks follow."""
        after_key = after or ChunkKey(seq=-1, tab_id="")
        rows = await self._store.db.query(
            """
            SELECT seq, tab_id, event_count FROM session_batches FINAL
            WHERE project_id = {project:String} AND session_id = {session:String}
              AND (seq > {seq:Int64} OR (seq = {seq:Int64} AND tab_id > {tab:String}))
            ORDER BY seq, tab_id
            LIMIT {limit:UInt64}
            """,
            {
                "project": project_id,
                "session": session_id,
                "seq": after_key.seq,
                "tab": after_key.tab_id,
                # A page needs at most max_events chunks with events; empty chunks can only shorten it.
                "limit": max_events + 1 if max_events is not None else 2**63 - 1,
            },
        )
        keys: list[ChunkKey] = []
        total = 0
        for seq, tab_id, event_count in rows:
            if keys and max_events is not None and total + event_count > max_events:
                return keys, total, True
            keys.append(ChunkKey(seq=seq, tab_id=tab_id))
            total += event_count
        # Empty batches (no events) can fill the LIMIT before the events do: then more may follow.
        return keys, total, max_events is not None and len(rows) > max_events

    async def events_page(
        self, project_id: str, session_id: str, *, after: ChunkKey | None, max_events: int
    ) -> EventsPage:
        keys, count, more = await self.chunk_index(project_id, session_id, after=after, max_events=max_events)
        chunks = await self._store.replay.read(project_id, session_id, keys)
        return EventsPage(
            events_json=chunks,
            event_count=count,
            next_cursor=keys[-1] if more else None,
        )

    async def chunks_json(self, project_id: str, session_id: str, keys: list[ChunkKey]) -> AsyncIterator[bytes]:
        """Yield each chunk's events as a JSON array, in the order of `keys`, reading CHUNKS_PER_READ at a time."""
        for start in range(0, len(keys), CHUNKS_PER_READ):
            window = keys[start : start + CHUNKS_PER_READ]
            for chunk in await self._store.replay.read(project_id, session_id, window):
                yield chunk
