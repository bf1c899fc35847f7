"""Fixtures for the tracker's browser tests: the ingest stub and headless Chromium.

The tests load the built bundle, so run `make web` first. They use
CHROMIUM_PATH, else `chromium` on PATH, else Playwright's own download. Like
the rest of the suite, they drive Chromium with Playwright's async API and
start one browser per test. A session-wide browser of the sync API would keep
an event loop running, and every async test after it in the same pytest
session would then fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ingest_stub import IngestStub, StubServer
from tracker_test_helpers import PageWithConsole

playwright_async = pytest.importorskip("playwright.async_api")

DIST = Path(__file__).resolve().parents[2] / "dist"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or None
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]


@pytest.fixture(scope="session")
def dist() -> Path:
    if not (DIST / "tracker.js").is_file() or not (DIST / "demo" / "index.html").is_file():
        pytest.fail(f"{DIST} has no tracker.js or demo/; run `make web` first.")
    return DIST


@pytest.fixture
def stub(dist: Path) -> Iterator[IngestStub]:
    yield IngestStub(dist=dist)


@pytest.fixture
def server(stub: IngestStub) -> Iterator[StubServer]:
    running = StubServer(stub)
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def browser() -> AsyncIterator[playwright_async.Browser]:
    async with playwright_async.async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            # Playwright turns the back-forward cache off by default; the tracker must handle it.
            ignore_default_args=["--disable-back-forward-cache"],
            args=CHROMIUM_ARGS,
        )
        yield chromium
        await chromium.close()


@pytest.fixture
async def tab(browser: playwright_async.Browser, server: StubServer) -> AsyncIterator[PageWithConsole]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    yield PageWithConsole(page)
    await context.close()
