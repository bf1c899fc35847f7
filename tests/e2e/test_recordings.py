"""A real visit of the demo shop in Chromium: recorded, ended, found by search, and replayed from its export."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import aiohttp
import pytest
from playwright.async_api import Browser, Page, Request, expect

from tests.conftest import RunningTandem, start_tandem
from tests.e2e.conftest import open_dashboard
from tests.sessions.conftest import wait_for

DAY_MS = 24 * 60 * 60 * 1000
REPLAY_BUNDLE = (
    Path(__file__).resolve().parents[2] / "web" / "node_modules" / "@rrweb" / "replay" / "dist" / "replay.umd.cjs"
)

# Replays the events in a fresh page with @rrweb/replay, jumps to the last event and returns the rebuilt texts.
REPLAY_TO_END = """
async (events) => {
  const root = document.createElement("div");
  document.body.appendChild(root);
  const replayer = new rrwebReplay.Replayer(events, { root, skipInactive: false, showWarning: false });
  const duration = events[events.length - 1].timestamp - events[0].timestamp;
  replayer.pause(duration);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const page = replayer.iframe.contentDocument;
  const text = (selector) => page.querySelector(selector)?.textContent ?? null;
  return { cartCount: text("#cart-count"), activity: text("#activity"), heading: text("h1") };
}
"""


@pytest.fixture
async def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningTandem]:
    # A session ends 3 s after its last batch, and the end pass runs twice a second.
    monkeypatch.setenv("TANDEM_SESSION_INACTIVITY_SECONDS", "3")
    monkeypatch.setenv("TANDEM_LIFECYCLE_INTERVAL_SECONDS", "0.5")
    monkeypatch.setenv("TANDEM_CONSUMER_FETCH_TIMEOUT_SECONDS", "0.2")
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


async def search(
    http: aiohttp.ClientSession, server: RunningTandem, token: str, q: str, from_ms: int | None = None
) -> list[dict]:
    params = {"projectId": "demo", "q": q}
    if from_ms is not None:
        params["from"] = str(from_ms)
    async with http.get(
        f"{server.url}/api/v1/sessions", params=params, headers={"Authorization": f"Bearer {token}"}
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["sessions"]


@pytest.mark.browser
async def test_recorded_visit_replays(browser: Browser, server: RunningTandem):
    user_id = f"rec-{uuid.uuid4().hex[:8]}"
    shop_context = await browser.new_context(viewport={"width": 1200, "height": 800})
    shop = await shop_context.new_page()
    await shop.goto(f"{server.url}/demo/?user={user_id}")
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")
    await shop.get_by_test_id("add-to-cart-1").click()
    await expect(shop.get_by_test_id("cart-count")).to_have_text("1")
    await shop.wait_for_timeout(500)
    final = {
        "cartCount": await shop.locator("#cart-count").text_content(),
        "activity": await shop.locator("#activity").text_content(),
        "heading": await shop.locator("h1").text_content(),
    }
    # Closing the page sends its last batch; then no data arrives and the session ends.
    await shop_context.close()

    async with aiohttp.ClientSession() as http:
        token = await server.agent_token(http)

        async def ended_session() -> list[dict]:
            return [s for s in await search(http, server, token, f"user:{user_id}") if s["ended"]]

        sessions = await wait_for(ended_session, timeout=30, what="the visit recorded and ended")
        session_id = sessions[0]["sessionId"]
        assert sessions[0]["clicks"] >= 1
        assert "Chrome" in sessions[0]["browser"]

        by_label = await search(http, server, token, f'clicked:"Add to cart" user:{user_id}')
        assert [s["sessionId"] for s in by_label] == [session_id]
        assert await search(http, server, token, f'clicked:"Place order" user:{user_id}') == []

        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{server.url}/api/v1/sessions/{session_id}/export", headers=headers) as response:
            assert response.status == 200
            events = await response.json()

    assert events[0]["type"] == 4
    player_context = await browser.new_context()
    player = await player_context.new_page()
    await player.set_content("<!doctype html><html><body></body></html>")
    await player.add_script_tag(path=str(REPLAY_BUNDLE))
    rebuilt = await player.evaluate(REPLAY_TO_END, events)
    await player_context.close()
    assert rebuilt == final

    # The dashboard's Recordings pages find the visit and play it.
    dashboard = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
    await dashboard.goto(f"{server.url}/")
    await dashboard.get_by_test_id("login-username").fill("admin")
    await dashboard.get_by_test_id("login-password").fill(server.admin_password)
    await dashboard.get_by_test_id("login-submit").click()
    await dashboard.get_by_test_id("nav-recordings").click()
    await dashboard.get_by_test_id("recordings-query").fill('user:"oops')
    await dashboard.get_by_test_id("recordings-search").click()
    await expect(dashboard.get_by_test_id("recordings-problem")).to_contain_text("position 5")
    await dashboard.get_by_test_id("recordings-query").fill(f'user:{user_id} clicked:"Add to cart"')
    await dashboard.get_by_test_id("recordings-search").click()
    row = dashboard.locator(f"[data-testid=recording-row][data-session-id='{session_id}']")
    await expect(row).to_have_count(1)
    await row.click()
    await expect(dashboard.get_by_test_id("player-user")).to_have_text(user_id)
    await expect(dashboard.locator("[data-testid=player-event][data-kind=click]").first).to_be_visible()
    stage = dashboard.frame_locator("[data-testid=player-stage] iframe")
    await expect(stage.locator("#cart-count")).to_be_attached(timeout=10000)
    await dashboard.locator("[data-testid=player-event][data-kind=click]").first.click()
    assert "?t=" in dashboard.url
    await dashboard.context.close()


def is_search_request(request: Request) -> bool:
    return urlparse(request.url).path == "/api/v1/sessions"


async def search_parameters(page: Page, action) -> tuple[dict[str, list[str]], float, float]:
    """Run `action` and return the query parameters of the search it sends, and the epoch ms before and after it."""
    before_ms = time.time() * 1000
    async with page.expect_request(is_search_request) as request_info:
        await action()
    request = await request_info.value
    after_ms = time.time() * 1000
    return parse_qs(urlparse(request.url).query), before_ms, after_ms


@pytest.mark.browser
async def test_search_time_range(browser: Browser, server: RunningTandem):
    user_id = f"range-{uuid.uuid4().hex[:8]}"
    shop_context = await browser.new_context()
    shop = await shop_context.new_page()
    await shop.goto(f"{server.url}/demo/?user={user_id}")
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")
    await shop.get_by_test_id("add-to-cart-1").click()
    await expect(shop.get_by_test_id("cart-count")).to_have_text("1")
    await shop_context.close()

    async with aiohttp.ClientSession() as http:
        token = await server.agent_token(http)

        async def recorded() -> list[dict]:
            return await search(http, server, token, f"user:{user_id}")

        sessions = await wait_for(recorded, timeout=30, what="the visit recorded")
        session_id = sessions[0]["sessionId"]
        started_at = sessions[0]["startedAt"]
        # The server keeps a session that started at `from` and leaves it out once `from` is later.
        at_start = await search(http, server, token, f"user:{user_id}", from_ms=started_at)
        assert [s["sessionId"] for s in at_start] == [session_id]
        assert await search(http, server, token, f"user:{user_id}", from_ms=started_at + 1) == []

    dashboard = await open_dashboard(browser, server)
    range_select = dashboard.get_by_test_id("recordings-range")
    row = dashboard.locator(f"[data-testid=recording-row][data-session-id='{session_id}']")
    summary = dashboard.get_by_test_id("recordings-summary")

    # The default range is the last 7 days, so `from` is 7 days before the search ran.
    # The bounds allow 1 s of clock rounding.
    params, before_ms, after_ms = await search_parameters(
        dashboard, lambda: dashboard.get_by_test_id("nav-recordings").click()
    )
    assert "from" in params
    assert before_ms - 7 * DAY_MS - 1000 <= int(params["from"][0]) <= after_ms - 7 * DAY_MS + 1000
    await expect(range_select).to_have_value("7d")
    await expect(row).to_have_count(1)

    params, _, _ = await search_parameters(dashboard, lambda: range_select.select_option("all"))
    assert "from" not in params
    assert "range=all" in dashboard.url
    await expect(row).to_have_count(1)

    # The range in the hash sets the select and the search.
    params, before_ms, after_ms = await search_parameters(
        dashboard, lambda: dashboard.evaluate("location.hash = '#/recordings?range=30d'")
    )
    assert "from" in params
    assert before_ms - 30 * DAY_MS - 1000 <= int(params["from"][0]) <= after_ms - 30 * DAY_MS + 1000
    await expect(range_select).to_have_value("30d")
    await expect(row).to_have_count(1)

    # A new range runs the search with the text in the bar, and an empty result names the range.
    await dashboard.get_by_test_id("recordings-query").fill("user:nobody")
    params, _, _ = await search_parameters(dashboard, lambda: range_select.select_option("24h"))
    assert params["q"] == ["user:nobody"]
    assert "from" in params
    await expect(summary).to_have_text("No sessions in the last 24 hours match the search. Try a wider range.")
    await expect(row).to_have_count(0)
    await dashboard.context.close()
