"""The built tracker in headless Chromium, against the ingest stub."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from ingest_stub import IngestStub, StubServer
from playwright.async_api import Route
from tandem_protocol.parts import PartJoiner
from tracker_test_helpers import PageWithConsole, wait_until

pytestmark = pytest.mark.browser

META, FULL_SNAPSHOT, INCREMENTAL, CUSTOM = 4, 2, 3, 5


def assert_numbered_across_pages(seqs: list[int]) -> None:
    """Checks batch numbers of several pages: from 0 and never repeated.

    A number may be skipped when a request was in flight at pagehide, and the
    last batch of one page may arrive after the first batch of the next.
    """
    assert seqs[0] == 0
    assert len(seqs) == len(set(seqs)), f"repeated batch numbers: {seqs}"


async def open_demo(tab: PageWithConsole, server: StubServer, path: str = "/demo/") -> None:
    await tab.page.goto(server.url + path)
    await tab.page.wait_for_function("() => window.tandem && window.tandem.tracker && window.tandem.isActive()")


async def first_page_batch(stub: IngestStub) -> Any:
    return await wait_until(
        lambda: next((b for b in stub.accepted_batches() if any(e["type"] == META for e in b.events)), None),
        message="a batch with a Meta event",
    )


async def test_snippet_starts_with_queued_identity(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)

    request = stub.start_requests[0]
    assert request["version"] == 1
    assert request["projectKey"] == "demo-key"
    assert request["userID"] == "shopper-42"
    assert request["metadata"] == {"plan": "pro"}
    assert request["token"] is None
    assert re.fullmatch(r"[a-z0-9]{16}", request["tabId"])
    assert request["url"] == server.url + "/demo/"
    assert request["title"] == "Tandem Shop"
    assert request["trackerVersion"] == "0.1.0"
    assert request["viewport"] == {"width": 1280, "height": 800}
    assert await tab.page.evaluate("window.tandem.getSessionID()") == stub.start_responses[0]["sessionID"]
    assert await tab.page.evaluate("typeof window.TandemTracker") == "function"
    assert tab.errors == []


async def test_user_parameter_kept_for_tab(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server, "/demo/?user=alice")
    await tab.page.click("[data-testid=nav-cart]")
    await tab.page.wait_for_url("**/demo/cart.html")
    await wait_until(lambda: len(stub.start_requests) >= 2, message="the cart page's start request")

    assert [request["userID"] for request in stub.start_requests] == ["alice", "alice"]


async def test_batches_numbered_with_headers(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await tab.page.click("[data-testid=add-to-cart-1]")
    await tab.page.mouse.move(200, 200)
    await tab.page.mouse.move(300, 260)
    await wait_until(lambda: len(stub.accepted_batches()) >= 2, message="two batches")

    batches = stub.accepted_batches()
    token = stub.start_responses[0]["token"]
    assert [batch.seq for batch in batches] == list(range(len(batches)))
    for batch in batches:
        assert batch.headers["Authorization"] == f"Bearer {token}"
        assert batch.headers["Content-Type"].startswith("application/json")
        assert batch.body["version"] == 1
        assert batch.body["tabId"] == stub.start_requests[0]["tabId"]


async def test_page_snapshot_in_one_batch(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)

    types = [event["type"] for event in (await first_page_batch(stub)).events]
    meta = types.index(META)
    assert types[meta + 1] == FULL_SNAPSHOT
    page_events = stub.custom_events("tandem.page")
    assert page_events[0]["data"]["payload"] == {"url": server.url + "/demo/", "title": "Tandem Shop", "referrer": ""}


async def test_timestamps_use_server_clock(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.clock_skew_ms = 3_600_000
    await open_demo(tab, server)

    server_now = time.time() * 1000 + stub.clock_skew_ms
    timestamps = [event["timestamp"] for event in (await first_page_batch(stub)).events]
    assert all(abs(timestamp - server_now) < 10_000 for timestamp in timestamps), timestamps
    assert all(isinstance(timestamp, int) for timestamp in timestamps)


async def test_reload_resumes_session(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    await tab.page.reload()
    await tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    await wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 2, message="second Meta")

    first, second = stub.start_requests[:2]
    assert second["tabId"] == first["tabId"]
    assert second["token"] == stub.start_responses[0]["token"]
    assert stub.start_responses[1]["resumed"] is True
    assert stub.start_responses[1]["sessionID"] == stub.start_responses[0]["sessionID"]
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert_numbered_across_pages(seqs)


async def test_pagehide_event_reaches_server(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    await tab.page.click("[data-testid=nav-checkout]")
    await tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")

    await wait_until(lambda: stub.custom_events("tandem.pagehide"), message="tandem.pagehide")
    hidden = await wait_until(lambda: stub.custom_events("tandem.visibility"), message="tandem.visibility")
    assert hidden[0]["data"]["payload"] == {"visible": False}


async def test_back_forward_cache_resumes(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await tab.page.evaluate("() => { window.pageMarker = 'first'; }")
    await first_page_batch(stub)
    await tab.page.click("[data-testid=nav-cart]")
    await tab.page.wait_for_url("**/demo/cart.html")
    await wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 2, message="cart's Meta")
    await tab.page.go_back(wait_until="commit")
    await wait_until(lambda: len(stub.start_requests) >= 3, message="a start request after the restore")
    await wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 3, message="a third Meta")

    assert await tab.page.evaluate("window.pageMarker") == "first", "the page was not restored from the cache"
    assert all(response["resumed"] for response in stub.start_responses[1:])
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert_numbered_across_pages(seqs)


async def test_retries_5xx_and_429_with_same_seq(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.fail_next_batches((503, "unavailable", {}), (429, "rate_limited", {"Retry-After": "1"}))
    await open_demo(tab, server)
    await first_page_batch(stub)

    with stub.lock:
        attempts = [(batch.status, batch.seq) for batch in stub.batches[:3]]
    assert attempts == [(503, 0), (429, 0), (200, 0)]


async def test_network_error_retried(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    await tab.page.route("**/ingest/v1/web/i", lambda route: route.abort())
    await tab.page.click("[data-testid=add-to-cart-2]")
    await asyncio.sleep(1.0)
    await tab.page.unroute("**/ingest/v1/web/i")

    events = await wait_until(lambda: stub.custom_events("tandem.event"), timeout=15, message="the add_to_cart event")
    assert events[0]["data"]["payload"]["name"] == "add_to_cart"
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert seqs == list(range(len(seqs)))


async def test_rejected_batch_gives_back_seq(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.fail_next_batches((400, "invalid_body", {}))
    await open_demo(tab, server)
    await tab.page.click("[data-testid=add-to-cart-3]")
    await wait_until(lambda: stub.custom_events("tandem.event"), message="the add_to_cart event")

    with stub.lock:
        first, second = stub.batches[0], stub.batches[1]
    assert first.status == 400
    assert first.seq == 0
    assert second.status == 200
    assert second.seq == 0
    # Console messages reach Playwright asynchronously, after the batch may have reached the stub.
    await wait_until(lambda: [w for w in tab.tandem_warnings() if "HTTP 400" in w], message="the HTTP 400 warning")
    await tab.page.wait_for_timeout(200)
    assert len([w for w in tab.tandem_warnings() if "HTTP 400" in w]) == 1


async def test_401_starts_new_session(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    stub.end_sessions()
    await tab.page.click("[data-testid=add-to-cart-1]")
    await wait_until(lambda: len(stub.start_requests) >= 2, message="a second start request")
    await tab.page.wait_for_function("() => window.tandem.isActive()")

    assert stub.start_requests[1]["token"] is None
    new_session = stub.start_responses[1]["sessionID"]
    assert new_session != stub.start_responses[0]["sessionID"]

    async def session_switched() -> bool:
        return await tab.page.evaluate("window.tandem.getSessionID()") == new_session

    await wait_until(session_switched, message="new session id")
    new_token = stub.start_responses[1]["token"]
    new_batches = await wait_until(
        lambda: [b for b in stub.accepted_batches() if b.headers["Authorization"] == f"Bearer {new_token}"],
        message="batches of the new session",
    )
    assert new_batches[0].seq == 0
    assert [e["type"] for e in new_batches[0].events][:2] == [META, FULL_SNAPSHOT]


async def test_batches_respect_max_batch_bytes(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.max_batch_bytes = 4096
    await open_demo(tab, server)
    for _ in range(30):
        await tab.page.mouse.move(100 + _ * 10, 100 + _ * 5)
        await tab.page.evaluate("document.getElementById('activity').append(document.createElement('li'))")
    await tab.page.click("[data-testid=add-to-cart-2]")
    await wait_until(lambda: stub.custom_events("tandem.event"), message="the add_to_cart event")

    with stub.lock:
        batches = list(stub.batches)
    # The demo page's FullSnapshot is larger than a batch, so it goes as tandem.part events.
    for batch in batches:
        assert len(batch.raw_body.encode()) <= stub.max_batch_bytes
        assert batch.status == 200
    assert stub.custom_events("tandem.part")
    rebuilt = PartJoiner().join(stub.accepted_events())
    assert [event["type"] for event in rebuilt][:2] == [META, FULL_SNAPSHOT]
    assert not [w for w in tab.tandem_warnings() if "HTTP 413" in w]


async def test_full_queue_drops_mutations(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    aborted: list[str] = []

    async def abort(route: Route) -> None:
        aborted.append(route.request.url)
        await route.abort()

    # A first batch that fails keeps the batch slot while it is retried, so the nodes below stay queued.
    await tab.page.route("**/ingest/v1/web/i", abort)
    await tab.page.evaluate("document.getElementById('activity').append(document.createElement('i'))")
    await wait_until(lambda: aborted, message="a failed batch request")
    await tab.page.evaluate(
        """async () => {
            // New nodes rather than one attribute rewritten: the throttle coalesces the latter per node.
            // One node per task, so that each is its own mutation event. A MessageChannel message
            // starts the next task without the 4 ms that Chromium adds to nested setTimeout calls.
            const target = document.getElementById('activity');
            const channel = new MessageChannel();
            for (let i = 0; i < 5200; i++) {
                target.append(document.createElement('i'));
                await new Promise((resolve) => {
                    channel.port1.onmessage = resolve;
                    channel.port2.postMessage(null);
                });
            }
        }"""
    )
    await tab.page.unroute("**/ingest/v1/web/i")

    dropped = await wait_until(lambda: stub.custom_events("tandem.dropped"), timeout=40, message="tandem.dropped")
    assert dropped[0]["data"]["payload"]["count"] > 0
    # The replay has a gap at the drop, so the tracker takes a new snapshot once the drop is reported.
    await wait_until(
        lambda: sum(1 for event in stub.accepted_events() if event["type"] == FULL_SNAPSHOT) >= 2,
        message="a full snapshot after the drop",
    )
    with stub.lock:
        queued_at_recovery = max(len(batch.events) for batch in stub.batches if batch.status == 200)
    assert queued_at_recovery <= 5001


async def test_heartbeat_when_page_is_quiet(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server, "/quiet.html")
    await first_page_batch(stub)
    heartbeat = await wait_until(
        lambda: next((batch for batch in stub.accepted_batches() if batch.events == []), None),
        timeout=15,
        message="an empty heartbeat batch",
    )

    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert seqs == list(range(len(seqs)))
    assert heartbeat.seq == seqs[-1]


async def test_custom_events_from_api(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await tab.page.evaluate(
        """() => {
            tandem.event('signup', {step: 2});
            tandem.issue('payment_failed', {code: 'card_declined'});
            tandem.setMetadata('team', 'blue');
            tandem.setUserAnonymousID('anon-7');
        }"""
    )
    await wait_until(lambda: stub.custom_events("tandem.anonymous"), message="tandem.anonymous")

    assert stub.custom_events("tandem.event")[0]["data"]["payload"] == {"name": "signup", "payload": {"step": 2}}
    assert stub.custom_events("tandem.issue")[0]["data"]["payload"] == {
        "name": "payment_failed",
        "payload": {"code": "card_declined"},
    }
    assert stub.custom_events("tandem.metadata")[0]["data"]["payload"] == {"key": "team", "value": "blue"}


async def test_clicks_errors_console_recorded(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await tab.page.get_by_test_id("add-to-cart-1").click()
    await tab.page.evaluate(
        """() => {
            console.error('checkout failed for', 'order-17');
            setTimeout(() => { throw new Error('boom in handler'); }, 0);
            Promise.reject(new Error('rejected fetch'));
        }"""
    )
    await wait_until(lambda: len(stub.custom_events("tandem.error")) >= 2, message="two tandem.error events")

    click = stub.custom_events("tandem.click")[0]["data"]["payload"]
    assert click["label"] == "Add to cart"
    assert 'data-testid="add-to-cart-1"' in click["selector"]
    errors = [event["data"]["payload"] for event in stub.custom_events("tandem.error")]
    assert {error["source"] for error in errors} == {"error", "unhandledrejection"}
    assert any("boom in handler" in error["message"] and "Error" in (error.get("stack") or "") for error in errors)
    console_events = [event["data"]["payload"] for event in stub.custom_events("tandem.console")]
    assert {"level": "error", "message": "checkout failed for order-17"} in console_events


async def test_console_flood_throttled(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await tab.page.evaluate("() => { for (let i = 0; i < 500; i++) console.warn('loop', i); }")
    await wait_until(lambda: stub.custom_events("tandem.console"), message="tandem.console events")
    await tab.page.wait_for_timeout(300)
    messages = [event["data"]["payload"]["message"] for event in stub.custom_events("tandem.console")]
    assert 1 <= len([m for m in messages if m.startswith("loop")]) <= 20


async def test_plugin_hooks(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    info = await tab.page.evaluate(
        """() => new Promise((resolve) => {
            tandem.use((tracker) => tracker.onStart((session) => resolve(session)));
        })"""
    )

    assert info["sessionID"] == stub.start_responses[0]["sessionID"]
    assert info["token"] == stub.start_responses[0]["token"]
    assert info["ingestPoint"] == server.url + "/ingest"
    assert info["tabId"] == stub.start_requests[0]["tabId"]
    stopped = await tab.page.evaluate(
        """() => new Promise((resolve) => {
            tandem.onStop(() => resolve(true));
            tandem.stop();
        })"""
    )
    assert stopped is True
    assert await tab.page.evaluate("tandem.isActive()") is False


async def test_tracker_errors_stay_inside(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_demo(tab, server)
    await first_page_batch(stub)
    await tab.page.evaluate("() => { window.fetch = () => { throw new Error('fetch is broken'); }; }")
    await tab.page.click("[data-testid=add-to-cart-4]")
    await tab.page.click("[data-testid=add-to-cart-4]")
    await asyncio.sleep(0.5)

    assert await tab.page.text_content("#cart-count") == "2"
    assert tab.errors == []
    assert len([w for w in tab.tandem_warnings() if "fetch is broken" in w]) == 1
