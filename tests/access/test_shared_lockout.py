"""The sign-in lockout shared by every pod through a real nats-server's key-value bucket."""

from __future__ import annotations

import asyncio

import pytest
from tandem_protocol import subjects
from tandem_runtime import bus
from tandem_runtime.directory import bucket_keys
from tandem_runtime.ratelimit import SharedFailureLockout, lockout_subject

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def pods(nats_server):
    """Two lockouts on their own NATS connections, as two sessions pods, with one clock the test moves."""
    now = [1_000.0]
    clients = [await bus.connect(nats_server.url, name=f"pod-{index}") for index in range(2)]
    await bus.ensure_streams(clients[0].jetstream())
    lockouts = [
        SharedFailureLockout(
            js=client.jetstream(),
            secret_key=b"test-lockout-key",
            max_failures=3,
            window_seconds=10,
            lockout_seconds=60,
            clock=lambda: now[0],
        )
        for client in clients
    ]
    yield lockouts, now
    for client in clients:
        await client.close()


async def test_failures_add_up_across_pods(pods):
    (first, second), now = pods
    assert await first.reserve("203.0.113.9") == 0
    assert await second.reserve("203.0.113.9") == 0
    assert await first.retry_after("203.0.113.9") == 0
    assert await first.reserve("203.0.113.9") == 0, "the third attempt may still try its password"
    assert await second.retry_after("203.0.113.9") == pytest.approx(60), "it locks the address on every pod"
    assert await second.reserve("203.0.113.9") == pytest.approx(60)
    assert await first.reserve("203.0.113.10") == 0, "other addresses are not locked"
    now[0] += 45
    assert await second.retry_after("203.0.113.9") == pytest.approx(15)
    now[0] += 16
    assert await first.reserve("203.0.113.9") == 0, "the lockout ends"
    assert await first.reserve("203.0.113.9") == 0, "and the count starts again"


async def test_window_ends(pods):
    (first, second), now = pods
    await first.reserve("198.51.100.4")
    await second.reserve("198.51.100.4")
    now[0] += 11
    await first.reserve("198.51.100.4")
    assert await second.retry_after("198.51.100.4") == 0, "attempts older than the window do not count"


async def test_success_refunds_only_itself(pods):
    """A sign-in that succeeds takes back its own attempt, not the failures before it."""
    (first, second), _ = pods
    for _ in range(2):
        await first.reserve("198.51.100.5")  # Two wrong passwords.
    await second.reserve("198.51.100.5")
    await second.refund("198.51.100.5")  # A right one, to any account.
    assert await first.retry_after("198.51.100.5") == 0
    await first.reserve("198.51.100.5")  # The next wrong one is the third failure.
    assert await first.retry_after("198.51.100.5") == pytest.approx(60)


async def test_concurrent_attempts_all_count(pods):
    """Attempts from both pods at the same moment are each counted once; none passes past the limit."""
    (first, second), _ = pods
    waits = await asyncio.gather(*(pod.reserve("192.0.2.77") for _ in range(10) for pod in (first, second)))
    assert sum(1 for wait in waits if wait == 0) == 3, waits
    assert await second.retry_after("192.0.2.77") == pytest.approx(60)


@pytest.mark.parametrize(
    ("spelling", "same_as"),
    [
        ("2001:db8::1", "2001:DB8:0:0:0:0:0:1"),
        ("2001:db8::1", "2001:db8::ffff"),
        ("198.51.100.3", "::ffff:198.51.100.3"),
        ("fe80::1%eth0", "fe80::1%eth1"),
        ("unknown", "198.51.100.20:443"),
    ],
)
async def test_lockout_subject_spellings(spelling, same_as):
    assert lockout_subject(spelling) == lockout_subject(same_as)


async def test_lockout_subject_distinct():
    assert lockout_subject("2001:db8:0:1::1") != lockout_subject("2001:db8:0:2::1"), "another /64 is another host"
    assert lockout_subject("198.51.100.3") != lockout_subject("198.51.100.4")


async def test_bucket_holds_no_address(pods, nats_server):
    (first, _), _ = pods
    await first.reserve("192.0.2.55")
    client = await bus.connect(nats_server.url, name="reader")
    kv = await client.jetstream().key_value(subjects.LOGIN_FAILURES_BUCKET)
    keys = await bucket_keys(client.jetstream(), subjects.LOGIN_FAILURES_BUCKET)
    values = [(await kv.get(key)).value for key in keys]
    await client.close()
    assert keys
    assert all("192.0.2.55" not in key for key in keys)
    assert all(b"192.0.2.55" not in value for value in values)
