"""Fixtures for the tracker's browser tests: the ingest stub and headless Chromium.

The tests load the built bundle, so run `cd web && node build.mjs` first. They
use CHROMIUM_PATH, else `chromium` on PATH, else Playwright's own download.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ingest_stub import IngestStub, StubServer
from tracker_test_helpers import PageWithConsole

playwright_sync = pytest.importorskip("playwright.sync_api")

DIST = Path(__file__).resolve().parents[2] / "dist"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or None


@pytest.fixture(scope="session")
def dist() -> Path:
    if not (DIST / "tracker.js").is_file() or not (DIST / "demo" / "index.html").is_file():
        pytest.fail(f"{DIST} has no tracker.js or demo/; run `cd web && node build.mjs` first.")
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


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # Playwright turns the back-forward cache off by default; the tracker must handle it.
            ignore_default_args=["--disable-back-forward-cache"],
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield launched
        launched.close()


@pytest.fixture
def tab(browser: Any, server: StubServer) -> Iterator[PageWithConsole]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield PageWithConsole(page)
    context.close()
