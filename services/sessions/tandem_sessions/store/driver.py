"""The one place that talks to ClickHouse: a server through clickhouse-connect, or the embedded chdb engine.

Both run the same SQL. clickhouse-connect's clients are synchronous, so every call
runs on a small thread pool, and each worker thread keeps its own client: an HTTP
client with its own session, or its own chdb connection handle to the shared engine.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import clickhouse_connect
import structlog
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError
from prometheus_client import Counter, Histogram

log = structlog.get_logger(__name__)

QUERY_SECONDS = Histogram(
    "tandem_sessions_store_query_duration_seconds",
    "Time of one ClickHouse call, by kind (query, command or insert).",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
INSERT_ROWS = Histogram(
    "tandem_sessions_store_insert_rows",
    "Rows per ClickHouse insert, by table.",
    ["table"],
    buckets=(1, 10, 100, 1_000, 10_000, 100_000),
)
STORE_ERRORS = Counter("tandem_sessions_store_errors_total", "Failed ClickHouse calls, by server error code.", ["code"])

# Server error codes that mean "try again later" rather than "this request can never work"
# (ClickHouse's src/Common/ErrorCodes.cpp).
RETRYABLE_CODES = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        164,  # READONLY
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
    }
)

_CODE = re.compile(r"Code: (\d+)")
_TRAILERS = re.compile(r"(Stack trace|\s*\(version \d).*", re.DOTALL)
MAX_MESSAGE_CHARS = 600


class StoreError(Exception):
    """A failed ClickHouse call: the server's error code (None when unknown) and its message, without a stack trace."""

    def __init__(self, message: str, *, code: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable

    @classmethod
    def from_driver(cls, error: Exception) -> StoreError:
        text = str(error)
        code = getattr(error, "code", None)
        if code is None and (found := _CODE.search(text)):
            code = int(found.group(1))
        text = _TRAILERS.sub("", text).strip()
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[:MAX_MESSAGE_CHARS] + "…"
        connection_failed = isinstance(error, OperationalError) and code is None
        return cls(text or type(error).__name__, code=code, retryable=connection_failed or code in RETRYABLE_CODES)


class ClickHouse:
    """Async access to ClickHouse. Build it with `ClickHouse.open`, close it with `close`."""

    def __init__(self, *, dsn: str, chdb_path: Path | None, threads: int) -> None:
        if not dsn and chdb_path is None:
            raise ValueError("Give a ClickHouse DSN or a chdb data path.")
        self.embedded = not dsn
        self._dsn = dsn or f"chdb://{chdb_path.resolve()}"
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="clickhouse")
        self._local = threading.local()
        self._clients: list[Client] = []
        self._clients_lock = threading.Lock()

    @classmethod
    async def open(cls, *, dsn: str = "", chdb_path: Path | None = None, threads: int = 4) -> ClickHouse:
        """Connect and check the connection with `SELECT 1`; raise StoreError when that fails."""
        if chdb_path is not None and not dsn:
            chdb_path.mkdir(parents=True, exist_ok=True)
        db = cls(dsn=dsn, chdb_path=chdb_path, threads=threads)
        try:
            await db.query("SELECT 1")
        except BaseException:
            # Cancelled too: chdb keeps an engine open per process, so an unclosed one blocks the next open.
            await db.close()
            raise
        log.info("store.connected", embedded=db.embedded, threads=threads)
        return db

    async def command(self, sql: str, parameters: dict[str, Any] | None = None) -> None:
        """Run a statement that returns no rows (DDL, INSERT … SELECT)."""
        await self._run("command", lambda client: client.command(sql, parameters=parameters))

    async def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        column_formats: dict[str, str] | None = None,
    ) -> list[tuple]:
        """Run a SELECT with server-side parameters (`{name:Type}` in the SQL) and return its rows."""

        def run(client: Client) -> list[tuple]:
            return client.query(sql, parameters=parameters, column_formats=column_formats).result_rows

        return await self._run("query", run)

    async def query_dicts(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return each row as a dict keyed by column name."""

        def run(client: Client) -> list[dict[str, Any]]:
            result = client.query(sql, parameters=parameters)
            names = result.column_names
            return [dict(zip(names, row, strict=True)) for row in result.result_rows]

        return await self._run("query", run)

    async def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]) -> None:
        """Insert rows in one block. Timestamps are integers in the column's unit (milliseconds for DateTime64(3))."""
        if not rows:
            return
        INSERT_ROWS.labels(table).observe(len(rows))
        await self._run("insert", lambda client: client.insert(table, rows, column_names=list(column_names)))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._shutdown)
        log.info("store.closed", embedded=self.embedded)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except ClickHouseError as error:
                log.warning("store.close_failed", error=str(error))

    async def _run(self, kind: str, call) -> Any:
        def in_thread() -> Any:
            started = time.perf_counter()
            try:
                return call(self._client())
            except ClickHouseError as error:
                failure = StoreError.from_driver(error)
                STORE_ERRORS.labels(str(failure.code)).inc()
                raise failure from None
            except (ValueError, TypeError, OverflowError) as error:
                # The driver converts values to column types before sending: such data can never be stored.
                STORE_ERRORS.labels("conversion").inc()
                raise StoreError(f"A value does not fit its column: {error}") from None
            finally:
                QUERY_SECONDS.labels(kind).observe(time.perf_counter() - started)

        return await asyncio.get_running_loop().run_in_executor(self._executor, in_thread)

    def _client(self) -> Client:
        client = getattr(self._local, "client", None)
        if client is None:
            # An HTTP client shares no session with the other threads' clients, so they may run at once.
            options: dict[str, Any] = {} if self.embedded else {"autogenerate_session_id": False}
            client = clickhouse_connect.get_client(dsn=self._dsn, **options)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client
