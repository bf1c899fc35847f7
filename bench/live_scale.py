"""Live sessions at scale: many synthetic trackers through the ingest API, listed and watched through two live pods.

    .venv/bin/python -m bench.live_scale [--sessions 10000] [--concurrency 128] [--before-commit abc84c0]

Starts nats-server, `--ingest-pods` ingest processes and two live pods on
loopback. A child process plays the trackers: it starts `--sessions` sessions
with a spread of browsers, countries and metadata, with a bounded number of
requests in flight. Each then sends an empty heartbeat batch every 10 s as the
tracker does, while tabs close (pagehide) and new sessions start in their place.
The agents that measure run in the main process, so that their timings do not
include the wait for an event loop busy with the trackers' requests. Measured:

- list and filter latency: `list.subscribe` on an agent socket to its
  `list.snapshot`, and `GET /live/v1/sessions`, on both pods; then the same with
  a query text that changes on every request, so that no cached result serves it;
- one session watched by 20 agents (10 per pod): from the POST of a batch to
  its frame at each agent;
- memory per live session: growth of each live pod's resident memory from idle
  to holding every session, divided by the number of sessions;
- heartbeats: the batches the ingest pods accept per second, what they write to
  the bus, the CPU time of each process, and the latency and failures the
  trackers see.

Side by side: the whole scenario runs twice, first with the ingest and live
services of `--before-commit` (every heartbeat on the events stream and in the
live bucket, filters that walk every session), then with the working tree's,
each on its own nats-server. `--baseline-commit` adds the live service from
before server-side search as a third pod of the second run: its list request
returns every session in one frame.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from tandem_protocol import Project
from tandem_runtime import bus
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.embedded import EmbeddedNats, free_port
from tandem_runtime.tokens import TokenSigner

from bench.common import REPOSITORY, machine, summary_ms

SECRET_KEY = "bench-secret-key-0123456789abcdef"
HEARTBEAT_SECONDS = 10.0
STEADY_SECONDS = 60.0
"""Length of the window in which CPU and bus writes are measured: the period of the heartbeats put on the stream."""
WATCHERS = 20
USER_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
]
# Public addresses the shipped GeoLite2 data places in these countries; no packet goes to them.
CLIENT_ADDRESSES = [
    "8.8.8.8",
    "81.2.69.160",
    "193.0.6.139",
    "133.11.0.1",
    "200.160.2.3",
    "195.154.0.1",
    "2a00:1450:4001::1",
]
PLANS = ["free", "pro", "enterprise"]
QUERIES = [
    ("newest 50", {}),
    ("browser:firefox", {"query": "browser:firefox"}),
    ("country:FR meta.plan:pro", {"query": "country:FR meta.plan:pro"}),
    ("user:u12* (wildcard)", {"query": "user:u12*"}),
    ("free text u4242", {"query": "u4242"}),
    (
        "(browser:safari OR browser:edge) -meta.plan:free",
        {"query": '(browser:"mobile safari" OR browser:edge) -meta.plan:free'},
    ),
    ("duration>10s, longest, page 50", {"query": "duration>10s", "sort": "duration", "offset": 2500}),
]
META = {"type": 4, "timestamp": 0, "data": {"href": "https://shop.test/", "width": 1280, "height": 800}}
SNAPSHOT = {
    "type": 2,
    "timestamp": 0,
    "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
}


@dataclass
class Tracker:
    index: int
    tab: str
    session_id: str = ""
    headers: dict = field(default_factory=dict)
    ingest_url: str = ""
    seq: int = 0


# Processes --------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def spawn(module: str, port: int, env: dict[str, str], *, pythonpath: str | None = None) -> subprocess.Popen:
    """Run `python -m module` with the service settings in `env` and wait until /readyz returns 200."""
    full_env = {
        **os.environ,
        **env,
        "TANDEM_PORT": str(port),
        "TANDEM_HOST": "127.0.0.1",
        "TANDEM_LOG_LEVEL": "warning",
    }
    if pythonpath:
        full_env["PYTHONPATH"] = pythonpath
    process = subprocess.Popen([sys.executable, "-m", module], env=full_env, cwd=REPOSITORY)
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError(f"{module} exited with code {process.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    process.kill()
    raise TimeoutError(f"{module} was not ready on port {port} within 30 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def extract_package(commit: str, source: str, package: str, into: Path) -> str:
    """Copy the Python package at `source` of `commit` into `into` under the name `package`; return `into`.

    Imports of the package's own modules are renamed, so that it runs beside the working tree's;
    everything else, metric names included, stays as it was.
    """
    original = source.rstrip("/").rsplit("/", 1)[-1]
    target = into / package
    target.mkdir(parents=True)
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:{source}"],
        cwd=REPOSITORY, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        if not name.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "show", f"{commit}:{source}/{name}"], cwd=REPOSITORY, check=True, capture_output=True, text=True
        ).stdout
        (target / name).write_text(re.sub(rf"\b(from|import) {original}\b", rf"\1 {package}", text))
    return str(into)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Synthetic trackers -----------------------------------------------------------------------


async def start_tracker(http: aiohttp.ClientSession, tracker: Tracker) -> None:
    index = tracker.index
    body = {
        "projectKey": "bench-key",
        "tabId": tracker.tab,
        "userID": f"u{index}",
        "url": f"https://shop.test/p/{index % 50}?utm_source={'newsletter' if index % 3 else 'ads'}",
        "title": f"Product {index % 50}",
        "metadata": {"plan": PLANS[index % len(PLANS)], "team": f"team-{index % 10}"},
        "screen": {"width": 1920, "height": 1080},
        "timezone": "Europe/Paris",
        "language": "en-US",
    }
    headers = {
        "User-Agent": USER_AGENTS[index % len(USER_AGENTS)],
        "X-Forwarded-For": CLIENT_ADDRESSES[index % len(CLIENT_ADDRESSES)],
    }
    async with http.post(f"{tracker.ingest_url}/ingest/v1/web/start", json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"start rejected: {response.status} {await response.text()}")
        started = await response.json()
    tracker.session_id = started["sessionID"]
    tracker.headers = {"Authorization": f"Bearer {started['token']}", "Content-Type": "application/json"}
    now = int(time.time() * 1000)
    await send_batch(http, tracker, [{**META, "timestamp": now}, {**SNAPSHOT, "timestamp": now}])


async def send_batch(http: aiohttp.ClientSession, tracker: Tracker, events: list[dict]) -> float:
    """POST one batch; return the time it took, in seconds."""
    body = orjson.dumps({"tabId": tracker.tab, "seq": tracker.seq, "events": events})
    tracker.seq += 1
    started = time.perf_counter()
    async with http.post(f"{tracker.ingest_url}/ingest/v1/web/i", data=body, headers=tracker.headers) as response:
        if response.status != 200:
            raise RuntimeError(f"batch rejected: {response.status} {await response.text()}")
        await response.read()
    return time.perf_counter() - started


async def register(http, trackers: list[Tracker], concurrency: int) -> float:
    """Start every tracker's session with at most `concurrency` requests in flight; return the seconds it took."""
    queue: asyncio.Queue[Tracker] = asyncio.Queue()
    for tracker in trackers:
        queue.put_nowait(tracker)

    async def worker() -> None:
        while not queue.empty():
            await start_tracker(http, queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


@dataclass
class HeartbeatStats:
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)


