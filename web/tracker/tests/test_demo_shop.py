"""The demo shop's pages, and what the tracker sends while a shopper uses them."""

from __future__ import annotations

import pytest
from ingest_stub import IngestStub, StubServer
from tracker_test_helpers import PageWithConsole, wait_until

pytestmark = pytest.mark.browser

# Distinct strings, so that any trace of them in a request body is unambiguous.
TYPED = {
    "checkout-email": "zed.secret@example.org",
    "checkout-phone": "5550199887",
    "checkout-card": "4111222233334444",
    "checkout-expiry": "09/31",
    "checkout-address": "Quokkastrasse 17",
    "checkout-city": "Wombatville",
    "checkout-postal": "D-99812",
    "checkout-notes": "Leave it behind the blue gate",
}


def open_page(tab: PageWithConsole, url: str) -> None:
    tab.page.goto(url)
    tab.page.wait_for_function("() => window.tandem && window.tandem.isActive && window.tandem.isActive()")


def test_add_to_cart_updates_page(tab: PageWithConsole, server: StubServer) -> None:
    open_page(tab, server.url + "/demo/")
    page = tab.page
    page.click("[data-testid=add-to-cart-1]")
    page.click("[data-testid=add-to-cart-3]")

    assert page.text_content("[data-testid=cart-count]") == "2"
    assert page.locator("#activity li").count() == 2
    assert "Trail Mug" in page.text_content("#activity")


def test_cart_and_checkout_flow(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_page(tab, server.url + "/demo/")
    page = tab.page
    page.click("[data-testid=add-to-cart-2]")
    page.click("[data-testid=nav-cart]")
    page.wait_for_url("**/demo/cart.html")
    assert "Canvas Tote" in page.text_content("[data-testid=cart-lines]")
    assert page.text_content("[data-testid=cart-total]") == "$22.50"

    page.click("[data-testid=nav-checkout]")
    page.wait_for_url("**/demo/checkout.html")
    page.click("[data-testid=place-order]")
    assert "is confirmed" in page.text_content("[data-testid=confirmation]")
    assert page.text_content("[data-testid=cart-count]") == "0"
    wait_until(
        lambda: any(e["data"]["payload"]["name"] == "order_placed" for e in stub.custom_events("tandem.event")),
        message="the order_placed event",
    )


def test_typed_text_never_sent(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_page(tab, server.url + "/demo/")
    page = tab.page
    page.fill("[data-testid=search-input]", "wombatsearch")
    assert page.text_content("#search-echo") == "Showing 0 of 6 products"
    page.click("[data-testid=nav-checkout]")
    page.wait_for_url("**/demo/checkout.html")
    page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    for testid, text in TYPED.items():
        page.type(f"[data-testid={testid}]", text, delay=5)
    page.select_option("[data-testid=checkout-country]", "JP")
    page.click("[data-testid=place-order]")
    page.click("[data-testid=nav-home]")
    page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    wait_until(lambda: len(stub.start_requests) >= 3, message="the third page's start")
    wait_until(lambda: stub.custom_events("tandem.pagehide"), message="tandem.pagehide")

    bodies = "\n".join(stub.all_request_bodies())
    inputs = [e for e in stub.accepted_events() if e["type"] == 3 and e["data"].get("source") == 5]
    assert inputs, "no input events were recorded"
    for text in [*TYPED.values(), "wombatsearch", "csrf-7f3a9c1e55d2"]:
        assert text not in bodies
        assert text.replace(" ", "") not in bodies.replace(" ", "")
    # The select's options are page content; its chosen value must still be masked.
    for event in inputs:
        assert set(event["data"]["text"]) <= {"*"}, event


def test_reviews_panel_scrolls(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_page(tab, server.url + "/demo/")
    page = tab.page
    reviews = page.locator("[data-testid=reviews]")
    assert page.evaluate("(panel => panel.scrollHeight > 3 * panel.clientHeight)(document.getElementById('reviews'))")
    reviews.hover()
    page.mouse.wheel(0, 600)

    scrolls = wait_until(
        lambda: [e for e in stub.accepted_events() if e["type"] == 3 and e["data"].get("source") == 3],
        message="a scroll event",
    )
    assert scrolls[-1]["data"]["y"] > 0


def test_clock_ticks(tab: PageWithConsole, server: StubServer) -> None:
    open_page(tab, server.url + "/demo/cart.html")
    first = tab.page.text_content("#clock")
    tab.page.wait_for_function(f"() => document.getElementById('clock').textContent !== {first!r}", timeout=3000)

    assert tab.page.text_content("#clock").startswith("Deals end in ")


def test_coupon_reports_issue(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    open_page(tab, server.url + "/demo/cart.html")
    tab.page.fill("[data-testid=coupon]", "SAVE10")
    tab.page.click("[data-testid=apply-coupon]")

    assert tab.page.text_content("[data-testid=coupon-message]") == "This coupon is not valid."
    issues = wait_until(lambda: stub.custom_events("tandem.issue"), message="tandem.issue")
    assert issues[0]["data"]["payload"]["name"] == "coupon_rejected"
