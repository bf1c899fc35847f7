"""Tracker cost: what each session-recording tracker costs a busy page, in headless Chromium.

    .venv/bin/python -m bench.tracker_cost [--rounds 3] [--configs none rrweb openreplay tandem]

The same page (bench/tracker_cost/page) runs in four configurations: no tracker;
`@rrweb/record` alone writing to an array; the OpenReplay tracker 19.0.1 from
npm posting to a local stand-in of its ingest; Tandem's tracker posting to the
all-in-one server (`python -m tandem run`, started here as a child process).
Each round runs every configuration once, in alternating order, each in a
fresh browser context.

One run: load the page (2,000-row table), read the DevTools `Performance`
metrics, start the tracker, then for 200 ticks of 50 ms change 200 cells, toggle
a class on 100 rows and replace 20 list items, while the harness types into
five inputs and moves the mouse. After a fixed 2 s drain the metrics are read
again. Task and script time (CPU time of the page's main thread) and the JS
heap after a forced garbage collection are compared with the no-tracker run of
the same round. Then the
tracker is stopped, and the bytes it sent (bodies as sent, compressed or
not) are counted at the benchmark's web server. Every Tandem recording, as the
tracker sent it, is replayed with `@rrweb/replay` and its table compared with
the page's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright
from tandem_runtime.embedded import free_port

from bench.common import REPOSITORY, machine, start_server
from bench.tracker_cost import bundles
from bench.tracker_cost.server import REPLAY_EVENTS, TRAFFIC, Traffic, create_app, serve

CONFIGS = ("none", "rrweb", "openreplay", "tandem")
LABELS = {
    "none": "no tracker",
    "rrweb": "@rrweb/record alone, to an array",
    "openreplay": "OpenReplay tracker 19.0.1",
    "tandem": "Tandem tracker",
}
# Path of each configuration's requests on the benchmark's server. "none" and "rrweb" send nothing.
TRAFFIC_PREFIX = {"none": "/none/", "rrweb": "/none/", "openreplay": "/openreplay/", "tandem": "/ingest/"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    # Every host name but 127.0.0.1 fails to resolve, so no tracker default can reach the network.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
# The page's work: 200 ticks, one every 50 ms. A loaded machine stretches it in time, so
# bytes per minute are given at this pace, not per minute of the run.
NOMINAL_BUSY_SECONDS = 10.0
DRAIN_SECONDS = 2.0
QUIET_SECONDS = 1.0
MAX_STOP_SECONDS = 15.0
# None of these appear in the table: Tandem obscures page text that repeats a value typed
# into a masked field, so typing "Ada L" would mask the cells that contain it.
TYPED_TEXT = ["quiet morning", "blue shoes", "gift wrap", "leave at the door", "size nine"]


@dataclass
class Run:
    """One configuration in one round."""

    config: str
    round: int
    task_seconds: float
    script_seconds: float
    heap_bytes: int
    busy_seconds: float
    ticks: int
    wire_bytes: int
    # Bytes that arrived before the busy phase began: the start request and the first snapshot.
    setup_bytes: int
    requests: int
    # Tracker requests that the server answered with an error status, by status.
    rejected: dict[str, int]
    replay_ok: bool | None = None
    replay_detail: str = ""


def read_metrics(response: dict) -> dict[str, float]:
    return {item["name"]: item["value"] for item in response["metrics"]}


async def type_into_fields(page: Page, done: asyncio.Event) -> None:
    """Focus each of the five inputs in turn, clear it and type into it, until `done`.

    Only key events reach the page: Playwright's click and fill would run their
    own hit tests in the page's main thread, which would count in every
    configuration's task time and blur the trackers' share.
    """
    index = 0
    while not done.is_set():
        await page.evaluate("(id) => document.getElementById(id).focus()", f"field-{index % 5}")
        await page.keyboard.press("Control+A")
        await page.keyboard.press("Backspace")
        await page.keyboard.type(TYPED_TEXT[index % 5], delay=30)
        index += 1


async def move_mouse(page: Page, done: asyncio.Event) -> None:
    """Move the pointer along a circle over the table, about 30 moves a second, until `done`."""
    angle = 0.0
    while not done.is_set():
        await page.mouse.move(420 + 240 * math.cos(angle), 400 + 200 * math.sin(angle), steps=2)
        angle += 0.15
        await asyncio.sleep(0.03)


async def wait_quiet(traffic: Traffic, quiet: float, limit: float) -> None:
    """Wait until no tracker request has arrived for `quiet` seconds, or `limit` seconds in all."""
    began = time.monotonic()
    await asyncio.sleep(quiet)
    while time.monotonic() - began < limit and time.monotonic() - traffic.last_at() < quiet:
        await asyncio.sleep(0.1)


async def run_once(browser: Browser, base: str, traffic: Traffic, config: str, round_index: int) -> tuple[Run, str]:
    """Run the page once with `config`; return the measurements and the page's final table text."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        cdp = await context.new_cdp_session(page)
        # Durations in CPU time of the page's main thread, so that other work on the machine does not count.
        await cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        await page.goto(f"{base}/busy/{config}")
        await page.wait_for_function("window.bench && window.bench.state.ready")

        traffic.reset()
        before = read_metrics(await cdp.send("Performance.getMetrics"))
        await page.evaluate("window.bench.start()")
        # The first snapshot goes out before the page gets busy: in one request, or in several when it is split.
        await wait_quiet(traffic, QUIET_SECONDS, MAX_STOP_SECONDS)

        busy_began = time.monotonic()
        done = asyncio.Event()
        drivers = [asyncio.create_task(type_into_fields(page, done)), asyncio.create_task(move_mouse(page, done))]
        busy_ms = await page.evaluate("window.bench.busy()")
        done.set()
        await asyncio.gather(*drivers)
        await asyncio.sleep(DRAIN_SECONDS)

        after = read_metrics(await cdp.send("Performance.getMetrics"))
        await cdp.send("HeapProfiler.collectGarbage")
        heap = read_metrics(await cdp.send("Performance.getMetrics"))["JSHeapUsedSize"]
        table = await page.evaluate("window.bench.tableText()")
        ticks = await page.evaluate("window.bench.state.ticks")

        await page.evaluate("window.bench.stop()")
        await wait_quiet(traffic, QUIET_SECONDS, MAX_STOP_SECONDS)
        if errors:
            raise RuntimeError(f"The page of {config!r} threw: {errors[:3]}")
        prefix = TRAFFIC_PREFIX[config]
        run = Run(
            config=config,
            round=round_index,
            task_seconds=after["TaskDuration"] - before["TaskDuration"],
            script_seconds=after["ScriptDuration"] - before["ScriptDuration"],
            heap_bytes=int(heap),
            busy_seconds=busy_ms / 1000,
            ticks=ticks,
            wire_bytes=traffic.wire_bytes(prefix),
            setup_bytes=traffic.wire_bytes(prefix, before=busy_began),
            requests=traffic.count(prefix),
            rejected=traffic.rejected(),
        )
        return run, table
    finally:
        await context.close()


