"""The real tracker in Chromium against the all-in-one server: offline for 20 s with a page change, and mutation storms.

The tests record every batch request the pages make (decompressing gzip bodies)
and check through the events API that the stored session is exactly the
batches, each once, in batch-number order.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, Request, Route, async_playwright

from tests.delivery.trackers import stored_events

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-quic"]
WEB_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
OFFLINE_SECONDS = 20.0
"""Fixed by the issue: the browser is offline for 20 s in the middle of the session."""
WAIT_SECONDS = 30.0
FULL_SNAPSHOT, INCREMENTAL, META, CUSTOM = 2, 3, 4, 5


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class BatchLog:
    """Every batch request of a browser context: its body by batch number, and the statuses answered."""

    def __init__(self, context: BrowserContext) -> None:
        self.bodies: dict[int, list[dict[str, Any]]] = {}
        self.statuses: dict[int, list[int]] = {}
        self.requests: list[tuple[float, int, bool]] = []
        """(time, seq, gzip) of each request, in the order they were made."""
        context.on("request", self._on_request)
        context.on("response", self._on_response)

    def _parse(self, request: Request) -> tuple[dict[str, Any], bool] | None:
        if not request.url.endswith("/ingest/v1/web/i") or request.method != "POST":
            return None
        body = request.post_data_buffer or b""
        gzipped = request.headers.get("content-encoding") == "gzip"
        return orjson.loads(gzip.decompress(body) if gzipped else body), gzipped

    def _on_request(self, request: Request) -> None:
        parsed = self._parse(request)
        if parsed is None:
            return
        batch, gzipped = parsed
        seq = batch["seq"]
        if seq in self.bodies:
            assert self.bodies[seq] == batch["events"], f"batch {seq} was sent twice with different events"
        self.bodies[seq] = batch["events"]
        self.requests.append((time.monotonic(), seq, gzipped))

    async def _on_response(self, response) -> None:
        parsed = self._parse(response.request)
        if parsed is not None:
            self.statuses.setdefault(parsed[0]["seq"], []).append(response.status)

    def acked(self) -> list[int]:
        return sorted(seq for seq, statuses in self.statuses.items() if any(200 <= s < 300 for s in statuses))

    def expected_events(self) -> list[dict[str, Any]]:
        return [event for seq in sorted(self.bodies) for event in self.bodies[seq]]


async def session_events(tandem, http, session_id: str, *, until, what: str) -> list[dict[str, Any]]:
    """Poll the events API until `until(events)` holds; return the events."""
    token = await tandem.agent_token(http)
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        events = await stored_events(http, tandem.url, token, session_id)
        if until(events):
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}; {len(events)} events stored")
        await asyncio.sleep(0.5)


def custom(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == CUSTOM and isinstance(e["data"], dict) and e["data"].get("tag") == tag]


async def serve_from_disk(route: Route) -> None:
    """Serve page and bundle requests from web/dist, as the HTTP cache or a service worker would offline."""
    path = route.request.url.split("://", 1)[1].split("/", 1)[1].split("?")[0]
    if path.startswith("static/"):
        file = WEB_DIST / path.removeprefix("static/")
    else:
        file = WEB_DIST / path
        if path.endswith("/"):
            file = file / "index.html"
    kinds = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".map": "application/json"}
    await route.fulfill(body=file.read_bytes(), content_type=kinds.get(file.suffix, "application/octet-stream"))


async def wait_active(page: Page) -> str:
    await page.wait_for_function(
        "() => window.tandem && window.tandem.isActive && window.tandem.isActive()", timeout=30_000
    )
    return await page.evaluate("() => window.tandem.getSessionID()")


async def test_browser_offline_page_change(tandem, http, browser: Browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    log = BatchLog(context)
    page = await context.new_page()
    await page.goto(f"{tandem.url}/demo/")
    session_id = await wait_active(page)
    await page.get_by_test_id("add-to-cart-1").click()
    await session_events(tandem, http, session_id, until=lambda e: custom(e, "tandem.event"), what="the first click")

    # Offline: two more clicks, then a page change served from disk, and 20 s without network.
    await context.set_offline(True)
    offline_at = time.monotonic()
    await page.get_by_test_id("add-to-cart-2").click()
    await page.get_by_test_id("add-to-cart-3").click()
    await context.route("**/demo/**", serve_from_disk)
    await context.route("**/static/**", serve_from_disk)
    await page.get_by_test_id("nav-cart").click()
    await page.wait_for_url("**/demo/cart.html")
    await page.wait_for_function("() => window.tandem && window.tandem.tracker")
    await asyncio.sleep(max(0.0, OFFLINE_SECONDS - (time.monotonic() - offline_at)))
    sent_offline = [seq for at, seq, _ in log.requests if at > offline_at + 0.5]
    await context.unroute("**/demo/**")
    await context.unroute("**/static/**")
    await context.set_offline(False)

    # The cart page resumes the session and sends what the shop page could not.
    assert await wait_active(page) == session_id
    await page.get_by_test_id("nav-products").hover()
    events = await session_events(
        tandem,
        http,
        session_id,
        until=lambda e: len(custom(e, "tandem.event")) >= 3 and sum(x["type"] == META for x in e) >= 2,
        what="the offline clicks and the cart page",
    )
    await asyncio.sleep(1.0)  # let the last batches of the cart page arrive too
    events = await session_events(
        tandem, http, session_id, until=lambda e: len(e) >= len(log.expected_events()), what="every batch sent"
    )
    await context.close()

    assert sent_offline == [], f"batches were sent while offline: {sent_offline}"
    # A number may be skipped (the one reserved for a keepalive batch at pagehide), never reused.
    seqs = sorted(log.bodies)
    assert seqs[0] == 0, f"batch numbers: {seqs}"
    assert seqs[-1] + 1 - len(seqs) <= 1, f"more than one batch number skipped: {seqs}"
    assert set(log.acked()) == set(seqs), f"batches never answered 2xx: {set(seqs) - set(log.acked())}"
    assert events == log.expected_events(), "the stored session is not every batch once, in order"
    clicks = [e["data"]["payload"]["name"] for e in custom(events, "tandem.event")]
    assert clicks == ["add_to_cart"] * 3
    pages = [e["data"]["payload"]["url"] for e in custom(events, "tandem.page")]
    assert pages[0].endswith("/demo/")
    assert pages[-1].endswith("/demo/cart.html")
    assert any(gzipped for _, _, gzipped in log.requests), "no batch was sent compressed"


STORM_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Storm</title>
<script>
  window.tandem = { q: [], options: { projectKey: "demo-key", ingestPoint: "/ingest" } };
  "start stop setUserID setUserAnonymousID setMetadata event issue use".split(" ").forEach(function (method) {
    window.tandem[method] = function () { window.tandem.q.push([method, [].slice.call(arguments)]); };
  });
  tandem.start();
</script>
<script async src="/static/tracker.js"></script>
</head><body><p id="spinner" data-angle="0">Spinning</p><div id="list"></div></body></html>
"""