async def heartbeats(
    http, trackers: list[Tracker], concurrency: int, stop_event: asyncio.Event, stats: HeartbeatStats
) -> None:
    """Send each tracker's empty batch every HEARTBEAT_SECONDS, spread evenly over `concurrency` workers.

    Workers read `trackers[index]` on each turn, so that a session the churn task replaced is picked up.
    """

    async def worker(indexes: range) -> None:
        gap = HEARTBEAT_SECONDS / max(1, len(indexes))
        await asyncio.sleep(random.uniform(0, gap))
        for index in itertools.cycle(indexes):
            if stop_event.is_set():
                return
            began = time.perf_counter()
            try:
                stats.latencies.append(await send_batch(http, trackers[index], []))
            except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                reason = str(exc)[:40]
                stats.failures[reason] = stats.failures.get(reason, 0) + 1
            await asyncio.sleep(max(0.0, gap - (time.perf_counter() - began)))

    await asyncio.gather(*(worker(range(k, len(trackers), concurrency)) for k in range(concurrency)))


async def churn(http, trackers: list[Tracker], per_second: float, stop_event: asyncio.Event) -> None:
    """Close one tab (pagehide) and open a new session in its place, `per_second` times a second."""
    pagehide = {"type": 5, "timestamp": 0, "data": {"tag": "tandem.pagehide", "payload": {}}}
    in_flight = asyncio.Semaphore(16)
    tasks: set[asyncio.Task] = set()

    async def replace(index: int) -> None:
        async with in_flight:
            closing = trackers[index]
            tab = f"tab-{uuid.uuid4().hex[:12]}"
            replacement = Tracker(index=closing.index, tab=tab, ingest_url=closing.ingest_url)
            try:
                await send_batch(http, closing, [{**pagehide, "timestamp": int(time.time() * 1000)}])
                await start_tracker(http, replacement)
                trackers[index] = replacement
            except (TimeoutError, RuntimeError, aiohttp.ClientError):
                pass

    while not stop_event.is_set():
        task = asyncio.create_task(replace(random.randrange(len(trackers))))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        await asyncio.sleep(1.0 / per_second)
    await asyncio.gather(*tasks, return_exceptions=True)