async def check_replay(browser: Browser, base: str, app_events: list, events: list, expected: str) -> tuple[bool, str]:
    """Replay `events` with @rrweb/replay to the end; compare the replayed table's text with `expected`."""
    app_events[:] = events
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        await page.goto(f"{base}/replay/")
        replayed = await page.evaluate("window.replayTable()")
    finally:
        await context.close()
    expected_rows = expected.split("\n")
    replayed_rows = replayed["text"].split("\n")
    differing = [(a, b) for a, b in zip(expected_rows, replayed_rows, strict=False) if a != b]
    wrong = len(differing) + abs(len(expected_rows) - len(replayed_rows))
    detail = f"{replayed['events']} events, {len(replayed_rows)} rows replayed, {wrong} differ from the page"
    if differing:
        page_row, replayed_row = differing[0]
        detail += f"; first: page {page_row!r}, replay {replayed_row!r}"
    return wrong == 0 and len(replayed_rows) == len(expected_rows), detail


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def mb_per_minute(run: Run) -> float:
    """Megabytes (10^6) that one minute of this page costs at its nominal pace.

    The first snapshot counts once, and the busy phase's bytes (with the drain and
    the flush at stop) six times. A tracker that sends part of its first snapshot
    only once the page is busy gets that part counted six times.
    """
    busy_bytes = run.wire_bytes - run.setup_bytes
    return (run.setup_bytes + busy_bytes * 60 / NOMINAL_BUSY_SECONDS) / 1e6


