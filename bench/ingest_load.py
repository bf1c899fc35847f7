"""Ingest under load: synthetic trackers against `python -m tandem run`, and JetStream alone as the baseline.

    .venv/bin/python -m bench.ingest_load [--trackers 200] [--seconds 120] [--interval 1.0]
                                          [--events 20] [--cpu-seconds 20] [--cpu-trackers 50]

Three parts, each with its own server started as a child process on loopback:

1. Load: `--trackers` synthetic trackers (tests/delivery/trackers.py, which number
   and retry batches like the browser tracker) each send a batch of `--events`
   events every `--interval` seconds, one request at a time, for `--seconds`.
   Reports throughput, the latency of each request as the tracker sees it, and,
   once the store has caught up, whether every batch answered 2xx is stored once.
   The same load runs again with the store consumer switched off
   (TANDEM_CONSUMER_ENABLED=false), which shows what the embedded store costs ingest.
2. Cost per core: with the store consumer and the project rate limit off, so that
   the server only ingests, `--cpu-trackers` trackers send without pause, first
   uncompressed, then gzip-compressed like the tracker does (bodies over 2 KiB).
   Reports events per second of the server process's CPU time.
3. Baseline: the same EventBatch messages published to JetStream from Python with
   Nats-Msg-Id, as many publishers, no pause: the bus alone, without HTTP,
   validation or the live-session registry.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats
from tandem_protocol import EventBatch, encode, subjects
from tandem_runtime import bus
from tandem_runtime.embedded import EmbeddedNats, free_port

from bench.common import Server, machine, start_server, summary_ms
from tests.delivery.trackers import (
    SyntheticTracker,
    agent_token,
    assert_exactly_once_in_order,
    wait_until_stored,
)

GZIP_ABOVE_BYTES = 2048
"""The tracker's threshold (GZIP_MIN_BYTES in web/tracker/src/transport.ts)."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return children


@dataclass
class CpuMeter:
    """CPU seconds used by the server process and by its nats-server child between `start` and `stop`."""

    server_pid: int
    server: float = 0.0
    nats: float = 0.0

    def start(self) -> None:
        self._nats_pids = child_pids(self.server_pid)
        self._server_start = cpu_seconds(self.server_pid)
        self._nats_start = sum(cpu_seconds(pid) for pid in self._nats_pids)

    def stop(self) -> None:
        self.server = cpu_seconds(self.server_pid) - self._server_start
        self.nats = sum(cpu_seconds(pid) for pid in self._nats_pids) - self._nats_start


@dataclass
class Result:
    label: str
    seconds: float
    batches: int
    events: int
    latencies: list[float]
    refused: int
    cpu_server: float
    cpu_nats: float
    refusals: Counter = field(default_factory=Counter)
    """Attempts that got no 2xx, by HTTP status or network error."""

    def line(self) -> str:
        latency = summary_ms(self.latencies) if self.latencies else {"p50": 0.0, "p95": 0.0, "p99": 0.0}
        per_core = self.events / self.cpu_server if self.cpu_server else float("nan")
        return (
            f"| {self.label} | {self.batches / self.seconds:,.0f} | {self.events / self.seconds:,.0f} "
            f"| {latency['p50']:.1f} | {latency['p95']:.1f} | {latency['p99']:.1f} | {self.refused} "
            f"| {self.cpu_server / self.seconds:.2f} | {self.cpu_nats / self.seconds:.2f} | {per_core:,.0f} |"
        )


async def drive(server: Server, *, trackers: int, seconds: float, interval: float, events: int, gzip: bool):
    """Start the trackers, run them for `seconds`, and return them with the CPU used meanwhile."""
    connector = aiohttp.TCPConnector(limit=0)
    http = aiohttp.ClientSession(connector=connector)
    clients = [
        SyntheticTracker(
            http=http,
            url=server.url,
            name=f"load{index}",
            events_per_batch=events,
            gzip_above=GZIP_ABOVE_BYTES if gzip else None,
        )
        for index in range(trackers)
    ]
    await asyncio.gather(*(client.start(deadline=time.monotonic() + 60) for client in clients))
    meter = CpuMeter(server.process.pid)
    meter.start()
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(client.run(until=until, interval=interval) for client in clients))
    elapsed = time.monotonic() - started
    meter.stop()
    return http, clients, elapsed, meter


def summarise(label: str, clients: list[SyntheticTracker], elapsed: float, meter: CpuMeter) -> Result:
    return Result(
        label=label,
        seconds=elapsed,
        batches=sum(len(c.acked) for c in clients),
        events=sum(c.events_sent for c in clients),
        latencies=[latency for c in clients for latency in c.latencies],
        refused=sum(
            count for c in clients for outcome, count in c.outcomes.items() if outcome not in (200, "start:200")
        ),
        cpu_server=meter.server,
        cpu_nats=meter.nats,
        refusals=sum(
            (Counter({k: v for k, v in c.outcomes.items() if k not in (200, "start:200")}) for c in clients), Counter()
        ),
    )


