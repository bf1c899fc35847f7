"""Assist end to end in Chromium: the dashboard calls and controls the demo shop, with the user's consent.

Media devices are Chromium's fake camera and microphone. The call that connects
runs in a namespace with only `lo` (tests/signal/netns.py), so that WebRTC
gathers loopback candidates only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import RunningTandem, start_tandem
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, open_dashboard

ASSIST_ARGS = [
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
SHORT_CONSENT_TIMEOUT_SECONDS = 2.0
ONLINE_SCRIPT = "Object.defineProperty(Navigator.prototype, 'onLine', {get: () => true});"
"""Chromium reports itself offline in a namespace with only `lo`, and the tracker sends nothing while offline."""


@pytest.fixture
async def assist_browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + ASSIST_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def quick_tandem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningTandem]:
    """Tandem whose users have 2 s to answer a consent request."""
    monkeypatch.setenv("TANDEM_CONSENT_TIMEOUT_SECONDS", str(SHORT_CONSENT_TIMEOUT_SECONDS))
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


def replay(page: Page):
    return page.frame_locator("[data-testid=replay-container] iframe")


async def open_shop(browser: Browser, tandem: RunningTandem, user_id: str) -> Page:
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    await context.add_init_script(ONLINE_SCRIPT)
    shop = await context.new_page()
    await shop.goto(f"{tandem.url}/demo/?user={user_id}")
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")
    return shop


async def watch(browser: Browser, tandem: RunningTandem, user_id: str) -> Page:
    """Open the dashboard, open the user's live view and wait for the replay and Assist."""
    agent = await open_dashboard(browser, tandem)
    await agent.locator(f"[data-testid=live-row][data-user-id='{user_id}']").click(timeout=10000)
    await expect(replay(agent).locator("[data-testid=add-to-cart-1]")).to_be_attached(timeout=10000)
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("User's page connected", timeout=10000)
    return agent


async def user_id_and_pages(browser, tandem) -> tuple[Page, Page]:
    user_id = f"assist-{uuid.uuid4().hex[:8]}"
    shop = await open_shop(browser, tandem, user_id)
    agent = await watch(browser, tandem, user_id)
    return shop, agent


async def replay_point(agent: Page, test_id: str) -> tuple[float, float]:
    """The dashboard coordinates of an element's centre in the scaled replay."""
    return await agent.evaluate(
        """(testId) => {
            const iframe = document.querySelector("[data-testid=replay-container] iframe");
            const target = iframe.contentDocument.querySelector(`[data-testid="${testId}"]`);
            const frame = iframe.getBoundingClientRect();
            const scale = frame.width / iframe.offsetWidth;
            const box = target.getBoundingClientRect();
            return [frame.left + (box.left + box.width / 2) * scale, frame.top + (box.top + box.height / 2) * scale];
        }""",
        test_id,
    )


async def wait_for_frames(page: Page, test_id: str, timeout: float = 15.0) -> dict:
    """Wait until a video element has decoded frames and plays on, and return what it showed."""
    script = """video => ({
        width: video.videoWidth,
        time: video.currentTime,
        frames: video.getVideoPlaybackQuality().totalVideoFrames,
    })"""
    video = page.get_by_test_id(test_id).first
    deadline = asyncio.get_running_loop().time() + timeout
    first = await video.evaluate(script)
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.25)
        now = await video.evaluate(script)
        if now["width"] > 0 and now["frames"] > 0 and now["time"] > first["time"]:
            return now
    raise AssertionError(f"{test_id} showed no new frames within {timeout} s: {now}")


@pytest.mark.browser
@pytest.mark.loopback_network
async def test_call_accepted_video_both_ways(assist_browser, tandem):
    shop, agent = await user_id_and_pages(assist_browser, tandem)

    await agent.get_by_test_id("assist-call-button").click()
    dialog = shop.get_by_test_id("assist-call-confirm")
    await expect(dialog).to_be_visible(timeout=5000)
    await expect(dialog).to_contain_text("admin from our support team would like to call you.")
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: waiting for the user to answer")
    await dialog.get_by_test_id("assist-accept").click()

    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: connected", timeout=10000)
    at_agent = await wait_for_frames(agent, "assist-agent-remote-video")
    at_user = await wait_for_frames(shop, "assist-remote-video")
    assert at_agent["width"] > 0
    assert at_user["width"] > 0
    inbound = await shop.get_by_test_id("assist-remote-video").evaluate(
        "video => video.srcObject.getVideoTracks().length"
    )
    assert inbound == 1

    # The call survives a reload of the user's page: the agent offers again to the new page.
    await shop.reload()
    await expect(shop.get_by_test_id("assist-call")).to_be_visible(timeout=10000)
    await expect(shop.get_by_test_id("assist-call-confirm")).to_have_count(0)
    after_reload = await wait_for_frames(shop, "assist-remote-video")
    assert after_reload["width"] > 0
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: connected", timeout=10000)

    # The agent mutes; the user ends the call and both sides close it.
    await agent.get_by_test_id("assist-mute-button").click()
    await expect(agent.get_by_test_id("assist-mute-button")).to_have_text("Unmute")
    await shop.get_by_test_id("assist-end-call").click()
    await expect(agent.get_by_test_id("assist-notice")).to_have_text("The user ended the call.", timeout=5000)
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: none")
    await expect(shop.get_by_test_id("assist-call")).to_have_count(0)


