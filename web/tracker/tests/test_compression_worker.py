"""Batch compression in the tracker's Web Worker, and its main-thread fallback."""

from __future__ import annotations

import asyncio

import pytest
from ingest_stub import QUIET_PAGE, IngestStub, ReceivedBatch, StubServer
from playwright.async_api import Route
from tracker_test_helpers import PageWithConsole, wait_until

pytestmark = pytest.mark.browser

META = 4

# The async snippet and about 6 KB of text, so that the first batch is over the 2 KiB
# below which the tracker sends bodies uncompressed.
PARAGRAPHS = "".join(f"<p>Paragraph {index} of a page long enough to be compressed.</p>" for index in range(120))
LARGE_PAGE = QUIET_PAGE.replace("Quiet page", "Large page").replace("<p>Nothing moves here.</p>", PARAGRAPHS)


async def open_large_page(tab: PageWithConsole, server: StubServer, headers: dict[str, str]) -> None:
    async def fulfill(route: Route) -> None:
        await route.fulfill(body=LARGE_PAGE, content_type="text/html", headers=headers)

    await tab.page.route("**/large.html", fulfill)
    await tab.page.goto(server.url + "/large.html")
    await tab.page.wait_for_function("() => window.tandem && window.tandem.isActive && window.tandem.isActive()")


async def first_batch(stub: IngestStub) -> ReceivedBatch:
    return await wait_until(
        lambda: next((b for b in stub.accepted_batches() if any(e["type"] == META for e in b.events)), None),
        message="a batch with a Meta event",
    )


async def test_worker_gzips_batch(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_large_page(tab, server, {})

    batch = await first_batch(stub)
    assert batch.headers.get("Content-Encoding") == "gzip"
    assert "Paragraph 119" in batch.raw_body
    worker_urls = [worker.url for worker in tab.page.workers]
    assert any(url.startswith("blob:") for url in worker_urls), worker_urls
    assert tab.errors == []


async def test_worker_blocked_falls_back(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    # A Content Security Policy that allows the page's scripts but no worker at all.
    await open_large_page(tab, server, {"Content-Security-Policy": "worker-src 'none'"})

    batch = await first_batch(stub)
    assert batch.headers.get("Content-Encoding") == "gzip"
    assert "Paragraph 119" in batch.raw_body
    assert tab.page.workers == []

    def worker_warnings() -> list[str]:
        return [text for text in tab.tandem_warnings() if "compression worker" in text]

    await wait_until(worker_warnings, message="a warning about the compression worker")
    await asyncio.sleep(0.2)  # Console messages reach Playwright asynchronously: a second one would be here now.
    assert len(worker_warnings()) == 1, worker_warnings()
