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


async def open_page(tab: PageWithConsole, url: str) -> None:
    await tab.page.goto(url)
    await tab.page.wait_for_function("() => window.tandem && window.tandem.isActive && window.tandem.isActive()")


async def test_add_to_cart_updates_page(tab: PageWithConsole, server: StubServer) -> None:
    await open_page(tab, server.url + "/demo/")
    page = tab.page
    await page.click("[data-testid=add-to-cart-1]")
    await page.click("[data-testid=add-to-cart-3]")

    assert await page.text_content("[data-testid=cart-count]") == "2"
    assert await page.locator("#activity li").count() == 2
    assert "Trail Mug" in await page.text_content("#activity")


async def test_cart_and_checkout_flow(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_page(tab, server.url + "/demo/")
    page = tab.page
    await page.click("[data-testid=add-to-cart-2]")
    await page.click("[data-testid=nav-cart]")
    await page.wait_for_url("**/demo/cart.html")
    assert "Canvas Tote" in await page.text_content("[data-testid=cart-lines]")
    assert await page.text_content("[data-testid=cart-total]") == "$22.50"

    await page.click("[data-testid=nav-checkout]")
    await page.wait_for_url("**/demo/checkout.html")
    await page.click("[data-testid=place-order]")
    assert "is confirmed" in await page.text_content("[data-testid=confirmation]")
    assert await page.text_content("[data-testid=cart-count]") == "0"
    await wait_until(
        lambda: any(e["data"]["payload"]["name"] == "order_placed" for e in stub.custom_events("tandem.event")),
        message="the order_placed event",
    )


async def test_typed_text_never_sent(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_page(tab, server.url + "/demo/")
    page = tab.page
    await page.fill("[data-testid=search-input]", "wombatsearch")
    assert await page.text_content("#search-echo") == "Showing 0 of 6 products"
    await page.click("[data-testid=nav-checkout]")
    await page.wait_for_url("**/demo/checkout.html")
    await page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    for testid, text in TYPED.items():
        await page.type(f"[data-testid={testid}]", text, delay=5)
    await page.select_option("[data-testid=checkout-country]", "JP")
    await page.click("[data-testid=place-order]")
    await page.click("[data-testid=nav-home]")
    await page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    await wait_until(lambda: len(stub.start_requests) >= 3, message="the third page's start")
    await wait_until(lambda: stub.custom_events("tandem.pagehide"), message="tandem.pagehide")

    bodies = "\n".join(stub.all_request_bodies())
    inputs = [e for e in stub.accepted_events() if e["type"] == 3 and e["data"].get("source") == 5]
    assert inputs, "no input events were recorded"
    for text in [*TYPED.values(), "wombatsearch", "csrf-7f3a9c1e55d2"]:
        assert text not in bodies
        assert text.replace(" ", "") not in bodies.replace(" ", "")
    # The select's options are page content; its chosen value must still be masked.
    for event in inputs:
        assert set(event["data"]["text"]) <= {"*"}, event


async def test_reviews_panel_scrolls(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_page(tab, server.url + "/demo/")
    page = tab.page
    reviews = page.locator("[data-testid=reviews]")
    tall = "(panel => panel.scrollHeight > 3 * panel.clientHeight)(document.getElementById('reviews'))"
    assert await page.evaluate(tall)
    await reviews.hover()
    await page.mouse.wheel(0, 600)

    scrolls = await wait_until(
        lambda: [e for e in stub.accepted_events() if e["type"] == 3 and e["data"].get("source") == 3],
        message="a scroll event",
    )
    assert scrolls[-1]["data"]["y"] > 0


async def test_clock_ticks(tab: PageWithConsole, server: StubServer) -> None:
    await open_page(tab, server.url + "/demo/cart.html")
    first = await tab.page.text_content("#clock")
    await tab.page.wait_for_function(f"() => document.getElementById('clock').textContent !== {first!r}", timeout=3000)

    assert (await tab.page.text_content("#clock")).startswith("Deals end in ")


async def test_coupon_reports_issue(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    await open_page(tab, server.url + "/demo/cart.html")
    await tab.page.fill("[data-testid=coupon]", "SAVE10")
    await tab.page.click("[data-testid=apply-coupon]")

    assert await tab.page.text_content("[data-testid=coupon-message]") == "This coupon is not valid."
    issues = await wait_until(lambda: stub.custom_events("tandem.issue"), message="tandem.issue")
    assert issues[0]["data"]["payload"]["name"] == "coupon_rejected"
