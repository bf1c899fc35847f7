"""The built tracker in headless Chromium, against the ingest stub."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from ingest_stub import IngestStub, StubServer
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


def open_demo(tab: PageWithConsole, server: StubServer, path: str = "/demo/") -> None:
    tab.page.goto(server.url + path)
    tab.page.wait_for_function("() => window.tandem && window.tandem.tracker && window.tandem.isActive()")


def first_page_batch(stub: IngestStub) -> Any:
    return wait_until(
        lambda: next((b for b in stub.accepted_batches() if any(e["type"] == META for e in b.events)), None),
        message="a batch with a Meta event",
    )


def test_snippet_starts_with_queued_identity(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)

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
    assert tab.page.evaluate("window.tandem.getSessionID()") == stub.start_responses[0]["sessionID"]
    assert tab.page.evaluate("typeof window.TandemTracker") == "function"
    assert tab.errors == []


def test_user_parameter_kept_for_tab(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server, "/demo/?user=alice")
    tab.page.click("[data-testid=nav-cart]")
    tab.page.wait_for_url("**/demo/cart.html")
    wait_until(lambda: len(stub.start_requests) >= 2, message="the cart page's start request")

    assert [request["userID"] for request in stub.start_requests] == ["alice", "alice"]


def test_batches_numbered_with_headers(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    tab.page.click("[data-testid=add-to-cart-1]")
    tab.page.mouse.move(200, 200)
    tab.page.mouse.move(300, 260)
    wait_until(lambda: len(stub.accepted_batches()) >= 2, message="two batches")

    batches = stub.accepted_batches()
    token = stub.start_responses[0]["token"]
    assert [batch.seq for batch in batches] == list(range(len(batches)))
    for batch in batches:
        assert batch.headers["Authorization"] == f"Bearer {token}"
        assert batch.headers["Content-Type"].startswith("application/json")
        assert batch.body["version"] == 1
        assert batch.body["tabId"] == stub.start_requests[0]["tabId"]


def test_page_snapshot_in_one_batch(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)

    types = [event["type"] for event in first_page_batch(stub).events]
    meta = types.index(META)
    assert types[meta + 1] == FULL_SNAPSHOT
    page_events = stub.custom_events("tandem.page")
    assert page_events[0]["data"]["payload"] == {"url": server.url + "/demo/", "title": "Tandem Shop", "referrer": ""}


def test_timestamps_use_server_clock(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.clock_skew_ms = 3_600_000
    open_demo(tab, server)

    server_now = time.time() * 1000 + stub.clock_skew_ms
    timestamps = [event["timestamp"] for event in first_page_batch(stub).events]
    assert all(abs(timestamp - server_now) < 10_000 for timestamp in timestamps), timestamps
    assert all(isinstance(timestamp, int) for timestamp in timestamps)


def test_reload_resumes_session(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    tab.page.reload()
    tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 2, message="second Meta")

    first, second = stub.start_requests[:2]
    assert second["tabId"] == first["tabId"]
    assert second["token"] == stub.start_responses[0]["token"]
    assert stub.start_responses[1]["resumed"] is True
    assert stub.start_responses[1]["sessionID"] == stub.start_responses[0]["sessionID"]
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert_numbered_across_pages(seqs)


def test_pagehide_event_reaches_server(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    tab.page.click("[data-testid=nav-checkout]")
    tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")

    wait_until(lambda: stub.custom_events("tandem.pagehide"), message="tandem.pagehide")
    hidden = wait_until(lambda: stub.custom_events("tandem.visibility"), message="tandem.visibility")
    assert hidden[0]["data"]["payload"] == {"visible": False}


def test_back_forward_cache_resumes(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    tab.page.evaluate("() => { window.pageMarker = 'first'; }")
    first_page_batch(stub)
    tab.page.click("[data-testid=nav-cart]")
    tab.page.wait_for_url("**/demo/cart.html")
    wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 2, message="the cart's Meta")
    tab.page.go_back(wait_until="commit")
    wait_until(lambda: len(stub.start_requests) >= 3, message="a start request after the restore")
    wait_until(lambda: sum(1 for e in stub.accepted_events() if e["type"] == META) >= 3, message="a third Meta")

    assert tab.page.evaluate("window.pageMarker") == "first", "the page was not restored from the cache"
    assert all(response["resumed"] for response in stub.start_responses[1:])
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert_numbered_across_pages(seqs)


def test_retries_5xx_and_429_with_same_seq(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.fail_next_batches((503, "unavailable", {}), (429, "rate_limited", {"Retry-After": "1"}))
    open_demo(tab, server)
    first_page_batch(stub)

    with stub.lock:
        attempts = [(batch.status, batch.seq) for batch in stub.batches[:3]]
    assert attempts == [(503, 0), (429, 0), (200, 0)]


def test_network_error_retried(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    tab.page.route("**/ingest/v1/web/i", lambda route: route.abort())
    tab.page.click("[data-testid=add-to-cart-2]")
    time.sleep(1.0)
    tab.page.unroute("**/ingest/v1/web/i")

    events = wait_until(lambda: stub.custom_events("tandem.event"), timeout=15, message="the add_to_cart event")
    assert events[0]["data"]["payload"]["name"] == "add_to_cart"
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert seqs == list(range(len(seqs)))


def test_rejected_batch_gives_back_seq(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.fail_next_batches((400, "invalid_body", {}))
    open_demo(tab, server)
    tab.page.click("[data-testid=add-to-cart-3]")
    wait_until(lambda: stub.custom_events("tandem.event"), message="the add_to_cart event")

    with stub.lock:
        first, second = stub.batches[0], stub.batches[1]
    assert first.status == 400
    assert first.seq == 0
    assert second.status == 200
    assert second.seq == 0
    # Console messages reach Playwright asynchronously, after the batch may have reached the stub.
    wait_until(lambda: [w for w in tab.tandem_warnings() if "HTTP 400" in w], message="the HTTP 400 warning")
    tab.page.wait_for_timeout(200)
    assert len([w for w in tab.tandem_warnings() if "HTTP 400" in w]) == 1


def test_401_starts_new_session(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    stub.end_sessions()
    tab.page.click("[data-testid=add-to-cart-1]")
    wait_until(lambda: len(stub.start_requests) >= 2, message="a second start request")
    tab.page.wait_for_function("() => window.tandem.isActive()")

    assert stub.start_requests[1]["token"] is None
    new_session = stub.start_responses[1]["sessionID"]
    assert new_session != stub.start_responses[0]["sessionID"]
    wait_until(lambda: tab.page.evaluate("window.tandem.getSessionID()") == new_session, message="new session id")
    new_token = stub.start_responses[1]["token"]
    new_batches = wait_until(
        lambda: [b for b in stub.accepted_batches() if b.headers["Authorization"] == f"Bearer {new_token}"],
        message="batches of the new session",
    )
    assert new_batches[0].seq == 0
    assert [e["type"] for e in new_batches[0].events][:2] == [META, FULL_SNAPSHOT]


def test_batches_respect_max_batch_bytes(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    stub.max_batch_bytes = 4096
    open_demo(tab, server)
    for _ in range(30):
        tab.page.mouse.move(100 + _ * 10, 100 + _ * 5)
        tab.page.evaluate("document.getElementById('activity').append(document.createElement('li'))")
    tab.page.click("[data-testid=add-to-cart-2]")
    wait_until(lambda: stub.custom_events("tandem.event"), message="the add_to_cart event")

    with stub.lock:
        batches = list(stub.batches)
    for batch in batches:
        has_snapshot = any(event["type"] == FULL_SNAPSHOT for event in batch.events)
        if len(batch.raw_body.encode()) > stub.max_batch_bytes:
            assert len(batch.events) <= 2 and has_snapshot, [e["type"] for e in batch.events]
            assert batch.status == 413
    assert len([w for w in tab.tandem_warnings() if "HTTP 413" in w]) == 1


def test_full_queue_drops_mutations(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    tab.page.route("**/ingest/v1/web/i", lambda route: route.abort())
    tab.page.evaluate(
        """async () => {
            // New nodes rather than one attribute rewritten: the throttle coalesces the latter per node.
            const target = document.getElementById('activity');
            for (let i = 0; i < 5200; i++) {
                target.append(document.createElement('i'));
                await new Promise((resolve) => setTimeout(resolve, 0));
            }
        }"""
    )
    tab.page.unroute("**/ingest/v1/web/i")

    dropped = wait_until(lambda: stub.custom_events("tandem.dropped"), timeout=40, message="tandem.dropped")
    assert dropped[0]["data"]["payload"]["count"] > 0
    # The replay has a gap at the drop, so the tracker takes a new snapshot once the drop is reported.
    wait_until(
        lambda: sum(1 for event in stub.accepted_events() if event["type"] == FULL_SNAPSHOT) >= 2,
        message="a full snapshot after the drop",
    )
    with stub.lock:
        queued_at_recovery = max(len(batch.events) for batch in stub.batches if batch.status == 200)
    assert queued_at_recovery <= 5001


def test_heartbeat_when_page_is_quiet(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server, "/quiet.html")
    first_page_batch(stub)
    heartbeat = wait_until(
        lambda: next((batch for batch in stub.accepted_batches() if batch.events == []), None),
        timeout=15,
        message="an empty heartbeat batch",
    )

    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert seqs == list(range(len(seqs)))
    assert heartbeat.seq == seqs[-1]


def test_custom_events_from_api(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    tab.page.evaluate(
        """() => {
            tandem.event('signup', {step: 2});
            tandem.issue('payment_failed', {code: 'card_declined'});
            tandem.setMetadata('team', 'blue');
            tandem.setUserAnonymousID('anon-7');
        }"""
    )
    wait_until(lambda: stub.custom_events("tandem.anonymous"), message="tandem.anonymous")

    assert stub.custom_events("tandem.event")[0]["data"]["payload"] == {"name": "signup", "payload": {"step": 2}}
    assert stub.custom_events("tandem.issue")[0]["data"]["payload"] == {
        "name": "payment_failed",
        "payload": {"code": "card_declined"},
    }
    assert stub.custom_events("tandem.metadata")[0]["data"]["payload"] == {"key": "team", "value": "blue"}


def test_clicks_errors_console_recorded(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    tab.page.get_by_test_id("add-to-cart-1").click()
    tab.page.evaluate(
        """() => {
            console.error('checkout failed for', 'order-17');
            setTimeout(() => { throw new Error('boom in handler'); }, 0);
            Promise.reject(new Error('rejected fetch'));
        }"""
    )
    wait_until(lambda: len(stub.custom_events("tandem.error")) >= 2, message="two tandem.error events")

    click = stub.custom_events("tandem.click")[0]["data"]["payload"]
    assert click["label"] == "Add to cart"
    assert 'data-testid="add-to-cart-1"' in click["selector"]
    errors = [event["data"]["payload"] for event in stub.custom_events("tandem.error")]
    assert {error["source"] for error in errors} == {"error", "unhandledrejection"}
    assert any("boom in handler" in error["message"] and "Error" in (error.get("stack") or "") for error in errors)
    console_events = [event["data"]["payload"] for event in stub.custom_events("tandem.console")]
    assert {"level": "error", "message": "checkout failed for order-17"} in console_events


def test_console_flood_throttled(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    tab.page.evaluate("() => { for (let i = 0; i < 500; i++) console.warn('loop', i); }")
    wait_until(lambda: stub.custom_events("tandem.console"), message="tandem.console events")
    tab.page.wait_for_timeout(300)
    messages = [event["data"]["payload"]["message"] for event in stub.custom_events("tandem.console")]
    assert 1 <= len([m for m in messages if m.startswith("loop")]) <= 20


def test_plugin_hooks(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    info = tab.page.evaluate(
        """() => new Promise((resolve) => {
            tandem.use((tracker) => tracker.onStart((session) => resolve(session)));
        })"""
    )

    assert info["sessionID"] == stub.start_responses[0]["sessionID"]
    assert info["token"] == stub.start_responses[0]["token"]
    assert info["ingestPoint"] == server.url + "/ingest"
    assert info["tabId"] == stub.start_requests[0]["tabId"]
    stopped = tab.page.evaluate(
        """() => new Promise((resolve) => {
            tandem.onStop(() => resolve(true));
            tandem.stop();
        })"""
    )
    assert stopped is True
    assert tab.page.evaluate("tandem.isActive()") is False


def test_tracker_errors_stay_inside(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_demo(tab, server)
    first_page_batch(stub)
    tab.page.evaluate("() => { window.fetch = () => { throw new Error('fetch is broken'); }; }")
    tab.page.click("[data-testid=add-to-cart-4]")
    tab.page.click("[data-testid=add-to-cart-4]")
    time.sleep(0.5)

    assert tab.page.text_content("#cart-count") == "2"
    assert tab.errors == []
    assert len([w for w in tab.tandem_warnings() if "fetch is broken" in w]) == 1