ATTRIBUTE_STORM = """async (changes) => {
    const spinner = document.getElementById('spinner');
    for (let i = 1; i <= changes; i++) {
        spinner.setAttribute('data-angle', String(i));
        await new Promise((resolve) => setTimeout(resolve, 0));
    }
}"""

# Each round adds 1000 nodes in one mutation and removes them in the next: 2000 records a round.
NODE_STORM = """async (rounds) => {
    const list = document.getElementById('list');
    for (let round = 0; round < rounds; round++) {
        const items = [];
        for (let i = 0; i < 1000; i++) items.push(document.createElement('i'));
        list.append(...items);
        await new Promise((resolve) => setTimeout(resolve, 0));
        list.replaceChildren();
        await new Promise((resolve) => setTimeout(resolve, 0));
    }
    list.textContent = 'calm';
}"""


def attribute_values(events: list[dict[str, Any]], name: str) -> list[str]:
    values = []
    for event in events:
        data = event["data"]
        if event["type"] == INCREMENTAL and data.get("source") == 0:
            values += [change["attributes"][name] for change in data["attributes"] if name in change["attributes"]]
    return values


def mutation_records(events: list[dict[str, Any]]) -> int:
    return sum(
        len(e["data"]["adds"]) + len(e["data"]["removes"])
        for e in events
        if e["type"] == INCREMENTAL and e["data"].get("source") == 0
    )


async def test_browser_mutation_storm(tandem, http, browser: Browser):
    context = await browser.new_context()
    log = BatchLog(context)
    page = await context.new_page()
    await page.route("**/storm.html", lambda route: route.fulfill(body=STORM_PAGE, content_type="text/html"))
    await page.goto(f"{tandem.url}/storm.html")
    session_id = await wait_active(page)

    changes, rounds = 1500, 15
    await page.evaluate(ATTRIBUTE_STORM, changes)
    await page.evaluate(NODE_STORM, rounds)
    assert await page.evaluate("() => document.getElementById('spinner').dataset.angle") == str(changes)

    def settled(events: list[dict[str, Any]]) -> bool:
        reasons = {e["data"]["payload"].get("reason") for e in custom(events, "tandem.dropped")}
        snapshots = sum(e["type"] == FULL_SNAPSHOT for e in events)
        return {"node_rate", "mutation_rate"} <= reasons and snapshots >= 2

    events = await session_events(tandem, http, session_id, until=settled, what="drop markers and a new snapshot")
    await asyncio.sleep(2.0)  # the end of the last window
    events = await session_events(
        tandem, http, session_id, until=lambda e: len(e) >= len(log.expected_events()), what="every batch sent"
    )
    await context.close()

    assert events == log.expected_events(), "the stored session is not every batch once, in order"
    # Rewriting one attribute 1500 times records at most about 31 values a second, and ends on the last one.
    angles = attribute_values(events, "data-angle")
    assert 0 < len(angles) < changes / 3, len(angles)
    assert angles[-1] == str(changes)
    # 30,000 added and removed nodes: at most 10,000 records a second are kept, and every one left out is counted.
    dropped = [e for e in custom(events, "tandem.dropped") if e["data"]["payload"]["reason"] == "mutation_rate"]
    counted = sum(e["data"]["payload"]["count"] for e in dropped)
    assert counted > 0
    assert rounds * 2000 <= mutation_records(events) + counted <= rounds * 2000 + 5
    per_second = Counter()
    for event in events:
        if event["type"] == INCREMENTAL and event["data"].get("source") == 0:
            per_second[event["timestamp"] // 1000] += mutation_records([event])
    assert max(per_second.values()) <= 2 * 10_000  # a wall-clock second overlaps two of the throttle's windows
    # A full snapshot after the storm repairs the replay, and the storm does not cause a flood of them.
    dropped_at = max(e["timestamp"] for e in dropped)
    snapshots_after = [e for e in events if e["type"] == FULL_SNAPSHOT and e["timestamp"] >= dropped_at - 1000]
    assert 1 <= len(snapshots_after) <= 3
    assert sum(e["type"] == FULL_SNAPSHOT for e in events) <= 4
