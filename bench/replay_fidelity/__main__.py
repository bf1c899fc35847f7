"""Replay fidelity: how closely an `@rrweb/replay` replay matches the recorded page, pixel by pixel.

    .venv/bin/python -m bench.replay_fidelity [--pages iframe svg ...] [--tolerance 16]

Every page in bench/replay_fidelity/pages (files starting with `_` are only
loaded by other pages) is served from 127.0.0.1 and opened in headless Chromium
at 1000x700. `@rrweb/record` (the UMD build in web/node_modules, the recorder
that the Tandem tracker bundles) records it with the tracker's options, except
that no input is masked. Each page changes its DOM 300 ms after load and sets
`window.__changed`. After a settle delay the page is screenshotted, and its
events are replayed by `@rrweb/replay` in a second page of the same size,
paused at the last event. The replay iframe is screenshotted and the two
images are compared in the browser: a pixel is a mismatch when its R, G or B
differs by more than the tolerance. Diff images (mismatches in red) and a JSON
summary go to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from pathlib import Path

from aiohttp import web
from playwright.async_api import Browser, async_playwright
from tandem_runtime.embedded import free_port

from bench.common import REPOSITORY, machine

HERE = Path(__file__).resolve().parent
PAGES = HERE / "pages"
RRWEB = REPOSITORY / "web" / "node_modules" / "@rrweb"
RESULTS = REPOSITORY / "bench" / "results"
VIEWPORT = {"width": 1000, "height": 700}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
SETTLE_SECONDS = 0.7

# Runs in every document of the recorded page, but records only in the top one:
# rrweb reaches same-origin iframes from their parent.
RECORDER_START = """
window.__events = [];
if (window === window.top) {
  rrwebRecord.record({
    emit: (event) => window.__events.push(event),
    maskAllInputs: false,
    sampling: { mousemove: 50, mousemoveCallback: 50, scroll: 50 },
    recordCrossOriginIframes: false,
    recordAfter: "DOMContentLoaded",
  });
}
"""


def page_names() -> list[str]:
    return sorted(path.stem for path in PAGES.glob("*.html") if not path.name.startswith("_"))


def create_app() -> web.Application:
    app = web.Application()

    async def replay_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HERE / "replay.html")

    app.router.add_get("/replay.html", replay_page)
    app.router.add_static("/pages/", PAGES)
    app.router.add_static("/rrweb/record/", RRWEB / "record" / "dist")
    app.router.add_static("/rrweb/replay/", RRWEB / "replay" / "dist")
    return app


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


async def measure_page(browser: Browser, base_url: str, name: str, tolerance: int, stamp: int) -> dict:
    recorder_source = (RRWEB / "record" / "dist" / "record.umd.cjs").read_text()
    context = await browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    try:
        page = await context.new_page()
        await page.add_init_script(recorder_source + "\n" + RECORDER_START)
        await page.goto(f"{base_url}/pages/{name}.html", wait_until="load")
        await page.wait_for_function("window.__changed === true", timeout=10_000)
        await asyncio.sleep(SETTLE_SECONDS)
        original_png = await page.screenshot()
        events = await page.evaluate("window.__events")

        player = await context.new_page()
        replay_errors: list[str] = []

        def keep_replay_problem(message) -> None:
            if message.type in ("error", "warning"):
                replay_errors.append(message.text)

        player.on("console", keep_replay_problem)
        await player.goto(f"{base_url}/replay.html", wait_until="load")
        await player.evaluate("events => window.replayEvents(events)", events)
        await asyncio.sleep(SETTLE_SECONDS)
        replay_png = await player.locator(".replayer-wrapper iframe").screenshot()

        comparison = await player.evaluate(
            "([left, right, tolerance]) => window.comparePngs(left, right, tolerance)",
            [data_url(original_png), data_url(replay_png), tolerance],
        )
        RESULTS.mkdir(parents=True, exist_ok=True)
        prefix = RESULTS / f"replay_fidelity-{stamp}-{name}"
        prefix.with_name(prefix.name + "-original.png").write_bytes(original_png)
        prefix.with_name(prefix.name + "-replay.png").write_bytes(replay_png)
        diff_png = base64.b64decode(comparison.pop("diffUrl").split(",", 1)[1])
        prefix.with_name(prefix.name + "-diff.png").write_bytes(diff_png)
        total = comparison["width"] * comparison["height"]
        return {
            "page": name,
            "mismatch_percent": round(100 * comparison["mismatched"] / total, 3),
            "events": len(events),
            "event_bytes": len(json.dumps(events)),
            "original_size": comparison["leftSize"],
            "replay_size": comparison["rightSize"],
            "replay_console": replay_errors[:5],
        }
    finally:
        await context.close()


async def run(names: list[str], tolerance: int) -> list[dict]:
    app = create_app()
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stamp = int(time.time())
    results = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                for name in names:
                    result = await measure_page(browser, f"http://127.0.0.1:{port}", name, tolerance, stamp)
                    print(f"{name:20} {result['mismatch_percent']:7.3f} %  {result['events']} events", flush=True)
                    results.append(result)
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
    summary = {"machine": machine(), "tolerance": tolerance, "viewport": VIEWPORT, "results": results}
    (RESULTS / f"replay_fidelity-{stamp}.json").write_text(json.dumps(summary, indent=2))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", nargs="*", default=None, help="page names without .html (default: every page)")
    parser.add_argument("--tolerance", type=int, default=16, help="per-channel RGB difference still counted as equal")
    arguments = parser.parse_args()
    names = arguments.pages or page_names()
    unknown = sorted(set(names) - set(page_names()))
    if unknown:
        parser.error(f"unknown pages {unknown}; choose from {page_names()}")
    results = asyncio.run(run(names, arguments.tolerance))
    print(f"\n{machine()}")
    print("| page | mismatch % | events |\n|---|---|---|")
    for result in results:
        print(f"| {result['page']} | {result['mismatch_percent']:.2f} | {result['events']} |")


if __name__ == "__main__":
    main()
