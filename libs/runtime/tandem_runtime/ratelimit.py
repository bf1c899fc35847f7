"""Rate limits: token buckets by key, and a lockout after repeated failures.

The token buckets live in each pod, so with N pods a client that spreads its requests
over every pod gets up to N times the limit: that bounds abuse from one client without
a shared store on the request path. The sign-in lockout (`SharedFailureLockout`) counts
in a NATS key-value bucket that every pod shares, since sign-ins are few and each
guessed password matters.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import orjson
import structlog
from aiohttp import web
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import Counter
from tandem_protocol import ProtocolError, subjects

from tandem_runtime.http import error_response

log = structlog.get_logger(__name__)

NOT_AN_ADDRESS = "not-an-address"
"""The client address of a request whose trusted proxy wrote a hop that is not an address."""

CAS_ATTEMPTS = 100
"""Compare-and-set writes one sign-in attempt may lose to others from the same address before it is rejected."""

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
    """The sign-in attempts of one address: counted when they start, refunded when they succeed."""

    attempts: int = 0
    first_at: float = 0.0
    locked_until: float = 0.0

    def reserve(self, now: float, *, max_failures: int, window_seconds: float, lockout_seconds: float) -> float:
        """Count an attempt at `now` and return 0, or return the seconds to wait when the address is locked out."""
        if self.locked_until > now:
            return self.locked_until - now
        if now - self.first_at > window_seconds or self.locked_until:
            self.attempts, self.first_at, self.locked_until = 0, now, 0.0
        self.attempts += 1
        if self.attempts >= max_failures:
            self.locked_until = now + lockout_seconds
        return 0.0

    def refund(self, *, max_failures: int) -> None:
        """Take back the attempt of a sign-in that succeeded, and the lockout that attempt set."""
        self.attempts = max(0, self.attempts - 1)
        if self.attempts < max_failures:
            self.locked_until = 0.0


class SharedFailureLockout:
    """Lock an address out for `lockout_seconds` after `max_failures` failed sign-ins within `window_seconds`.

    The counts live in a key-value bucket that every pod shares. Each attempt is counted
    before its password is checked, with a compare-and-set write, and refunded when it
    succeeds: so concurrent attempts cannot all pass the check before any failure is
    written, and a sign-in to another account does not clear the failures. Keys are
    HMAC-SHA-256 digests of the addresses under the server's secret key, so the bus
    contains no client address and a key cannot be reversed by hashing every address.
    """

    def __init__(
        self,
        *,
        js: JetStreamContext,
        secret_key: bytes,
        max_failures: int,
        window_seconds: float,
        lockout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._js = js
        self._secret = secret_key
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._clock = clock

    async def reserve(self, address: str) -> float:
        """Count a sign-in attempt from `address` and return 0, or return the seconds it must wait.

        Raise a 429 RateLimited when the count cannot be written, so that no attempt goes uncounted.
        """
        rules = {
            "max_failures": self.max_failures,
            "window_seconds": self.window_seconds,
            "lockout_seconds": self.lockout_seconds,
        }
        result: list[float] = []

        def change(window: FailureWindow) -> None:
            result.append(window.reserve(self._clock(), **rules))

        written = await self._change(address, change)
        if result and result[-1] > 0:
            return result[-1]
        if not written:
            raise RateLimited(
                code="sign_in_busy",
                message="Too many sign-ins from this address at once. Retry after the Retry-After delay.",
                retry_after_seconds=1,
            )
        return 0.0

    async def retry_after(self, address: str) -> float:
        """Return the seconds until `address` may try again, or 0 when it is not locked out."""
        kv = await self._js.key_value(subjects.LOGIN_FAILURES_BUCKET)
        window, _ = await self._read(kv, self._key(address))
        if window is None:
            return 0.0
        return max(0.0, window.locked_until - self._clock())

    async def refund(self, address: str) -> None:
        """Take back the attempt of a sign-in that succeeded; a failure to write is logged, not raised."""
        if not await self._change(address, lambda window: window.refund(max_failures=self.max_failures)):
            log.warning("lockout.refund_failed", reason="the count could not be written")

    async def _change(self, address: str, change: Callable[[FailureWindow], None]) -> bool:
        """Apply `change` to the address's window with compare-and-set; return whether it was written.

        Returns True without writing when `change` leaves the window as it was, and False
        after CAS_ATTEMPTS writes lost to other attempts or a bus error.
        """
        key = self._key(address)
        try:
            kv = await self._js.key_value(subjects.LOGIN_FAILURES_BUCKET)
        except NatsError as exc:
            log.warning("lockout.write_failed", error=repr(exc))
            return False
        for _ in range(CAS_ATTEMPTS):
            try:
                window, revision = await self._read(kv, key)
                before = FailureWindow(**window.__dict__) if window else None
                window = window or FailureWindow()
                change(window)
                if window == before:
                    return True  # Nothing to write: a locked address, or no attempt to refund.
                value = orjson.dumps(window.__dict__)
                if revision:
                    await kv.update(key, value, last=revision)
                else:
                    await kv.create(key, value)
                return True
            except KeyWrongLastSequenceError:
                # Another attempt from this address was counted in between: count again on top of it.
                await asyncio.sleep(random.uniform(0, 0.01))
            except NatsError as exc:
                log.warning("lockout.write_failed", error=repr(exc))
                return False
        return False

    @staticmethod
    async def _read(kv: KeyValue, key: str) -> tuple[FailureWindow | None, int]:
        """Return the window stored at `key` and the revision to update it at (0 when it has none)."""
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:  # kv.create() also writes over a deleted key.
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return FailureWindow(**orjson.loads(entry.value)), entry.revision or 0

    def _key(self, address: str) -> str:
        return hmac.new(self._secret, lockout_subject(address).encode(), hashlib.sha256).hexdigest()


def lockout_subject(address: str) -> str:
    """Return what the lockout counts for a client address: the address, or its /64 network for IPv6.

    Spellings of one address count as one: IPv4-mapped IPv6 is its IPv4 address, and a
    zone (`%eth0`) is dropped. One IPv6 host usually owns a whole /64, so a host cannot
    step through its addresses. A value that is not an address counts under one key.
    """
    try:
        parsed = ip_address(address.split("%", 1)[0])
    except ValueError:
        return NOT_AN_ADDRESS
    if isinstance(parsed, IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


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
    the first untrusted one were written by the client and are ignored. A hop that is not
    an address gives NOT_AN_ADDRESS, so that it is not counted against the proxy itself.
    """
    peer = request.remote or ""
    hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", []) for hop in header.split(",")]
    current = peer
    while _trusted(current, trusted_proxies) and hops:
        current = hops.pop()
    return current if _valid(current) else NOT_AN_ADDRESS


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
