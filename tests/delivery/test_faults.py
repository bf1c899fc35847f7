"""Faults while trackers send: nats-server killed, the sessions service killed mid-write, the store down for 30 s.

Each test runs synthetic trackers (trackers.py) against Tandem as separate
processes (cluster.py), breaks one part while they send, repairs it, and then
checks through the events API that every batch answered with a 2xx is stored
exactly once and replayed in order.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections import Counter

import aiohttp
from nats.js.errors import NotFoundError
from tandem_protocol import subjects

from tests.delivery.cluster import Cluster
from tests.delivery.trackers import SyntheticTracker, assert_exactly_once_in_order, wait_until_stored

TRACKERS = int(os.environ.get("TANDEM_TEST_DELIVERY_TRACKERS", "20"))
BATCH_INTERVAL_SECONDS = 0.1
STORE_WAIT_SECONDS = float(os.environ.get("TANDEM_TEST_STORE_WAIT", "60"))
STORE_DOWN_SECONDS = 30.0
"""Fixed by the issue: the store is unavailable for 30 s."""


async def start_trackers(http: aiohttp.ClientSession, cluster: Cluster, count: int) -> list[SyntheticTracker]:
    trackers = [SyntheticTracker(http=http, url=cluster.ingest_url, name=f"tab{index}") for index in range(count)]
    deadline = time.monotonic() + 20
    await asyncio.gather(*(tracker.start(deadline=deadline) for tracker in trackers))
    return trackers


def sending(trackers: list[SyntheticTracker], seconds: float) -> asyncio.Future:
    until = time.monotonic() + seconds
    return asyncio.gather(*(tracker.run(until=until, interval=BATCH_INTERVAL_SECONDS) for tracker in trackers))


def total_outcomes(trackers: list[SyntheticTracker]) -> Counter:
    return sum((tracker.outcomes for tracker in trackers), start=Counter())


def acked(trackers: list[SyntheticTracker]) -> int:
    return sum(len(tracker.acked) for tracker in trackers)


async def check_stored(http: aiohttp.ClientSession, cluster: Cluster, trackers: list[SyntheticTracker]) -> None:
    token = await cluster.agent_token(http)
    stored = await wait_until_stored(http, cluster.api_url, token, trackers, timeout=STORE_WAIT_SECONDS)
    assert_exactly_once_in_order(trackers, stored)


async def dead_letters(cluster: Cluster) -> int:
    try:
        info = await cluster.nc.jetstream().stream_info(subjects.DEAD_LETTERS_STREAM)
    except NotFoundError:
        return 0
    return info.state.messages


async def test_faults_nats_killed(make_cluster, http):
    cluster = await make_cluster()
    trackers = await start_trackers(http, cluster, TRACKERS)
    run = sending(trackers, 10.0)

    await asyncio.sleep(3.0)
    before = acked(trackers)
    cluster.nats.stop(kill=True)
    await asyncio.sleep(3.0)
    during = acked(trackers)
    await cluster.nats.start()
    await run

    outcomes = total_outcomes(trackers)
    assert before > 0
    # Nothing is acknowledged while nats-server is down (a request in flight at the kill may still finish).
    assert during - before <= len(trackers), outcomes
    assert outcomes[503] > 0, f"no request was refused while nats-server was down: {outcomes}"
    assert acked(trackers) > during, "no batch was acknowledged after nats-server came back"
    assert not any(tracker.given_up for tracker in trackers), outcomes
    await check_stored(http, cluster, trackers)
    assert await dead_letters(cluster) == 0


async def kill_mid_write(cluster: Cluster, *, timeout: float = 10.0) -> int:
    """SIGKILL the sessions service while it holds fetched, unacknowledged messages; return how many it held."""
    js = cluster.nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = await js.consumer_info(subjects.EVENTS_STREAM, "tandem-sessions-store")
        if info.num_ack_pending > 0:
            cluster.kill("sessions")
            return info.num_ack_pending
        await asyncio.sleep(0.005)
    raise AssertionError("the sessions service never held unacknowledged messages")


async def test_faults_sessions_killed(make_cluster, http):
    cluster = await make_cluster()
    trackers = await start_trackers(http, cluster, TRACKERS)
    run = sending(trackers, 10.0)

    await asyncio.sleep(2.0)
    first_kill = await kill_mid_write(cluster)
    await cluster.start_service("sessions")
    await asyncio.sleep(2.0)
    second_kill = await kill_mid_write(cluster)
    await asyncio.sleep(1.0)
    await cluster.start_service("sessions")
    await run

    assert first_kill > 0
    assert second_kill > 0
    assert not any(tracker.given_up for tracker in trackers), total_outcomes(trackers)
    await check_stored(http, cluster, trackers)
    assert await dead_letters(cluster) == 0


def store_owner() -> str | None:
    """Root ignores file permissions, so as root the sessions service runs as nobody."""
    return "nobody" if os.geteuid() == 0 else None


def set_writable(path, writable: bool) -> None:
    """Change the store folder's write bits, retrying while ClickHouse merges remove parts under `chmod -R`."""
    for _ in range(10):
        result = subprocess.run(["chmod", "-R", "u+w" if writable else "a-w", str(path)], capture_output=True)
        if result.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"chmod -R on {path} kept failing: {result.stderr.decode()[-500:]}")


async def test_faults_store_down(make_cluster, http):
    cluster = await make_cluster(store_user=store_owner())
    trackers = await start_trackers(http, cluster, TRACKERS // 2)
    run = sending(trackers, STORE_DOWN_SECONDS + 6.0)
    token = await cluster.agent_token(http)

    await asyncio.sleep(2.0)
    set_writable(cluster.chdb_dir, False)
    try:
        await asyncio.sleep(STORE_DOWN_SECONDS / 2)
        # Ingest goes on acknowledging batches: the bus keeps them until the store is back.
        stored = await wait_until_stored(http, cluster.api_url, token, trackers, timeout=0)
        unstored = sum(len(set(t.acked) - set(stored.get(t.name, []))) for t in trackers)
        await asyncio.sleep(STORE_DOWN_SECONDS / 2)
    finally:
        set_writable(cluster.chdb_dir, True)
    await run

    assert unstored > len(trackers), "batches kept being stored while the store was read-only"
    assert not any(tracker.given_up for tracker in trackers), total_outcomes(trackers)
    await check_stored(http, cluster, trackers)
    assert await dead_letters(cluster) == 0
    assert cluster.processes["sessions"].poll() is None, "the sessions service died while the store was down"
