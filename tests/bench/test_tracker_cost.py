"""The tracker-cost benchmark's own parts: the busy page and the OpenReplay ingest stand-in.

The benchmark itself (`python -m bench.tracker_cost`) is not run here. These
tests check that its page builds the same table on every load, and that the
OpenReplay tracker from npm sends its start request and batches to the stand-in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from tandem_runtime.embedded import free_port

from bench.tracker_cost import bundles
from bench.tracker_cost.__main__ import CHROMIUM_ARGS
from bench.tracker_cost.server import TRAFFIC, Traffic, create_app, serve

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("bundles")
    bundles.build(outdir)
    return outdir


@pytest.fixture
async def site(built: Path) -> AsyncIterator[tuple[str, Traffic]]:
    port = free_port()
    app = create_app(bundles=built, dist=bundles.DIST, tandem_url="")
    runner = await serve(app, port)
    yield f"http://127.0.0.1:{port}", app[TRAFFIC]
    await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def table_after_load(browser: Browser, url: str) -> str:
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function("window.bench && window.bench.state.ready")
    text = await page.evaluate("window.bench.tableText()")
    await context.close()
    return text


async def test_busy_page_same_table(browser: Browser, site: tuple[str, Traffic]):
    base, _ = site
    first = await table_after_load(browser, f"{base}/busy/none")
    second = await table_after_load(browser, f"{base}/busy/none")

    rows = first.split("\n")
    assert len(rows) == 2000
    assert all(row.startswith("|ORD-") for row in rows), rows[:3]
    assert first == second, "the seeded generator gave two different tables"


async def test_openreplay_standin_receives(browser: Browser, site: tuple[str, Traffic]):
    base, traffic = site
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"{base}/busy/openreplay")
    await page.wait_for_function("window.bench && window.bench.state.ready")

    await page.evaluate("window.bench.start()")
    await page.wait_for_timeout(1000)  # The tracker hands the first snapshot to its worker in the next frames.
    await page.evaluate("window.bench.stop()")  # Stopping flushes the worker's batch.
    for _ in range(50):
        if traffic.count("/openreplay/v1/web/i") > 0:
            break
        await page.wait_for_timeout(100)
    await context.close()

    assert errors == []
    assert traffic.count("/openreplay/v1/web/start") == 1
    assert traffic.count("/openreplay/v1/web/i") >= 1
    # The first snapshot of a 2,000-row table is large, even in OpenReplay's binary format.
    assert traffic.wire_bytes("/openreplay/v1/web/i") > 10_000
