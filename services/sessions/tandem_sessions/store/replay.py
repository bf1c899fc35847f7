"""The replay stream: each tracker batch's rrweb events as one chunk, addressed by session, tab and seq.

A chunk is the batch's events as a JSON array, and each store compresses it its
own way. The ClickHouse table's column codec ZSTD(3) compresses runs of a
session's consecutive chunks together: 12.8x on the benchmark's sessions, against
3.3x for each chunk alone (docs/STORAGE.md). The folder store compresses each
file with zstd. The index of the chunks (times, event counts) lives in the
`session_batches` table whatever the store; a ReplayStore only keeps the bytes.
Writing a chunk twice stores it once.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:  # Python 3.14 ships zstd; older versions use the backport with the same API.
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

from tandem_sessions.store.driver import ClickHouse, StoreError


@dataclass(frozen=True, order=True)
class ChunkKey:
    """Position of a chunk in its session, in replay order: batch seq, then tab."""

    seq: int
    tab_id: str


@dataclass(frozen=True)
class ReplayChunk:
    project_id: str
    session_id: str
    key: ChunkKey
    events_json: bytes
    """The batch's events as a JSON array."""


class ReplayStore(ABC):
    """Keeps chunks. Implementations: ClickHouse table, local folder; S3 is the production seam."""

    name: str

    @abstractmethod
    async def write(self, chunks: Sequence[ReplayChunk]) -> None:
        """Store every chunk; a chunk written again replaces the same bytes."""

    @abstractmethod
    async def read(self, project_id: str, session_id: str, keys: Sequence[ChunkKey]) -> list[bytes]:
        """Return the chunks (JSON arrays) for `keys`, in the same order; raise StoreError if one is missing."""

    async def close(self) -> None:
        return None


def missing_chunk(session_id: str, key: ChunkKey) -> StoreError:
    return StoreError(
        f"The replay chunk {key.tab_id}/{key.seq} of session {session_id} is missing from the replay store."
    )


class ClickHouseReplayStore(ReplayStore):
    """Chunks in the `replay_chunks` table (ReplacingMergeTree keyed by project, session, tab, seq)."""

    name = "clickhouse"

    def __init__(self, *, db: ClickHouse) -> None:
        self._db = db

    async def write(self, chunks: Sequence[ReplayChunk]) -> None:
        rows = [[c.project_id, c.session_id, c.key.tab_id, c.key.seq, c.events_json] for c in chunks]
        await self._db.insert("replay_chunks", rows, ["project_id", "session_id", "tab_id", "seq", "data"])

    async def read(self, project_id: str, session_id: str, keys: Sequence[ChunkKey]) -> list[bytes]:
        if not keys:
            return []
        # A page's keys are consecutive in (seq, tab) order, so one range of the sort key contains them all.
        rows = await self._db.query(
            """
            SELECT tab_id, seq, data FROM replay_chunks
            WHERE project_id = {project:String} AND session_id = {session:String}
              AND seq BETWEEN {first:UInt32} AND {last:UInt32} AND tab_id IN {tabs:Array(String)}
            """,
            {
                "project": project_id,
                "session": session_id,
                "first": min(k.seq for k in keys),
                "last": max(k.seq for k in keys),
                "tabs": sorted({k.tab_id for k in keys}),
            },
            column_formats={"data": "bytes"},
        )
        # A chunk written twice before a merge has two identical rows: either will do.
        found = {ChunkKey(seq=seq, tab_id=tab_id): data for tab_id, seq, data in rows}
        return [_require(found, session_id, key) for key in keys]


class FolderReplayStore(ReplayStore):
    """Chunks as zstd-compressed files `<root>/<project>/<session>/<tab>/<seq>.json.zst`, written atomically.

    The same layout works as S3 object keys (a prefix per session, one object per chunk),
    which is the seam for production: an S3 store would PUT and GET those keys.
    TODO(an S3-compatible server in the test environment): add S3ReplayStore on that layout.
    """

    name = "folder"

    def __init__(self, *, root: Path, zstd_level: int = 3) -> None:
        self._root = root
        self._zstd_level = zstd_level
        root.mkdir(parents=True, exist_ok=True)

    def path_of(self, project_id: str, session_id: str, key: ChunkKey) -> Path:
        # Identifiers were checked with subjects.token (letters, digits, '-', '_'), so they are safe path parts.
        return self._root / project_id / session_id / key.tab_id / f"{key.seq:010d}.json.zst"

    async def write(self, chunks: Sequence[ReplayChunk]) -> None:
        await asyncio.to_thread(self._write_all, chunks)

    async def read(self, project_id: str, session_id: str, keys: Sequence[ChunkKey]) -> list[bytes]:
        return await asyncio.to_thread(self._read_all, project_id, session_id, keys)

    def _write_all(self, chunks: Sequence[ReplayChunk]) -> None:
        for chunk in chunks:
            path = self.path_of(chunk.project_id, chunk.session_id, chunk.key)
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".chunk-")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(zstd.compress(chunk.events_json, level=self._zstd_level))
                os.replace(temporary, path)
            except OSError as error:
                Path(temporary).unlink(missing_ok=True)
                raise StoreError(f"Writing the replay chunk {path} failed: {error}.", retryable=True) from None

    def _read_all(self, project_id: str, session_id: str, keys: Sequence[ChunkKey]) -> list[bytes]:
        chunks = []
        for key in keys:
            try:
                chunks.append(zstd.decompress(self.path_of(project_id, session_id, key).read_bytes()))
            except FileNotFoundError:
                raise missing_chunk(session_id, key) from None
        return chunks


def _require(found: dict[ChunkKey, bytes], session_id: str, key: ChunkKey) -> bytes:
    data = found.get(key)
    if data is None:
        raise missing_chunk(session_id, key)
    return data
