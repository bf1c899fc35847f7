"""Live sessions at scale: many synthetic trackers through the ingest API, listed and watched through two live pods.

    .venv/bin/python -m bench.live_scale [--sessions 10000] [--concurrency 128] [--baseline-commit a979369]

Starts nats-server, `--ingest-pods` ingest processes and two live pods on
loopback. Synthetic trackers start `--sessions` sessions with a spread of
browsers, countries and metadata, with a bounded number of requests in flight.
Each then sends an empty heartbeat batch every 10 s as the tracker does, while
a churn task ends sessions (pagehide) and starts new ones. Measured:

- list and filter latency: `list.subscribe` on an agent socket to its
  `list.snapshot`, and `GET /live/v1/sessions`, on both pods;
- one session watched by 20 agents (10 per pod): from the POST of a batch to
  its frame at each agent;
- memory per live session: growth of each live pod's resident memory from idle
  to holding every session, divided by the number of sessions.

The baseline is the live service of `--baseline-commit` (before server-side
search), started as a third pod on the same bus: its list request returns every
session of the project in one frame, and the dashboard filtered nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
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


def extract_baseline(commit: str, into: Path) -> str:
    """Copy the live service of `commit` into `into` as the package `tandem_live_baseline`; return the folder."""
    package = into / "tandem_live_baseline"
    package.mkdir(parents=True)
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{commit}:services/live/tandem_live"],
        cwd=REPOSITORY, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        if not name.endswith(".py"):
            continue
        source = subprocess.run(
            ["git", "show", f"{commit}:services/live/tandem_live/{name}"],
            cwd=REPOSITORY,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        (package / name).write_text(source.replace("tandem_live", "tandem_live_baseline"))
    return str(into)


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
    """Close one tab (pagehide) and open a new session in its place, `per_second` times a second.

    The first tracker is never closed: the watch measurement follows it.
    """
    pagehide = {"type": 5, "timestamp": 0, "data": {"tag": "tandem.pagehide", "payload": {}}}
    while not stop_event.is_set():
        index = random.randrange(1, len(trackers))
        closing = trackers[index]
        replacement = Tracker(index=closing.index, tab=f"tab-{uuid.uuid4().hex[:12]}", ingest_url=closing.ingest_url)
        try:
            await send_batch(http, closing, [{**pagehide, "timestamp": int(time.time() * 1000)}])
            await start_tracker(http, replacement)
            trackers[index] = replacement
        except (TimeoutError, RuntimeError, aiohttp.ClientError):
            pass
        await asyncio.sleep(1.0 / per_second)


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


async def measure_lists(http, pods: list[str], token: str, rounds: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    sockets = [await agent_socket(http, pod, token) for pod in pods]
    try:
        for label, fields in QUERIES:
            socket_samples: list[float] = []
            http_samples: list[float] = []
            total = 0
            params = {"projectId": "bench", **{key: str(value) for key, value in fields.items()}}
            for round_number in range(rounds):
                for pod, ws in zip(pods, sockets, strict=True):
                    # Alternate which request comes first, so that neither always finds the other's cached result.
                    if round_number % 2:
                        http_samples.append(await timed_get(http, pod, params, token))
                    elapsed, total, _ = await timed_subscribe(ws, fields)
                    socket_samples.append(elapsed)
                    if not round_number % 2:
                        http_samples.append(await timed_get(http, pod, params, token))
            results[label] = {"total": total, "socket": summary_ms(socket_samples), "http": summary_ms(http_samples)}
            print(
                f"  {label}: {total} match, socket p95 {results[label]['socket']['p95']:.1f} ms, "
                f"http p95 {results[label]['http']['p95']:.1f} ms",
                flush=True,
            )
    finally:
        for ws in sockets:
            await ws.close()
    return results


async def list_compute_seconds(http, pods: list[str]) -> dict:
    """Read each pod's tandem_live_list_duration_seconds histogram: the time spent filtering, sorting and counting."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    for pod in pods:
        async with http.get(f"{pod}/metrics") as response:
            text = await response.text()
        for line in text.splitlines():
            if line.startswith("tandem_live_list_duration_seconds_bucket"):
                bound = line.split('le="')[1].split('"')[0]
                buckets[float(bound)] = buckets.get(float(bound), 0.0) + float(line.split()[-1])
            elif line.startswith("tandem_live_list_duration_seconds_count"):
                count += float(line.split()[-1])
            elif line.startswith("tandem_live_list_duration_seconds_sum"):
                total += float(line.split()[-1])
    p95_bound = next((bound for bound in sorted(buckets) if buckets[bound] >= 0.95 * count), float("inf"))
    return {"count": count, "mean_ms": 1000 * total / count if count else 0.0, "p95_at_most_ms": 1000 * p95_bound}


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


