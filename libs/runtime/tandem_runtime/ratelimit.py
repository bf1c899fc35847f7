"""Rate limits: token buckets by key, and a lockout after repeated failures.

The token buckets live in each pod, so with N pods a client that spreads its requests
over every pod gets up to N times the limit: that bounds abuse from one client without
a shared store on the request path. The sign-in lockout (`SharedFailureLockout`) counts
in a NATS key-value bucket that every pod shares, since sign-ins are few and each
guessed password matters.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address

import orjson
from aiohttp import web
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from prometheus_client import Counter
from tandem_protocol import ProtocolError, subjects

from tandem_runtime.http import error_response

RATE_LIMITED = Counter("tandem_rate_limited_total", "Requests answered 429, by limit.", ["limit"])

MAX_TRACKED_KEYS = 100_000
"""Keys remembered per limiter; the least recently used key is forgotten first."""


class RateLimited(ProtocolError):
    """A 429 error whose response carries `Retry-After` (whole seconds, rounded up)."""

    def __init__(self, *, code: str, message: str, retry_after_seconds: float) -> None:
        self.retry_after_seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(
            code=code, message=message, status=429, details={"retryAfterSeconds": self.retry_after_seconds}
        )


@dataclass
class Bucket:
    tokens: float
    updated_at: float


class TokenBuckets:
    """One token bucket per key: `rate` tokens per second refill it, up to `burst`."""

    def __init__(self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("A token bucket needs rate > 0 and burst >= 1.")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, key: str, *, rate: float | None = None, burst: float | None = None) -> float:
        """Take one token; return 0 when there was one, else the seconds until there is one.

        `rate` and `burst` override the defaults for this key (a per-project limit).
        """
        rate = rate or self.rate
        burst = burst or self.burst
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = Bucket(tokens=burst, updated_at=now)
            self._buckets[key] = bucket
            while len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated_at) * rate)
        bucket.updated_at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate


@dataclass
class FailureWindow:
    failures: int
    first_at: float
    locked_until: float = 0.0

    def failed(self, now: float, *, max_failures: int, window_seconds: float, lockout_seconds: float) -> None:
        """Count one failure at `now`, starting a new window when the current one is over."""
        if now - self.first_at > window_seconds:
            self.failures = 0
            self.first_at = now
        self.failures += 1
        if self.failures >= max_failures:
            self.locked_until = now + lockout_seconds
            self.failures = 0
            self.first_at = now


class FailureLockout:
    """Lock a key (an address) out for `lockout_seconds` after `max_failures` failures within `window_seconds`."""

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._windows: OrderedDict[str, FailureWindow] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """Return the seconds until `key` may try again, or 0 when it is not locked out."""
        window = self._windows.get(key)
        if window is None:
            return 0.0
        return max(0.0, window.locked_until - self._clock())

    def fail(self, key: str) -> None:
        now = self._clock()
        window = self._windows.get(key)
        if window is None:
            window = FailureWindow(failures=0, first_at=now)
            self._windows[key] = window
        self._windows.move_to_end(key)
        window.failed(
            now,
            max_failures=self.max_failures,
            window_seconds=self.window_seconds,
            lockout_seconds=self.lockout_seconds,
        )
        while len(self._windows) > MAX_TRACKED_KEYS:
            self._windows.popitem(last=False)

    def succeed(self, key: str) -> None:
        self._windows.pop(key, None)


class SharedFailureLockout:
    """The rules of `FailureLockout`, counted in a key-value bucket that every pod shares.

    Keys are SHA-256 digests of the addresses, so the bus contains no client address. A
    failure is a compare-and-set write, retried when another pod wrote the same key first.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._clock = clock

    async def retry_after(self, key: str) -> float:
        """Return the seconds until `key` may try again, or 0 when it is not locked out."""
        window, _ = await self._read(key)
        if window is None:
            return 0.0
        return max(0.0, window.locked_until - self._clock())

    async def fail(self, key: str) -> None:
        kv = await self._js.key_value(subjects.LOGIN_FAILURES_BUCKET)
        for _ in range(10):
            now = self._clock()
            window, revision = await self._read(key)
            window = window or FailureWindow(failures=0, first_at=now)
            window.failed(
                now,
                max_failures=self.max_failures,
                window_seconds=self.window_seconds,
                lockout_seconds=self.lockout_seconds,
            )
            value = orjson.dumps(window.__dict__)
            try:
                if revision:
                    await kv.update(_digest(key), value, last=revision)
                else:
                    await kv.create(_digest(key), value)
                return
            except KeyWrongLastSequenceError:
                continue  # Another pod counted a failure of this address in between: count again on top.
        raise ProtocolError(
            code="lockout_busy",
            message="Too many sign-ins from this address at once. Retry in a few seconds.",
            status=503,
        )

    async def succeed(self, key: str) -> None:
        kv = await self._js.key_value(subjects.LOGIN_FAILURES_BUCKET)
        if (await self._read(key))[0] is not None:
            await kv.delete(_digest(key))

    async def _read(self, key: str) -> tuple[FailureWindow | None, int]:
        """Return the key's window and the revision to update it at (0 when it has none)."""
        kv = await self._js.key_value(subjects.LOGIN_FAILURES_BUCKET)
        try:
            entry = await kv.get(_digest(key))
        except KeyNotFoundError:  # kv.create() also writes over a deleted key.
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return FailureWindow(**orjson.loads(entry.value)), entry.revision or 0


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@web.middleware
async def retry_after_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Turn a RateLimited error into its JSON response with a `Retry-After` header.

    Place it after `error_middleware` in the list, so that it runs closer to the handler.
    """
    try:
        return await handler(request)
    except RateLimited as error:
        RATE_LIMITED.labels(error.code).inc()
        return error_response(error, headers={"Retry-After": str(error.retry_after_seconds)})


def client_address(request: web.Request, trusted_proxies: Sequence[IPv4Network | IPv6Network]) -> str:
    """Return the client's address: the TCP peer, or the X-Forwarded-For hop that a trusted proxy vouches for.

    The header is read from right to left while each hop is a trusted proxy; hops left of
    the first untrusted one were written by the client and are ignored.
    """
    peer = request.remote or ""
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    current = peer
    while _trusted(current, trusted_proxies) and hops:
        current = hops.pop()
    return current if _valid(current) else peer


def _valid(address: str) -> bool:
    try:
        ip_address(address)
    except ValueError:
        return False
    return True


def _trusted(address: str, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)
