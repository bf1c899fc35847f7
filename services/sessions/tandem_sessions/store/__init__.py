"""Storage of recorded sessions: ClickHouse (server or embedded chdb) and the replay chunk stores."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store.driver import ClickHouse, StoreError
from tandem_sessions.store.migrations import migrate
from tandem_sessions.store.replay import ClickHouseReplayStore, FolderReplayStore, ReplayStore

log = structlog.get_logger(__name__)

__all__ = ["ClickHouse", "Store", "StoreError", "open_store"]


@dataclass
class Store:
    """The open ClickHouse connection and the replay chunk store."""

    db: ClickHouse
    replay: ReplayStore

    async def close(self) -> None:
        await self.replay.close()
        await self.db.close()


async def open_store(settings: SessionsSettings) -> Store:
    """Connect to ClickHouse (or open chdb in `<data_dir>/chdb`), apply the migrations, pick the replay store."""
    dsn = settings.clickhouse_dsn.get_secret_value()
    db = await ClickHouse.open(
        dsn=dsn, chdb_path=None if dsn else settings.data_dir / "chdb", threads=settings.store_threads
    )
    try:
        await migrate(db)
    except BaseException:  # cancelled too, so that the chdb engine is not left open
        await db.close()
        raise
    replay: ReplayStore
    if settings.replay_store == "folder":
        replay = FolderReplayStore(
            root=settings.replay_dir or settings.data_dir / "replay", zstd_level=settings.replay_zstd_level
        )
    else:
        replay = ClickHouseReplayStore(db=db)
    log.info("store.opened", embedded=db.embedded, replay_store=replay.name)
    return Store(db=db, replay=replay)