def tracker_load(arguments: dict, ingest_urls: list[str], messages, stop_flag) -> None:
    """Child process: start the sessions, then send their heartbeats and churn until `stop_flag` is set.

    It runs apart from the agents that measure, so that their timings do not include
    the wait for an event loop busy with 1,000 requests a second.
    """
    asyncio.run(run_tracker_load(arguments, ingest_urls, messages, stop_flag))


async def run_tracker_load(arguments: dict, ingest_urls: list[str], messages, stop_flag) -> None:
    trackers = [
        Tracker(index=i, tab=f"tab-{i}", ingest_url=ingest_urls[i % len(ingest_urls)])
        for i in range(1, arguments["sessions"])
    ]
    connector = aiohttp.TCPConnector(limit=arguments["concurrency"] + 16)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        seconds = await register(http, trackers, arguments["concurrency"])
        messages.put({"registered_seconds": seconds})
        stop_event = asyncio.Event()
        stats = HeartbeatStats()
        started = time.perf_counter()
        background = [
            asyncio.create_task(heartbeats(http, trackers, arguments["concurrency"], stop_event, stats)),
            asyncio.create_task(churn(http, trackers, arguments["churn_per_second"], stop_event)),
        ]
        while not stop_flag.is_set():
            await asyncio.sleep(0.2)
        stop_event.set()
        await asyncio.gather(*background, return_exceptions=True)
        messages.put(
            {
                "heartbeat_post": summary_ms(stats.latencies) if stats.latencies else None,
                "heartbeats_per_second": len(stats.latencies) / (time.perf_counter() - started),
                "heartbeat_failures": stats.failures,
            }
        )


async def keep_alive(http, tracker: Tracker, stop_event: asyncio.Event) -> None:
    """Send the watched tracker's heartbeat every HEARTBEAT_SECONDS, as its page would."""
    while not stop_event.is_set():
        try:
            await asyncio.wait_for(stop_event.wait(), HEARTBEAT_SECONDS)
        except TimeoutError:
            try:
                await send_batch(http, tracker, [])
            except (TimeoutError, RuntimeError, aiohttp.ClientError) as exc:
                print(f"  the watched session's heartbeat failed: {exc}", flush=True)


# Agents -----------------------------------------------------------------------------------


