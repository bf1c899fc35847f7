"""Fixtures of the session store tests: chdb in the test's tmp folder, and the writer and reader on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from tandem_sessions.extract import extract
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store import Store, open_store
from tandem_sessions.store.reader import SessionReader
from tandem_sessions.store.writer import Lifecycle, SessionWriter


def make_settings(data_dir: Path, **overrides) -> SessionsSettings:
    values = {
        "data_dir": data_dir,
        "consumer_fetch_timeout_seconds": 0.2,
        "consumer_ack_wait_seconds": 2.0,
        "consumer_retry_delay_seconds": 0.2,
        "lifecycle_interval_seconds": 0.5,
        "store_threads": 2,
        **overrides,
    }
    return SessionsSettings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> SessionsSettings:
    return make_settings(tmp_path / "data")


@pytest.fixture
async def store(settings: SessionsSettings) -> AsyncIterator[Store]:
    opened = await open_store(settings)
    yield opened
    await opened.close()


@pytest.fixture
def writer(store: Store) -> SessionWriter:
    # A session idles out after a day here, so that data from 2025 does not count as ended.
    return SessionWriter(store=store, lifecycle=Lifecycle(inactivity_ms=10**12, max_duration_ms=10**12))


@pytest.fixture
def reader(store: Store) -> SessionReader:
    return SessionReader(store=store)


async def write_batches(writer: SessionWriter, messages: list[dict]) -> None:
    """Store batches straight through the writer, as the consumer does after a fetch."""
    await writer.write([extract(message) for message in messages])
    await writer.summarize({(m["projectId"], m["sessionId"]) for m in messages})


async def wait_for(check: Callable[[], Awaitable[object]], *, timeout: float = 15.0, what: str = "condition") -> object:
    """Poll `check` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting for {what}; last value: {value!r}")
        await asyncio.sleep(0.1)