async def load_part(arguments: argparse.Namespace, *, store: bool) -> tuple[Result, str]:
    """Run the load; with `store`, check afterwards that the store has every batch answered 2xx."""
    server = await start_server(extra_env=None if store else {"TANDEM_CONSUMER_ENABLED": "false"})
    try:
        http, clients, elapsed, meter = await drive(
            server,
            trackers=arguments.trackers,
            seconds=arguments.seconds,
            interval=arguments.interval,
            events=arguments.events,
            gzip=True,
        )
        label = (
            f"{arguments.trackers} trackers, a batch every {arguments.interval:g} s, store {'on' if store else 'off'}"
        )
        result = summarise(label, clients, elapsed, meter)
        if not store:
            await http.close()
            return result, ""
        try:
            token = await agent_token(http, server.url, server.admin_password)
            waited = time.monotonic()
            stored = await wait_until_stored(http, server.url, token, clients, timeout=300)
            assert_exactly_once_in_order(clients, stored)
            check = (
                f"all {result.batches} batches answered 2xx were stored once and in order; the store caught up "
                f"{time.monotonic() - waited:.0f} s after the load ended"
            )
        except AssertionError as error:
            check = f"STORE CHECK FAILED: {error}"
        finally:
            await http.close()
    finally:
        server.stop()
    return result, check


async def cpu_part(arguments: argparse.Namespace, gzip: bool) -> Result:
    # The project rate limit (500 requests a second) would refuse part of this load: lift it.
    env = {"TANDEM_CONSUMER_ENABLED": "false", "TANDEM_PROJECT_RATE_PER_SECOND": "1000000"}
    server = await start_server(extra_env=env)
    try:
        http, clients, elapsed, meter = await drive(
            server,
            trackers=arguments.cpu_trackers,
            seconds=arguments.cpu_seconds,
            interval=0.0,
            events=arguments.events,
            gzip=gzip,
        )
        await http.close()
    finally:
        server.stop()
    label = f"{arguments.cpu_trackers} trackers, no pause, {'gzip' if gzip else 'uncompressed'}, store off"
    return summarise(label, clients, elapsed, meter)


async def baseline_part(arguments: argparse.Namespace) -> Result:
    """JetStream publish alone: EventBatch messages with Nats-Msg-Id, one publisher per tracker, no pause."""
    folder = Path(tempfile.mkdtemp(prefix="tandem-bench-nats-"))
    server = EmbeddedNats(data_dir=folder, port=free_port())
    await server.start()
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await bus.ensure_streams(js)
    template = SyntheticTracker(http=None, url="", name="baseline", events_per_batch=arguments.events)  # type: ignore[arg-type]
    latencies: list[float] = []
    counts = {"batches": 0, "events": 0}

    async def publisher(index: int, until: float) -> None:
        seq = 0
        session = f"baseline{index}"
        while time.monotonic() < until:
            _, events = template.next_batch()
            message = EventBatch(
                project_id="demo",
                session_id=session,
                tab_id=session,
                seq=seq,
                received_at=int(time.time() * 1000),
                events=events,
            )
            started = time.perf_counter()
            await js.publish(
                subjects.events("demo", session), encode(message), headers={"Nats-Msg-Id": f"{session}:{session}:{seq}"}
            )
            latencies.append(time.perf_counter() - started)
            counts["batches"] += 1
            counts["events"] += len(events)
            seq += 1

    own_start = cpu_seconds(os.getpid())
    nats_start = cpu_seconds(server.process.pid)
    started = time.monotonic()
    until = started + arguments.cpu_seconds
    await asyncio.gather(*(publisher(index, until) for index in range(arguments.cpu_trackers)))
    elapsed = time.monotonic() - started
    own = cpu_seconds(os.getpid()) - own_start
    nats_cpu = cpu_seconds(server.process.pid) - nats_start
    await nc.close()
    server.stop()
    return Result(
        label=f"baseline: JetStream publish from Python, {arguments.cpu_trackers} publishers",
        seconds=elapsed,
        batches=counts["batches"],
        events=counts["events"],
        latencies=latencies,
        refused=0,
        cpu_server=own,
        cpu_nats=nats_cpu,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", type=int, default=200, help="Trackers of the load part.")
    parser.add_argument("--seconds", type=float, default=120.0, help="Length of the load part, in seconds.")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="Time between two batches of a tracker, in seconds."
    )
    parser.add_argument("--events", type=int, default=20, help="Events per batch.")
    parser.add_argument("--cpu-seconds", type=float, default=20.0, help="Length of each cost-per-core part.")
    parser.add_argument(
        "--cpu-trackers", type=int, default=50, help="Trackers (and baseline publishers) per cost part."
    )
    arguments = parser.parse_args()

    load, check = await load_part(arguments, store=True)
    print(load.line(), flush=True)
    load_without_store, _ = await load_part(arguments, store=False)
    print(load_without_store.line(), flush=True)
    plain = await cpu_part(arguments, gzip=False)
    print(plain.line(), flush=True)
    compressed = await cpu_part(arguments, gzip=True)
    print(compressed.line(), flush=True)
    baseline = await baseline_part(arguments)
    print(baseline.line(), flush=True)

    print()
    load_average = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"Machine: {machine()}; load average {load_average}. {arguments.events} events per batch (about 6 KB of JSON)."
    )
    columns = "run | batches/s | events/s | p50 ms | p95 ms | p99 ms | refused | server CPU | nats CPU | events/CPU s"
    print(f"| {columns} |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for result in (load, load_without_store, plain, compressed, baseline):
        print(result.line())
    print()
    print(f"Store check: {check}.")
    for result in (load, load_without_store, plain, compressed):
        if result.refusals:
            print(f"Refused in '{result.label}': {dict(result.refusals)} (each retried until answered 2xx).")
    ratio = plain.events / plain.cpu_server / (baseline.events / baseline.cpu_server)
    print(f"Ingest costs {1 / ratio:.1f}x the CPU per event of a bare JetStream publish from Python (uncompressed).")


if __name__ == "__main__":
    asyncio.run(main())
