"""A real visit in Chromium watched live by an agent in a second Chromium page, through every service."""

from __future__ import annotations

import asyncio
import time
import uuid

from playwright.async_api import expect

from tests.e2e.conftest import open_dashboard

LATE_JOIN_SECONDS = 30


async def wait_until(read, accept, timeout=5.0):
    """Poll `read()` until `accept(value)` holds; fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value {value!r}")
        await asyncio.sleep(0.1)


def replay(page):
    """The replayed user page inside the dashboard's rrweb iframe."""
    return page.frame_locator("[data-testid=replay-container] iframe")


async def test_agent_watches_visit_live(browser, tandem):
    user_id = f"e2e-{uuid.uuid4().hex[:8]}"
    shop_context = await browser.new_context(viewport={"width": 1200, "height": 800})
    shop = await shop_context.new_page()
    opened_at = time.monotonic()
    await shop.goto(f"{tandem.url}/demo/?user={user_id}")
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")

    agent = await open_dashboard(browser, tandem)
    row = agent.locator(f"[data-testid=live-row][data-user-id='{user_id}']")
    await expect(row).to_be_visible(timeout=5000)
    await row.click()
    await expect(agent.get_by_test_id("live-view-user")).to_contain_text(user_id)
    view = replay(agent)
    await expect(view.locator("#search-input")).to_be_attached(timeout=10000)

    # Typing: the field is masked by default, so the agent sees its length, not its text.
    await shop.get_by_test_id("search-input").type("lamp")
    await expect(view.locator("#search-input")).to_have_value("****", timeout=5000)
    await expect(view.locator("#search-echo")).to_have_text(await shop.get_by_test_id("search-echo").inner_text())
    await shop.get_by_test_id("search-input").fill("")
    await expect(view.locator("#search-input")).to_have_value("", timeout=5000)

    # A click whose handler changes the page.
    await shop.get_by_test_id("add-to-cart-1").click()
    await expect(shop.get_by_test_id("cart-count")).to_have_text("1")
    await expect(view.locator("#cart-count")).to_have_text("1", timeout=5000)

    # Scrolling the inner panel.
    await shop.get_by_test_id("reviews").evaluate("element => { element.scrollTop = 240; }")
    await wait_until(lambda: view.locator("#reviews").evaluate("element => element.scrollTop"), lambda top: top > 200)

    # Resizing the window: the replay's iframe takes the new viewport size.
    await shop.set_viewport_size({"width": 900, "height": 700})
    frame = agent.locator("[data-testid=replay-container] iframe")
    await wait_until(lambda: frame.get_attribute("width"), lambda width: width == "900")

    # Moving to another page of the shop.
    await shop.get_by_test_id("nav-cart").click()
    await shop.wait_for_url("**/cart.html")
    cart_heading = await shop.locator("h1").inner_text()
    await expect(view.locator("h1")).to_have_text(cart_heading, timeout=10000)

    # A second agent who joins 30 s after the page opened sees the page as it is now.
    await asyncio.sleep(max(0.0, LATE_JOIN_SECONDS - (time.monotonic() - opened_at)))
    await shop.get_by_test_id("nav-home").click()
    await shop.wait_for_url("**/demo/")
    await shop.get_by_test_id("add-to-cart-2").click()
    await expect(shop.get_by_test_id("cart-count")).to_have_text("2")
    late_agent = await open_dashboard(browser, tandem)
    await late_agent.locator(f"[data-testid=live-row][data-user-id='{user_id}']").click()
    late_view = replay(late_agent)
    await expect(late_view.locator("#cart-count")).to_have_text("2", timeout=10000)
    clock_now = await shop.get_by_test_id("clock").inner_text()
    await expect(late_view.locator("#clock")).not_to_have_text("Deals end in 15:00")
    assert clock_now != "Deals end in 15:00"

    # Both agents keep following.
    await shop.get_by_test_id("add-to-cart-3").click()
    for view in (replay(agent), late_view):
        await expect(view.locator("#cart-count")).to_have_text("3", timeout=5000)