@pytest.mark.browser
async def test_call_declined(assist_browser, tandem):
    shop, agent = await user_id_and_pages(assist_browser, tandem)
    await agent.get_by_test_id("assist-call-button").click()
    await shop.get_by_test_id("assist-call-confirm").get_by_test_id("assist-decline").click()
    await expect(agent.get_by_test_id("assist-notice")).to_have_text("The user declined the call.", timeout=5000)
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: none")
    await expect(agent.get_by_test_id("assist-call-button")).to_have_text("Call")


@pytest.mark.browser
async def test_call_unanswered(assist_browser, quick_tandem):
    shop, agent = await user_id_and_pages(assist_browser, quick_tandem)
    await agent.get_by_test_id("assist-call-button").click()
    await expect(shop.get_by_test_id("assist-call-confirm")).to_be_visible(timeout=5000)
    notice = agent.get_by_test_id("assist-notice")
    await expect(notice).to_have_text(
        "The user did not answer the call.", timeout=SHORT_CONSENT_TIMEOUT_SECONDS * 1000 + 5000
    )
    await expect(shop.get_by_test_id("assist-call-confirm")).to_have_count(0)


@pytest.mark.browser
async def test_control_click_busy_reload_esc(assist_browser, tandem):
    shop, agent = await user_id_and_pages(assist_browser, tandem)
    panel = agent.get_by_test_id("assist-panel")

    await agent.get_by_test_id("assist-control-button").click()
    dialog = shop.get_by_test_id("assist-control-confirm")
    await expect(dialog).to_contain_text("admin asks to point and click on this page for you.", timeout=5000)
    await dialog.get_by_test_id("assist-accept").click()
    await expect(panel).to_have_attribute("data-control", "granted", timeout=5000)
    await expect(shop.get_by_test_id("assist-control-bar")).to_contain_text("admin controls this page")

    # The agent's click in the replay runs the shop's own handler, and the replay then shows it.
    x, y = await replay_point(agent, "add-to-cart-1")
    await agent.mouse.click(x, y)
    await expect(shop.get_by_test_id("cart-count")).to_have_text("1", timeout=5000)
    await expect(shop.get_by_test_id("activity")).to_contain_text("Added Trail Mug")
    await expect(replay(agent).locator("[data-testid=cart-count]")).to_have_text("1", timeout=5000)
    await expect(shop.get_by_test_id("assist-pointer")).to_contain_text("admin")

    # The agent draws a stroke on the user's screen, then clears it.
    await agent.get_by_test_id("assist-draw-button").click()
    await agent.mouse.move(x - 40, y - 40)
    await agent.mouse.down()
    await agent.mouse.move(x, y - 60, steps=5)
    await agent.mouse.up()
    annotations = shop.get_by_test_id("assist-annotations")
    await expect(annotations).to_have_attribute("data-strokes", "1", timeout=5000)
    await agent.get_by_test_id("assist-clear-button").click()
    await expect(annotations).to_have_attribute("data-strokes", "0", timeout=5000)
    await agent.get_by_test_id("assist-draw-button").click()
    await expect(shop.get_by_test_id("cart-count")).to_have_text("1")

    # A second agent is told that control is busy.
    second = await watch(assist_browser, tandem, await shop.evaluate("sessionStorage.getItem('tandem-demo-user')"))
    await second.get_by_test_id("assist-control-button").click()
    await expect(second.get_by_test_id("assist-notice")).to_contain_text("Control is busy: 'admin' controls the page")
    await expect(second.get_by_test_id("assist-status")).to_contain_text("Control: admin controls the page")

    # Control survives a reload of the user's page.
    await shop.reload()
    await expect(shop.get_by_test_id("assist-control-bar")).to_be_visible(timeout=10000)
    await expect(replay(agent).locator("[data-testid=add-to-cart-2]")).to_be_attached(timeout=10000)
    await asyncio.sleep(0.5)  # The replay rebuilds the reloaded page from its new snapshot.
    x, y = await replay_point(agent, "add-to-cart-2")
    await agent.mouse.click(x, y)
    await expect(shop.get_by_test_id("cart-count")).to_have_text("2", timeout=5000)

    # The user presses Esc and control ends on both sides.
    await shop.keyboard.press("Escape")
    await expect(panel).to_have_attribute("data-control", "off", timeout=5000)
    await expect(agent.get_by_test_id("assist-notice")).to_have_text("The user took back control.")
    await expect(shop.get_by_test_id("assist-control-bar")).to_have_count(0)
    await expect(agent.get_by_test_id("assist-control-overlay")).to_be_hidden()


@pytest.mark.browser
async def test_control_declined_clicks_ignored(assist_browser, tandem):
    shop, agent = await user_id_and_pages(assist_browser, tandem)
    await agent.get_by_test_id("assist-control-button").click()
    await shop.get_by_test_id("assist-control-confirm").get_by_test_id("assist-decline").click()
    await expect(agent.get_by_test_id("assist-notice")).to_have_text("The user declined remote control.", timeout=5000)
    await expect(agent.get_by_test_id("assist-control-overlay")).to_be_hidden()

    x, y = await replay_point(agent, "add-to-cart-1")
    await agent.mouse.click(x, y)
    await asyncio.sleep(1.0)  # Long enough for a forwarded click to reach the shop, were one sent.
    await expect(shop.get_by_test_id("cart-count")).to_have_text("0")
    await expect(shop.get_by_test_id("assist-pointer")).to_have_count(0)