async def agent_socket(http, pod_url: str, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(pod_url.replace("http://", "ws://") + "/live/v1/ws", max_msg_size=0)
    await ws.send_json({"type": "auth", "token": token})
    while (await ws.receive_json(timeout=10))["type"] != "hello":
        pass
    return ws


async def timed_subscribe(ws, fields: dict) -> tuple[float, int, int]:
    """Send list.subscribe; return the seconds until its list.snapshot, the total and the frame size."""
    started = time.perf_counter()
    await ws.send_str(orjson.dumps({"type": "list.subscribe", "projectId": "bench", **fields}).decode())
    while True:
        message = await ws.receive(timeout=30)
        if message.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"the socket closed: {message}")
        if message.data.startswith('{"type":"list.snapshot"'):
            elapsed = time.perf_counter() - started
            snapshot = orjson.loads(message.data)
            return elapsed, snapshot.get("total", len(snapshot["sessions"])), len(message.data)
        if message.data.startswith('{"type":"error"'):
            raise RuntimeError(message.data)


async def drain(ws) -> int:
    """Read and drop frames until the socket closes; return how many arrived."""
    count = 0
    async for _ in ws:
        count += 1
    return count


async def timed_get(http, pod: str, params: dict, token: str) -> float:
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{pod}/live/v1/sessions", params=params, headers=headers) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"list failed: {response.status}")
    return time.perf_counter() - started


def uncached(fields: dict, number: int) -> dict:
    """Return the request with a filter that changes nothing but the query text, so that no cached result serves it."""
    query = fields.get("query", "")
    return {**fields, "query": f"{query} -session:nomatch{number}".strip()}


async def measure_lists(http, pods: list[str], token: str, rounds: int, *, cached: bool = True) -> dict[str, dict]:
    """Time each query on both pods, by socket and by HTTP; `cached=False` makes every request compute its result."""
    results: dict[str, dict] = {}
    sockets = [await agent_socket(http, pod, token) for pod in pods]
    requests = itertools.count()
    try:
        for label, fields in QUERIES:
            socket_samples: list[float] = []
            http_samples: list[float] = []
            total = 0

            def request_fields(fields: dict = fields) -> dict:
                return fields if cached else uncached(fields, next(requests))

            def request_params() -> dict:
                return {"projectId": "bench", **{key: str(value) for key, value in request_fields().items()}}

            for round_number in range(rounds):
                for pod, ws in zip(pods, sockets, strict=True):
                    # Alternate which request comes first, so that neither always finds the other's cached result.
                    if round_number % 2:
                        http_samples.append(await timed_get(http, pod, request_params(), token))
                    elapsed, total, _ = await timed_subscribe(ws, request_fields())
                    socket_samples.append(elapsed)
                    if not round_number % 2:
                        http_samples.append(await timed_get(http, pod, request_params(), token))
            results[label] = {"total": total, "socket": summary_ms(socket_samples), "http": summary_ms(http_samples)}
            print(
                f"  {label}: {total} match, socket p50 / p95 {results[label]['socket']['p50']:.1f} / "
                f"{results[label]['socket']['p95']:.1f} ms, http p50 / p95 {results[label]['http']['p50']:.1f} / "
                f"{results[label]['http']['p95']:.1f} ms",
                flush=True,
            )
    finally:
        for ws in sockets:
            await ws.close()
    return results


@dataclass
class ComputeHistogram:
    """The pods' tandem_live_list_duration_seconds, summed: cumulative bucket counts, count and sum."""

    buckets: dict[float, float] = field(default_factory=dict)
    count: float = 0.0
    total: float = 0.0

    def since(self, earlier: ComputeHistogram) -> dict:
        """Summarise the observations made after `earlier`: count, mean and the bucket bound of the p95."""
        count = self.count - earlier.count
        buckets = {bound: value - earlier.buckets.get(bound, 0.0) for bound, value in self.buckets.items()}
        p95_bound = next((bound for bound in sorted(buckets) if buckets[bound] >= 0.95 * count), float("inf"))
        mean_ms = 1000 * (self.total - earlier.total) / count if count else 0.0
        return {"count": count, "mean_ms": mean_ms, "p95_at_most_ms": 1000 * p95_bound}


