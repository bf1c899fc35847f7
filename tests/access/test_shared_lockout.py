"""The sign-in lockout shared by every pod through a real nats-server's key-value bucket."""

from __future__ import annotations

import asyncio

import pytest
from tandem_protocol import subjects
from tandem_runtime import bus
from tandem_runtime.directory import bucket_keys
from tandem_runtime.ratelimit import SharedFailureLockout

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def pods(nats_server):
    """Two lockouts on their own NATS connections, as two sessions pods, with one clock the test moves."""
    now = [1_000.0]
    clients = [await bus.connect(nats_server.url, name=f"pod-{index}") for index in range(2)]
    await bus.ensure_streams(clients[0].jetstream())
    lockouts = [
        SharedFailureLockout(
            js=client.jetstream(), max_failures=3, window_seconds=10, lockout_seconds=60, clock=lambda: now[0]
        )
        for client in clients
    ]
    yield lockouts, now
    for client in clients:
        await client.close()


async def test_failures_add_up_across_pods(pods):
    (first, second), now = pods
    await first.fail("203.0.113.9")
    await second.fail("203.0.113.9")
    assert await first.retry_after("203.0.113.9") == 0
    await first.fail("203.0.113.9")
    assert await second.retry_after("203.0.113.9") == pytest.approx(60), "the third failure, on any pod, locks"
    assert await first.retry_after("203.0.113.10") == 0, "other addresses are not locked"
    now[0] += 45
    assert await second.retry_after("203.0.113.9") == pytest.approx(15)


async def test_window_and_success_reset(pods):
    (first, second), now = pods
    await first.fail("198.51.100.4")
    await second.fail("198.51.100.4")
    now[0] += 11
    await first.fail("198.51.100.4")
    assert await second.retry_after("198.51.100.4") == 0, "failures older than the window do not count"
    await second.succeed("198.51.100.4")
    await first.fail("198.51.100.4")
    await first.fail("198.51.100.4")
    assert await first.retry_after("198.51.100.4") == 0, "a sign-in clears the count, also after a delete"
    await first.fail("198.51.100.4")
    assert await second.retry_after("198.51.100.4") == pytest.approx(60)


async def test_concurrent_failures_all_count(pods):
    """Failures written by both pods at the same moment are each counted once, by compare-and-set."""
    (first, second), _ = pods
    await asyncio.gather(first.fail("192.0.2.77"), second.fail("192.0.2.77"), first.fail("192.0.2.77"))
    assert await second.retry_after("192.0.2.77") == pytest.approx(60)


async def test_bucket_holds_no_address(pods, nats_server):
    (first, _), _ = pods
    await first.fail("192.0.2.55")
    client = await bus.connect(nats_server.url, name="reader")
    kv = await client.jetstream().key_value(subjects.LOGIN_FAILURES_BUCKET)
    keys = await bucket_keys(client.jetstream(), subjects.LOGIN_FAILURES_BUCKET)
    values = [(await kv.get(key)).value for key in keys]
    await client.close()
    assert keys and all("192.0.2.55" not in key for key in keys)
    assert all(b"192.0.2.55" not in value for value in values)
