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


PEER_RECORDER = """() => {
    if (window.tandemPeers) return;
    const Native = window.RTCPeerConnection;
    window.tandemPeers = [];
    window.RTCPeerConnection = class extends Native {
        constructor(...args) {
            super(...args);
            this.remoteOffers = [];
            this.added = [];
            this.gathered = [];
            this.addEventListener("icecandidate", (event) => {
                this.gathered.push(event.candidate ? event.candidate.candidate : null);
            });
            window.tandemPeers.push(this);
        }
        async setRemoteDescription(description) {
            if (description && description.type === "offer") {
                this.remoteOffers.push({ sdp: description.sdp, addedBefore: this.added.length });
            }
            return super.setRemoteDescription(description);
        }
        async addIceCandidate(...args) {
            const entry = { candidate: args[0] ?? null, error: null };
            this.added.push(entry);
            try {
                return await super.addIceCandidate(...args);
            } catch (error) {
                entry.error = String(error);
                throw error;
            }
        }
    };
}"""
"""Keeps every RTCPeerConnection of a page on `window.tandemPeers`, with the offers it applied, the
remote candidates it added (and the error of each that failed) and the local candidates it gathered.
The page creates its peer connection only when a call starts, so this runs on the loaded page."""

PEER_STATE = """() => window.tandemPeers.map((pc) => ({
    remoteUfrag: /a=ice-ufrag:(\\S+)/.exec(pc.remoteDescription?.sdp ?? "")?.[1] ?? null,
    localUfrag: /a=ice-ufrag:(\\S+)/.exec(pc.localDescription?.sdp ?? "")?.[1] ?? null,
    remoteOffers: pc.remoteOffers,
    added: pc.added,
    gathered: pc.gathered,
}))"""


async def peers(page: Page) -> list[dict]:
    return await page.evaluate(PEER_STATE)


async def wait_for_peer(page: Page, condition: str, timeout: float = 15000) -> None:
    """Wait until the page's only recorded peer connection matches `condition`, a JS expression of `pc`."""
    await page.wait_for_function(
        f"() => window.tandemPeers.length === 1 && ((pc) => {condition})(window.tandemPeers[0])", timeout=timeout
    )


SELECTED_PAIR_UFRAG = """async () => {
    const stats = await window.tandemPeers[0].getStats();
    for (const report of stats.values()) {
        if (report.type !== "transport" || !report.selectedCandidatePairId) continue;
        const pair = stats.get(report.selectedCandidatePairId);
        return stats.get(pair.localCandidateId)?.usernameFragment ?? null;
    }
    return null;
}"""
"""Return the ICE ufrag of the local candidate in the selected candidate pair (the one carrying media)."""


CALL_WARNINGS = ("ICE candidate was not added", "signalling failed", "ICE restart failed", "offer failed")
"""Parts of the warnings that the assist plugin and the dashboard log when a call step fails."""


@pytest.mark.browser
@pytest.mark.loopback_network
async def test_call_ice_restart(assist_browser, tandem):
    shop, agent = await user_id_and_pages(assist_browser, tandem)
    warnings: list[str] = []

    def keep_call_warning(message) -> None:
        if any(part in message.text for part in CALL_WARNINGS):
            warnings.append(message.text)

    for page in (shop, agent):
        await page.evaluate(PEER_RECORDER)
        page.on("console", keep_call_warning)

    reconnect = agent.get_by_test_id("assist-reconnect-button")
    await expect(reconnect).to_be_hidden()
    await agent.get_by_test_id("assist-call-button").click()
    await shop.get_by_test_id("assist-call-confirm").get_by_test_id("assist-accept").click()
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: connected", timeout=10000)
    await wait_for_frames(agent, "assist-agent-remote-video")
    await wait_for_frames(shop, "assist-remote-video")
    await wait_for_peer(shop, "pc.connectionState === 'connected'")
    await wait_for_peer(agent, "pc.connectionState === 'connected' && pc.gathered.includes(null)")
    [user_before] = await peers(shop)
    [agent_before] = await peers(agent)
    assert len(user_before["remoteOffers"]) == 1
    assert user_before["remoteUfrag"] is not None

    # Reconnect restarts ICE: the agent offers again on the same peer connection, with new ICE credentials.
    await expect(reconnect).to_be_visible()
    await reconnect.click()
    await wait_for_peer(shop, "pc.remoteOffers.length === 2")
    await wait_for_peer(shop, "pc.connectionState === 'connected' && pc.signalingState === 'stable'")
    gathered_before = len(agent_before["gathered"])
    await wait_for_peer(
        agent,
        "pc.connectionState === 'connected' && pc.signalingState === 'stable' "
        f"&& pc.gathered.slice({gathered_before}).includes(null)",
    )
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: connected", timeout=10000)
    await expect(reconnect).to_be_visible()
    [user_after] = await peers(shop)
    [agent_after] = await peers(agent)
    assert user_after["remoteUfrag"] != user_before["remoteUfrag"]
    assert user_after["localUfrag"] != user_before["localUfrag"]
    assert agent_after["localUfrag"] == user_after["remoteUfrag"]
    assert agent_after["remoteUfrag"] == user_after["localUfrag"]

    # The media moves to a candidate pair of the new ICE credentials, and new video frames arrive on both sides.
    for page, ufrag in ((shop, user_after["localUfrag"]), (agent, agent_after["localUfrag"])):
        await page.wait_for_function(
            f"async (expected) => ({SELECTED_PAIR_UFRAG})() === expected", arg=ufrag, timeout=15000
        )
    assert (await wait_for_frames(agent, "assist-agent-remote-video"))["width"] > 0
    assert (await wait_for_frames(shop, "assist-remote-video"))["width"] > 0

    # Candidates gathered after the restart reach the other side, and so does the agent's end of
    # candidates (a call.ice with candidate null), which the user adds without an error.
    await wait_for_peer(
        shop, "pc.added.slice(pc.remoteOffers[1].addedBefore).some((entry) => entry.candidate === null)"
    )
    [user_after] = await peers(shop)
    [agent_after] = await peers(agent)
    added_by_user = user_after["added"][user_after["remoteOffers"][1]["addedBefore"] :]
    new_at_user = [
        e for e in added_by_user if (e["candidate"] or {}).get("usernameFragment") == user_after["remoteUfrag"]
    ]
    new_at_agent = [
        e for e in agent_after["added"] if (e["candidate"] or {}).get("usernameFragment") == agent_after["remoteUfrag"]
    ]
    assert new_at_user != []
    assert new_at_agent != []
    assert [entry for entry in user_after["added"] if entry["error"]] == []
    assert [entry for entry in agent_after["added"] if entry["error"]] == []
    assert warnings == []

    # The agent hangs up, and Reconnect goes away with the call.
    await agent.get_by_test_id("assist-call-button").click()
    await expect(agent.get_by_test_id("assist-status")).to_contain_text("Call: none", timeout=5000)
    await expect(reconnect).to_be_hidden()


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