async def list_compute_histogram(http, pods: list[str]) -> ComputeHistogram:
    """Read each pod's tandem_live_list_duration_seconds histogram: the time spent filtering, sorting and counting."""
    histogram = ComputeHistogram()
    for pod in pods:
        async with http.get(f"{pod}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            value = float(line.split()[-1]) if line.startswith("tandem_live_list_duration_seconds") else 0.0
            if line.startswith("tandem_live_list_duration_seconds_bucket"):
                bound = float(line.split('le="')[1].split('"')[0])
                histogram.buckets[bound] = histogram.buckets.get(bound, 0.0) + value
            elif line.startswith("tandem_live_list_duration_seconds_count"):
                histogram.count += value
            elif line.startswith("tandem_live_list_duration_seconds_sum"):
                histogram.total += value
    return histogram


async def measure_baseline_list(http, pod: str, token: str, rounds: int) -> dict:
    ws = await agent_socket(http, pod, token)
    samples, sizes, totals = [], [], []
    try:
        for _ in range(rounds):
            elapsed, total, size = await timed_subscribe(ws, {})
            samples.append(elapsed)
            sizes.append(size)
            totals.append(total)
        # The old pod pushes every registry write to every subscribed agent: count them for 10 s.
        counter = asyncio.create_task(drain(ws))
        await asyncio.sleep(10.0)
        await ws.close()
        pushed = await counter
    finally:
        await ws.close()
    return {
        "socket": summary_ms(samples),
        "frame_bytes": max(sizes),
        "total": max(totals),
        "pushed_frames_per_second": pushed / 10.0,
    }


async def measure_watchers(http, pods: list[str], token: str, tracker: Tracker, samples: int) -> dict:
    """Latency from the POST of a batch to its frame at each of WATCHERS agents, split over the pods."""
    arrivals: dict[str, list[float]] = {}
    sockets = []

    async def read(ws) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT or '"type":"events"' not in message.data[:40]:
                continue
            now = time.perf_counter()
            index = message.data.find("wm-")
            if index >= 0:
                arrivals.setdefault(message.data[index : index + 15], []).append(now)

    for number in range(WATCHERS):
        ws = await agent_socket(http, pods[number % len(pods)], token)
        await ws.send_json({"type": "watch", "sessionId": tracker.session_id})
        sockets.append((ws, asyncio.create_task(read(ws))))
    await asyncio.sleep(1.0)

    sent: dict[str, float] = {}
    for _ in range(samples):
        marker = f"wm-{uuid.uuid4().hex[:12]}"
        event = {
            "type": 5,
            "timestamp": int(time.time() * 1000),
            "data": {"tag": "bench", "payload": {"marker": marker}},
        }
        sent[marker] = time.perf_counter()
        await send_batch(http, tracker, [event])
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    for ws, reader in sockets:
        reader.cancel()
        await ws.close()
    latencies = [arrival - sent[marker] for marker, times in arrivals.items() if marker in sent for arrival in times]
    expected = samples * WATCHERS
    return {**summary_ms(latencies), "missing": expected - len(latencies)}


# Main -------------------------------------------------------------------------------------


@dataclass
class Services:
    """The ingest and live services a run starts: module names, and a PYTHONPATH that contains them when extracted."""

    label: str
    ingest: str = "tandem_ingest"
    live: str = "tandem_live"
    pythonpath: str | None = None


async def ingest_counters(http, urls: list[str]) -> dict[str, float]:
    """Sum the ingest pods' batch, heartbeat, rejection and registry-write counters, by label set."""
    wanted = (
        "tandem_ingest_batches_total",
        "tandem_ingest_heartbeats_total",
        "tandem_ingest_rejections_total",
        "tandem_ingest_registry_writes_total",
    )
    totals: dict[str, float] = {}
    for url in urls:
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith(wanted):
                name, value = line.rsplit(" ", 1)
                totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def accepted_batches(counters: dict[str, float]) -> float:
    """Return the number of tracker batches accepted with 200: those on the stream, and the heartbeats kept off it."""
    return sum(
        value
        for name, value in counters.items()
        if name.startswith("tandem_ingest_batches_total") or name == 'tandem_ingest_heartbeats_total{stored="false"}'
    )


async def measure_steady_state(http, roles: dict[str, list[int]], ingest_urls: list[str], seconds: float) -> dict:
    """Measure the CPU of each role's processes while heartbeats and churn run, and the ingest pods' counters."""
    counters_before = await ingest_counters(http, ingest_urls)
    cpu_before = {role: sum(cpu_seconds(pid) for pid in pids) for role, pids in roles.items()}
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    elapsed = time.perf_counter() - started
    cpu = {role: (sum(cpu_seconds(pid) for pid in pids) - cpu_before[role]) / elapsed for role, pids in roles.items()}
    counters_after = await ingest_counters(http, ingest_urls)
    batches = (accepted_batches(counters_after) - accepted_batches(counters_before)) / elapsed
    rates = {
        name: (value - counters_before.get(name, 0.0)) / elapsed
        for name, value in counters_after.items()
        if value != counters_before.get(name, 0.0)
    }
    return {
        "seconds": elapsed,
        "batches_per_second": batches,
        "cpu_cores": cpu,
        "ingest_and_nats_cpu_ms_per_batch": 1000 * (cpu["ingest"] + cpu["nats"]) / batches if batches else None,
        "ingest_counters_per_second": rates,
    }


async def run_services(arguments: argparse.Namespace, services: Services, *, with_baseline: bool) -> dict:
    """Run the whole scenario once with `services`, on a nats-server of its own."""
    print(f"== {services.label}: {services.ingest} and {services.live}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="tandem-live-scale-"))
    nats_server = EmbeddedNats(data_dir=data_dir / "nats", port=free_port())
    await nats_server.start()
    processes: list[subprocess.Popen] = []
    load = None
    results: dict = {"load_average_start": os.getloadavg()}
    try:
        nc = await bus.connect(nats_server.url, name="bench")
        await bus.ensure_streams(nc.jetstream())
        await ProjectDirectory(js=nc.jetstream()).put(Project(id="bench", key="bench-key"))
        await nc.drain()
        env = {"TANDEM_NATS_URL": nats_server.url, "TANDEM_SECRET_KEY": SECRET_KEY}
        # 10,000 sessions send 1,000 heartbeats a second: above the default per-project rate of one pod.
        ingest_env = {
            **env,
            "TANDEM_TRUSTED_PROXIES": "127.0.0.1/32",
            "TANDEM_PROJECT_RATE_OVERRIDES": json.dumps({"bench": 5000}),
        }

        ingest_urls, ingest_pids = [], []
        for _ in range(arguments.ingest_pods):
            port = free_port()
            process = await spawn(services.ingest, port, ingest_env, pythonpath=services.pythonpath)
            processes.append(process)
            ingest_pids.append(process.pid)
            ingest_urls.append(f"http://127.0.0.1:{port}")
        live_pids, pods = [], []
        for _ in range(2):
            port = free_port()
            process = await spawn(services.live, port, env, pythonpath=services.pythonpath)
            processes.append(process)
            live_pids.append(process.pid)
            pods.append(f"http://127.0.0.1:{port}")
        await asyncio.sleep(2.0)
        idle_rss = [rss_bytes(pid) for pid in live_pids]
        roles = {"ingest": ingest_pids, "live": live_pids, "nats": [nats_server.process.pid]}

        token = TokenSigner(secret_key=SECRET_KEY).sign_agent(
            agent_id="bench", name="bench", role="admin", projects=["*"], ttl_seconds=3600
        )[0]
        spawned = multiprocessing.get_context("spawn")
        messages, stop_flag = spawned.Queue(), spawned.Event()
        load_arguments = {
            "sessions": arguments.sessions,
            "concurrency": arguments.concurrency,
            "churn_per_second": arguments.churn_per_second,
        }
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=WATCHERS + 16)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            print(f"Registering {arguments.sessions} sessions…", flush=True)
            load = spawned.Process(target=tracker_load, args=(load_arguments, ingest_urls, messages, stop_flag))
            load.start()
            watched = Tracker(index=0, tab="tab-0", ingest_url=ingest_urls[0])
            await start_tracker(http, watched)
            stop_event = asyncio.Event()
            keeper = asyncio.create_task(keep_alive(http, watched, stop_event))
            registered = await loop.run_in_executor(None, messages.get)
            results["register_seconds"] = seconds = registered["registered_seconds"]
            print(f"  {seconds:.1f} s ({arguments.sessions / seconds:.0f} sessions/s)", flush=True)

            for pod in pods:
                for _ in range(600):
                    async with http.get(
                        f"{pod}/live/v1/sessions",
                        params={"projectId": "bench", "limit": "1"},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as response:
                        total = (await response.json())["total"]
                    if total >= arguments.sessions * 0.99:
                        break
                    await asyncio.sleep(0.1)
                print(f"  pod {pod} lists {total} sessions", flush=True)
            await asyncio.sleep(HEARTBEAT_SECONDS)  # one full heartbeat round under way
            full_rss = [rss_bytes(pid) for pid in live_pids]
            results["memory_per_session_bytes"] = [
                (full - idle) / arguments.sessions for idle, full in zip(idle_rss, full_rss, strict=True)
            ]
            results["pod_rss_bytes"] = {"idle": idle_rss, "full": full_rss}

            print("List and filter latency (both pods, heartbeats and churn running):", flush=True)
            start = await list_compute_histogram(http, pods)
            results["lists"] = await measure_lists(http, pods, token, arguments.rounds)
            middle = await list_compute_histogram(http, pods)
            results["list_compute"] = middle.since(start)
            print(f"  compute alone: {results['list_compute']}", flush=True)
            print("The same, each request with a new query text (no cached result):", flush=True)
            results["lists_uncached"] = await measure_lists(http, pods, token, arguments.rounds, cached=False)
            results["list_compute_uncached"] = (await list_compute_histogram(http, pods)).since(middle)
            print(f"  compute alone: {results['list_compute_uncached']}", flush=True)
            print(f"{WATCHERS} agents watching one session:", flush=True)
            results["watchers"] = await measure_watchers(http, pods, token, watched, arguments.watch_samples)
            print(f"  p50 {results['watchers']['p50']:.1f} ms, p95 {results['watchers']['p95']:.1f} ms", flush=True)

            # Last, and over a whole minute: ingest puts one heartbeat per session and minute on the
            # events stream, in bursts that follow the registration burst here.
            print("Steady state (heartbeats and churn, no agent):", flush=True)
            roles["trackers"] = [load.pid]
            results["steady"] = steady = await measure_steady_state(http, roles, ingest_urls, STEADY_SECONDS)
            cores = {role: round(value, 2) for role, value in steady["cpu_cores"].items()}
            rates = {name: round(value) for name, value in steady["ingest_counters_per_second"].items()}
            print(f"  {steady['batches_per_second']:.0f} batches/s, CPU cores {cores}, per second {rates}", flush=True)

            if with_baseline and arguments.baseline_commit:
                print(f"Baseline: the live service of {arguments.baseline_commit}…", flush=True)
                port = free_port()
                path = extract_package(
                    arguments.baseline_commit,
                    "services/live/tandem_live",
                    "tandem_live_baseline",
                    data_dir / "baseline",
                )
                baseline = await spawn("tandem_live_baseline", port, env, pythonpath=path)
                processes.append(baseline)
                baseline_idle = rss_bytes(baseline.pid)  # read right after start: the watch is still loading
                baseline_url = f"http://127.0.0.1:{port}"
                await asyncio.sleep(5.0)
                results["baseline"] = await measure_baseline_list(http, baseline_url, token, arguments.rounds)
                results["baseline"]["rss_bytes"] = rss_bytes(baseline.pid)
                results["baseline"]["rss_at_start_bytes"] = baseline_idle
                stop(baseline)
                processes.remove(baseline)
                print(
                    f"  full list p95 {results['baseline']['socket']['p95']:.1f} ms, "
                    f"{results['baseline']['frame_bytes']} bytes",
                    flush=True,
                )

            stop_event.set()
            await keeper
            stop_flag.set()
            results.update(await loop.run_in_executor(None, messages.get))
            load.join(timeout=30)
            results["load_average_end"] = os.getloadavg()
    finally:
        if load is not None and load.is_alive():
            load.terminate()
        for process in processes:
            stop(process)
        nats_server.stop()
    return results


def ratios(before: dict, after: dict) -> dict:
    """After / before for the main numbers: below 1 is better, except for the accepted batch rate."""

    def ratio(new: float | None, old: float | None) -> float | None:
        return new / old if new is not None and old else None

    lists = {
        label: {
            "socket_p95": ratio(after["lists"][label]["socket"]["p95"], before["lists"][label]["socket"]["p95"]),
            "http_p95": ratio(after["lists"][label]["http"]["p95"], before["lists"][label]["http"]["p95"]),
        }
        for label in after["lists"]
        if label in before["lists"]
    }
    lists_uncached = {
        label: {
            "socket_p95": ratio(
                after["lists_uncached"][label]["socket"]["p95"], before["lists_uncached"][label]["socket"]["p95"]
            ),
            "http_p95": ratio(
                after["lists_uncached"][label]["http"]["p95"], before["lists_uncached"][label]["http"]["p95"]
            ),
        }
        for label in after["lists_uncached"]
        if label in before["lists_uncached"]
    }
    return {
        "lists": lists,
        "lists_uncached": lists_uncached,
        "list_compute_mean": ratio(after["list_compute"]["mean_ms"], before["list_compute"]["mean_ms"]),
        "list_compute_uncached_mean": ratio(
            after["list_compute_uncached"]["mean_ms"], before["list_compute_uncached"]["mean_ms"]
        ),
        "batches_per_second": ratio(after["steady"]["batches_per_second"], before["steady"]["batches_per_second"]),
        "heartbeat_post_p95": ratio(after["heartbeat_post"]["p95"], before["heartbeat_post"]["p95"]),
        "ingest_and_nats_cpu_per_batch": ratio(
            after["steady"]["ingest_and_nats_cpu_ms_per_batch"], before["steady"]["ingest_and_nats_cpu_ms_per_batch"]
        ),
        "memory_per_session": ratio(sum(after["memory_per_session_bytes"]), sum(before["memory_per_session_bytes"])),
        "watchers_p95": ratio(after["watchers"]["p95"], before["watchers"]["p95"]),
    }


async def run(arguments: argparse.Namespace) -> dict:
    results: dict = {"machine": machine(), "sessions": arguments.sessions, "load_average_start": os.getloadavg()}
    if arguments.before_commit:
        folder = Path(tempfile.mkdtemp(prefix="tandem-live-scale-before-"))
        extract_package(arguments.before_commit, "services/ingest/tandem_ingest", "tandem_ingest_before", folder)
        extract_package(arguments.before_commit, "services/live/tandem_live", "tandem_live_before", folder)
        before = Services(
            label=f"before ({arguments.before_commit})",
            ingest="tandem_ingest_before",
            live="tandem_live_before",
            pythonpath=str(folder),
        )
        results["before"] = await run_services(arguments, before, with_baseline=False)
    results["after"] = await run_services(arguments, Services(label="working tree"), with_baseline=True)
    if "before" in results:
        results["ratios"] = ratios(results["before"], results["after"])
    results["load_average_end"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="Concurrent live sessions to register.")
    parser.add_argument("--concurrency", type=int, default=128, help="Tracker requests in flight at most.")
    parser.add_argument("--ingest-pods", type=int, default=2, help="Ingest processes the trackers are spread over.")
    parser.add_argument("--churn-per-second", type=float, default=10.0, help="Tabs closed and opened per second.")
    parser.add_argument("--rounds", type=int, default=30, help="Requests per query and pod.")
    parser.add_argument("--watch-samples", type=int, default=200, help="Batches timed to the 20 watching agents.")
    parser.add_argument(
        "--before-commit",
        default="abc84c0",
        help="Commit whose ingest and live services run the scenario first, for the ratios; empty skips it.",
    )
    parser.add_argument(
        "--baseline-commit",
        default="a979369",
        help="Commit whose live service (before server-side search) is measured as a third pod; empty skips it.",
    )
    parser.add_argument("--output", type=Path, help="Write the results as JSON to this file.")
    arguments = parser.parse_args()
    results = asyncio.run(run(arguments))
    text = json.dumps(results, indent=2)
    print(text)
    if arguments.output:
        arguments.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
