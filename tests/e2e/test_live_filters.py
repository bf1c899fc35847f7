"""Two real visits in Chromium with different users and metadata; the dashboard's search and menus pick one."""

from __future__ import annotations

import uuid

from playwright.async_api import expect

from tests.e2e.conftest import open_dashboard


async def open_shop(browser, tandem, user_id: str):
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    shop = await context.new_page()
    await shop.goto(f"{tandem.url}/demo/?user={user_id}")
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")
    return shop


def rows(page):
    return page.locator("[data-testid=live-row]")


def row_of(page, user_id: str):
    return page.locator(f"[data-testid=live-row][data-user-id='{user_id}']")


async def search(page, text: str) -> None:
    await page.get_by_test_id("live-search").fill(text)
    await page.get_by_test_id("live-search-submit").click()


async def test_search_picks_matching_tab(browser, tandem):
    suffix = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    await open_shop(browser, tandem, alice)  # the demo shop sets plan=pro
    bob_shop = await open_shop(browser, tandem, bob)
    await bob_shop.evaluate("() => window.tandem.setMetadata('plan', 'free')")

    agent = await open_dashboard(browser, tandem)
    await expect(rows(agent)).to_have_count(2, timeout=5000)

    await search(agent, "meta.plan:free")
    await expect(rows(agent)).to_have_count(1, timeout=5000)
    await expect(row_of(agent, bob)).to_be_visible()

    await search(agent, f"user:{alice} browser:*chrome")  # Chrome, or HeadlessChrome here
    await expect(rows(agent)).to_have_count(1, timeout=5000)
    await expect(row_of(agent, alice)).to_be_visible()

    # The metadata menu lists both plans with their counts, and choosing one rewrites the search.
    await search(agent, "")
    await expect(rows(agent)).to_have_count(2, timeout=5000)
    plan_menu = agent.get_by_test_id("filter-meta.plan")
    await expect(plan_menu.locator("option")).to_have_count(3)
    await plan_menu.select_option("pro")
    await expect(agent.get_by_test_id("live-search")).to_have_value("meta.plan:pro")
    await expect(rows(agent)).to_have_count(1, timeout=5000)
    await expect(row_of(agent, alice)).to_be_visible()

    # The server rejects an invalid search with its reason, and the socket keeps working.
    await search(agent, "user:alice THEN")
    await expect(agent.get_by_test_id("live-search-error")).to_contain_text("THEN")


async def test_grid_watches_two_tabs(browser, tandem):
    suffix = uuid.uuid4().hex[:6]
    alice, bob = f"alice-{suffix}", f"bob-{suffix}"
    alice_shop = await open_shop(browser, tandem, alice)
    await open_shop(browser, tandem, bob)

    agent = await open_dashboard(browser, tandem)
    for user_id in (alice, bob):
        await row_of(agent, user_id).get_by_test_id("grid-toggle").check()
    await expect(agent.get_by_test_id("nav-grid")).to_have_text("Grid (2)")
    await agent.get_by_test_id("nav-grid").click()

    cells = agent.get_by_test_id("grid-cell")
    await expect(cells).to_have_count(2)
    alice_cell = agent.locator(f"[data-testid=grid-cell][data-user-id='{alice}']")
    alice_replay = alice_cell.frame_locator("[data-testid=replay-container] iframe")
    await expect(alice_replay.locator("#cart-count")).to_have_text("0", timeout=10000)
    await alice_shop.get_by_test_id("add-to-cart-1").click()
    await expect(alice_replay.locator("#cart-count")).to_have_text("1", timeout=5000)

    # Full size opens the single live view of that session, which starts at its latest page.
    await alice_cell.get_by_test_id("grid-open").click()
    # The grid's own views stay until the route changes, and a locator that matches them too fails at once.
    await expect(agent.get_by_test_id("live-grid")).to_be_hidden()
    await expect(agent.get_by_test_id("live-view-user")).to_contain_text(alice)
    full = agent.frame_locator("[data-testid=live-view] [data-testid=replay-container] iframe")
    await expect(full.locator("#cart-count")).to_have_text("1", timeout=10000)
