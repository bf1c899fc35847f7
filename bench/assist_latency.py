"""Assist latency: an agent's click in the replay to the handler on the user's page, and call set-up time.

    .venv/bin/python -m bench.assist_latency [--clicks 40] [--calls 5]

Runs `python -m tandem run` as a child process and Chromium with fake media, in a
network namespace with only `lo` (the script re-runs itself under `unshare -n`,
as root), so WebRTC gathers loopback candidates only. Both pages run in one
Chromium and read one clock (`performance.timeOrigin + performance.now()`).

- Control: the dashboard holds control and clicks "Add to cart" in the replay;
  a sample is the time from the overlay's click to the shop's click handler.
  Baseline: a `ping` and its `pong` on the same signal socket, the round trip
  to the server without the room's key-value read and NATS fan-out.
- Call: the user accepts; a sample is the time from the accept click until both
  sides have rendered a video frame. Baseline: two RTCPeerConnections in one page
  that exchange offer, answer and candidates directly, until the first frame.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import uuid

from playwright.async_api import Page, async_playwright

from bench.common import Server, machine, start_server, summary_ms

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
IN_NAMESPACE = "TANDEM_IN_NETNS"
NOW = "performance.timeOrigin + performance.now()"

FIRST_FRAME_SCRIPT = f"""(video) => new Promise((resolve) => video.requestVideoFrameCallback(() => resolve({NOW})))"""

LOCAL_CALL_SCRIPT = f"""async () => {{
    const stream = await navigator.mediaDevices.getUserMedia({{video: true, audio: true}});
    const started = {NOW};
    const a = new RTCPeerConnection(), b = new RTCPeerConnection();
    a.onicecandidate = (e) => b.addIceCandidate(e.candidate);
    b.onicecandidate = (e) => a.addIceCandidate(e.candidate);
    const video = document.createElement("video");
    video.muted = true; video.autoplay = true; document.body.append(video);
    const frame = new Promise((resolve) => {{
        b.ontrack = (e) => {{ video.srcObject = e.streams[0]; video.requestVideoFrameCallback(() => resolve({NOW})); }};
    }});
    stream.getTracks().forEach((track) => a.addTrack(track, stream));
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const at = await frame;
    a.close(); b.close(); video.remove(); stream.getTracks().forEach((track) => track.stop());
    return (at - started) / 1000;
}}"""


async def sign_in(page: Page, server: Server) -> None:
    await page.goto(f"{server.url}/")
    await page.get_by_test_id("login-username").fill("admin")
    await page.get_by_test_id("login-password").fill(server.admin_password)
    await page.get_by_test_id("login-submit").click()
    await page.get_by_test_id("live-list").wait_for()


async def open_pages(browser, server: Server) -> tuple[Page, Page]:
    user_id = f"bench-{uuid.uuid4().hex[:8]}"
    shop_context = await browser.new_context(viewport={"width": 1200, "height": 800})
    # Chromium reports itself offline in a namespace with only `lo`, and the tracker sends nothing while offline.
    await shop_context.add_init_script("Object.defineProperty(Navigator.prototype, 'onLine', {get: () => true});")
    shop = await shop_context.new_page()
    await shop.goto(f"{server.url}/demo/?user={user_id}")
    agent = await (await browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
    await sign_in(agent, server)
    await agent.locator(f"[data-testid=live-row][data-user-id='{user_id}']").click(timeout=15000)
    replay = agent.frame_locator("[data-testid=replay-container] iframe")
    await replay.locator("[data-testid=add-to-cart-1]").wait_for(state="attached", timeout=15000)
    return shop, agent


async def replay_point(agent: Page, test_id: str) -> tuple[float, float]:
    return await agent.evaluate(
        """(testId) => {
            const iframe = document.querySelector("[data-testid=replay-container] iframe");
            const box = iframe.contentDocument.querySelector(`[data-testid="${testId}"]`).getBoundingClientRect();
            const frame = iframe.getBoundingClientRect();
            const scale = frame.width / iframe.offsetWidth;
            return [frame.left + (box.left + box.width / 2) * scale, frame.top + (box.top + box.height / 2) * scale];
        }""",
        test_id,
    )


async def measure_control(shop: Page, agent: Page, clicks: int) -> tuple[list[float], list[float]]:
    await agent.get_by_test_id("assist-control-button").click()
    await shop.get_by_test_id("assist-control-confirm").get_by_test_id("assist-accept").click()
    await agent.locator("[data-testid=assist-panel][data-control=granted]").wait_for()
    await shop.evaluate(
        f"""() => {{ window.handled = []; document.addEventListener("click", (event) => {{
            if (event.target.closest("[data-testid=add-to-cart-1]")) window.handled.push({NOW}); }}, true); }}"""
    )
    await agent.evaluate(
        f"""() => {{ window.sent = []; document.querySelector("[data-testid=assist-control-overlay]")
            .addEventListener("click", () => window.sent.push({NOW}), true); }}"""
    )
    x, y = await replay_point(agent, "add-to-cart-1")
    for index in range(clicks):
        await agent.mouse.click(x, y)
        await shop.wait_for_function(f"window.handled.length > {index}", timeout=10000)
        await asyncio.sleep(0.05)
    sent = await agent.evaluate("window.sent")
    handled = await shop.evaluate("window.handled")
    control = [(done - start) / 1000 for start, done in zip(sent, handled, strict=True)]

    pings = await agent.evaluate(
        """async (count) => {
            const url = `ws://${location.host}/signal/v1/ws`;
            const auth = JSON.parse(sessionStorage.getItem("tandem.auth"));
            const socket = new WebSocket(url);
            const frames = [];
            let wake = null;
            socket.onmessage = (event) => { frames.push(JSON.parse(event.data)); if (wake) wake(); };
            const next = async (type) => {
                for (;;) {
                    const index = frames.findIndex((frame) => frame.type === type);
                    if (index >= 0) return frames.splice(index, 1)[0];
                    await new Promise((resolve) => { wake = resolve; });
                }
            };
            await new Promise((resolve) => { socket.onopen = resolve; });
            const sessionId = document.querySelector("[data-testid=live-view]").dataset.sessionId;
            socket.send(JSON.stringify({type: "auth", token: auth.token, projectId: "demo", sessionId}));
            await next("hello");
            const samples = [];
            for (let index = 0; index < count; index++) {
                const started = performance.now();
                socket.send(JSON.stringify({type: "ping"}));
                await next("pong");
                samples.push((performance.now() - started) / 1000);
            }
            socket.close();
            return samples;
        }""",
        clicks,
    )
    await agent.get_by_test_id("assist-control-button").click()
    return control, pings


async def measure_calls(shop: Page, agent: Page, calls: int) -> tuple[list[float], list[float]]:
    setups, local = [], []
    for _ in range(calls):
        await agent.get_by_test_id("assist-call-button").click()
        accept = shop.get_by_test_id("assist-call-confirm").get_by_test_id("assist-accept")
        await accept.wait_for()
        await accept.evaluate(f"""(button) => button.addEventListener("click", () => {{ window.accepted = {NOW}; }})""")
        await accept.click()
        at_agent = asyncio.create_task(agent.get_by_test_id("assist-agent-remote-video").evaluate(FIRST_FRAME_SCRIPT))
        at_user = asyncio.create_task(shop.get_by_test_id("assist-remote-video").first.evaluate(FIRST_FRAME_SCRIPT))
        frames = await asyncio.wait_for(asyncio.gather(at_agent, at_user), 20)
        setups.append((max(frames) - await shop.evaluate("window.accepted")) / 1000)
        await shop.get_by_test_id("assist-end-call").click()
        await agent.locator("[data-testid=assist-panel][data-call=idle]").wait_for()
        local.append(await agent.evaluate(LOCAL_CALL_SCRIPT))
    return setups, local


async def run(clicks: int, calls: int) -> dict:
    server = await start_server()
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            shop, agent = await open_pages(browser, server)
            control, pings = await measure_control(shop, agent, clicks)
            setups, local = await measure_calls(shop, agent, calls)
            await browser.close()
    finally:
        server.stop()
    return {
        "machine": machine(),
        "control_click_to_handler_ms": summary_ms(control),
        "baseline_signal_ping_round_trip_ms": summary_ms(pings),
        "call_setup_accept_to_frames_ms": summary_ms(setups),
        "baseline_local_peer_connection_ms": summary_ms(local),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=40, help="Remote-control clicks to time.")
    parser.add_argument("--calls", type=int, default=5, help="Calls to set up and time.")
    arguments = parser.parse_args()
    if os.environ.get(IN_NAMESPACE) != "1":
        command = [
            "unshare",
            "-n",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "bench.assist_latency",
        ]
        environment = {**os.environ, IN_NAMESPACE: "1"}
        sys.exit(subprocess.call(command + sys.argv[1:], env=environment))
    print(json.dumps(asyncio.run(run(arguments.clicks, arguments.calls)), indent=2))


if __name__ == "__main__":
    main()