async def run(arguments: argparse.Namespace) -> dict:
    data_dir = Path(tempfile.mkdtemp(prefix="tandem-live-scale-"))
    nats_server = EmbeddedNats(data_dir=data_dir / "nats", port=free_port())
    await nats_server.start()
    processes: list[subprocess.Popen] = []
    results: dict = {"machine": machine(), "sessions": arguments.sessions, "load_average_start": os.getloadavg()}
    try:
        nc = await bus.connect(nats_server.url, name="bench")
        await bus.ensure_streams(nc.jetstream())
        await ProjectDirectory(js=nc.jetstream()).put(Project(id="bench", key="bench-key"))
        await nc.drain()
        env = {"TANDEM_NATS_URL": nats_server.url, "TANDEM_SECRET_KEY": SECRET_KEY}

        ingest_urls = []
        for _ in range(arguments.ingest_pods):
            port = free_port()
            processes.append(await spawn("tandem_ingest", port, {**env, "TANDEM_TRUSTED_PROXIES": "127.0.0.1/32"}))
            ingest_urls.append(f"http://127.0.0.1:{port}")
        live_pids, pods = [], []
        for _ in range(2):
            port = free_port()
            process = await spawn("tandem_live", port, env)
            processes.append(process)
            live_pids.append(process.pid)
            pods.append(f"http://127.0.0.1:{port}")
        await asyncio.sleep(2.0)
        idle_rss = [rss_bytes(pid) for pid in live_pids]

        token = TokenSigner(secret_key=SECRET_KEY).sign_agent(
            agent_id="bench", name="bench", role="admin", projects=["*"], ttl_seconds=3600
        )[0]
        trackers = [
            Tracker(index=i, tab=f"tab-{i}", ingest_url=ingest_urls[i % len(ingest_urls)])
            for i in range(arguments.sessions)
        ]
        connector = aiohttp.TCPConnector(limit=arguments.concurrency + WATCHERS + 8)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            print(f"Registering {arguments.sessions} sessions…", flush=True)
            seconds = await register(http, trackers, arguments.concurrency)
            results["register_seconds"] = seconds
            print(f"  {seconds:.1f} s ({arguments.sessions / seconds:.0f} sessions/s)", flush=True)

            stop_event = asyncio.Event()
            heartbeat_stats = HeartbeatStats()
            heartbeats_started = time.perf_counter()
            background = [
                asyncio.create_task(heartbeats(http, trackers, arguments.concurrency, stop_event, heartbeat_stats)),
                asyncio.create_task(churn(http, trackers, arguments.churn_per_second, stop_event)),
            ]
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
            results["lists"] = await measure_lists(http, pods, token, arguments.rounds)
            results["list_compute"] = await list_compute_seconds(http, pods)
            print(f"  compute alone: {results['list_compute']}", flush=True)
            print(f"{WATCHERS} agents watching one session:", flush=True)
            results["watchers"] = await measure_watchers(http, pods, token, trackers[0], arguments.watch_samples)
            print(f"  p50 {results['watchers']['p50']:.1f} ms, p95 {results['watchers']['p95']:.1f} ms", flush=True)

            if arguments.baseline_commit:
                print(f"Baseline: the live service of {arguments.baseline_commit}…", flush=True)
                port = free_port()
                path = extract_baseline(arguments.baseline_commit, data_dir / "baseline")
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
            await asyncio.gather(*background, return_exceptions=True)
            results["heartbeat_post"] = summary_ms(heartbeat_stats.latencies)
            results["heartbeats_per_second"] = len(heartbeat_stats.latencies) / (
                time.perf_counter() - heartbeats_started
            )
            results["heartbeat_failures"] = heartbeat_stats.failures
            results["load_average_end"] = os.getloadavg()
    finally:
        for process in processes:
            stop(process)
        nats_server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000, help="Concurrent live sessions to register.")
    parser.add_argument("--concurrency", type=int, default=128, help="Tracker requests in flight at most.")
    parser.add_argument("--ingest-pods", type=int, default=2, help="Ingest processes the trackers are spread over.")
    parser.add_argument("--churn-per-second", type=float, default=10.0, help="Tabs closed and opened per second.")
    parser.add_argument("--rounds", type=int, default=30, help="Requests per query and pod.")
    parser.add_argument("--watch-samples", type=int, default=50, help="Batches timed to the 20 watching agents.")
    parser.add_argument(
        "--baseline-commit", default="a979369", help="Commit whose live service is the baseline; empty skips it."
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