def summarise(runs: list[Run], configs: list[str]) -> dict[str, dict]:
    """Per configuration: ratios to the no-tracker run of the same round, and bytes, as median, min and max."""
    baseline = {run.round: run for run in runs if run.config == "none"}
    summary: dict[str, dict] = {}
    for config in configs:
        mine = [run for run in runs if run.config == config]
        paired = [(run, baseline[run.round]) for run in mine if run.round in baseline]
        entry: dict[str, dict] = {
            "task_seconds": spread([run.task_seconds for run in mine]),
            "script_seconds": spread([run.script_seconds for run in mine]),
            "heap_mib": spread([run.heap_bytes / 2**20 for run in mine]),
            "busy_seconds": spread([run.busy_seconds for run in mine]),
            "sent_kib": spread([run.wire_bytes / 1024 for run in mine]),
            "requests": spread([run.requests for run in mine]),
            "mb_per_minute": spread([mb_per_minute(run) for run in mine]),
        }
        if paired:
            entry["task_added_seconds"] = spread([run.task_seconds - base.task_seconds for run, base in paired])
            entry["task_ratio"] = spread([run.task_seconds / base.task_seconds for run, base in paired])
            entry["script_ratio"] = spread([run.script_seconds / base.script_seconds for run, base in paired])
            entry["heap_ratio"] = spread([run.heap_bytes / base.heap_bytes for run, base in paired])
        summary[config] = entry
    return summary


def print_table(summary: dict[str, dict], sizes: list[bundles.BundleSize]) -> None:
    def cell(entry: dict, key: str, digits: int = 2) -> str:
        if key not in entry:
            return "-"
        value = entry[key]
        return f"{value['median']:.{digits}f} ({value['min']:.{digits}f}-{value['max']:.{digits}f})"

    columns = ["main-thread task ratio", "added task s", "script ratio", "JS heap ratio", "sent KiB", "MB/min"]
    print("| configuration | " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    for config, entry in summary.items():
        print(
            f"| {LABELS[config]} | {cell(entry, 'task_ratio')} | {cell(entry, 'task_added_seconds')} | "
            f"{cell(entry, 'script_ratio')} | "
            f"{cell(entry, 'heap_ratio')} | {cell(entry, 'sent_kib', 0)} | {cell(entry, 'mb_per_minute')} |"
        )
    print()
    print("| bundle | minified bytes | gzipped bytes | gzipped KiB |")
    print("|---|---|---|---|")
    for size in sizes:
        print(f"| {size.name} | {size.bytes} | {size.gzipped_bytes} | {size.gzipped_bytes / 1024:.1f} |")


def round_order(configs: list[str], round_index: int) -> list[str]:
    """Return the configurations in order on even rounds and reversed on odd ones."""
    return list(configs) if round_index % 2 == 0 else list(reversed(configs))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; each runs every configuration once.")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS), help="Configurations to run.")
    parser.add_argument("--no-replay", action="store_true", help="Skip replaying Tandem's recordings.")
    args = parser.parse_args()
    configs = [config for config in CONFIGS if config in args.configs]

    workdir = Path(tempfile.mkdtemp(prefix="tandem-tracker-cost-"))
    built = bundles.build(workdir / "bundles")
    sizes = bundles.sizes(built)
    tandem = await start_server(data_dir=workdir / "data") if "tandem" in configs else None
    port = free_port()
    app = create_app(bundles=workdir / "bundles", dist=bundles.DIST, tandem_url=tandem.url if tandem else "")
    runner = await serve(app, port)
    base = f"http://127.0.0.1:{port}"
    runs: list[Run] = []
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for round_index in range(args.rounds):
                for config in round_order(configs, round_index):
                    run, table = await run_once(browser, base, app[TRAFFIC], config, round_index)
                    if config == "tandem" and not args.no_replay:
                        events = app[TRAFFIC].tandem_events()
                        checked = await check_replay(browser, base, app[REPLAY_EVENTS], events, table)
                        run.replay_ok, run.replay_detail = checked
                    runs.append(run)
                    print(json.dumps(asdict(run)), flush=True)
            await browser.close()
    finally:
        await runner.cleanup()
        if tandem:
            tandem.stop()

    summary = summarise(runs, configs)
    print()
    print_table(summary, sizes)
    report = {
        "machine": machine(),
        "rounds": args.rounds,
        "runs": [asdict(run) for run in runs],
        "summary": summary,
        "bundles": [{"name": s.name, "bytes": s.bytes, "gzipped_bytes": s.gzipped_bytes} for s in sizes],
    }
    results = REPOSITORY / "bench" / "results"
    results.mkdir(exist_ok=True)
    path = results / f"tracker_cost-{int(time.time())}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"\nWrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
