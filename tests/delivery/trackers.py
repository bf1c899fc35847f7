"""Synthetic trackers: Python clients of the ingest API that number and retry batches like the browser tracker.

Each batch carries a marker event (`tandem.event` named `batch`, with the tracker's
name and the batch number), so that a test can read the stored session back and
check that every batch answered with a 2xx is there exactly once and in order.
The retry rules are the tracker's (web/tracker/src/backoff.ts): network errors,
429 and 5xx are retried with the same batch number, after a capped, jittered,
exponential delay that honours Retry-After; any other status gives up the batch.
The bench (bench/ingest_load.py) drives the same class.
"""

from __future__ import annotations

import asyncio
import gzip
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

PROJECT_KEY = "demo-key"
MARKER_NAME = "batch"


@dataclass(frozen=True)
class Backoff:
    """Delays of the retries: exponential from `base`, capped at `cap`, the lower half jittered."""

    base: float = 0.1
    cap: float = 2.0
    max_retry_after: float = 5.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(attempt, 16))
        jittered = ceiling / 2 + random.random() * ceiling / 2
        if retry_after is None:
            return jittered
        return min(self.max_retry_after, max(retry_after, jittered))


def now_ms() -> int:
    return int(time.time() * 1000)


def marker(tracker: str, seq: int, ts: int) -> dict[str, Any]:
    payload = {"name": MARKER_NAME, "payload": {"tracker": tracker, "seq": seq}}
    return {"type": 5, "timestamp": ts, "data": {"tag": "tandem.event", "payload": payload}}


def page_snapshot(ts: int, url: str) -> list[dict[str, Any]]:
    """A Meta event and a small FullSnapshot: the start of a page."""
    text = {"type": 3, "textContent": "Tandem Shop", "id": 4}
    body = {"type": 2, "tagName": "body", "attributes": {}, "childNodes": [text], "id": 3}
    html = {"type": 2, "tagName": "html", "attributes": {}, "childNodes": [body], "id": 2}
    return [
        {"type": 4, "timestamp": ts, "data": {"href": url, "width": 1280, "height": 800}},
        {
            "type": 2,
            "timestamp": ts,
            "data": {"node": {"type": 0, "childNodes": [html], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
        },
    ]


def mutation(ts: int, index: int) -> dict[str, Any]:
    """An rrweb mutation adding a list item, about 300 bytes of JSON that compresses like real pages do."""
    node = {
        "type": 2,
        "tagName": "li",
        "attributes": {"class": "activity-item", "data-index": str(index)},
        "childNodes": [{"type": 3, "textContent": f"Added item {index} to the cart", "id": 100_000 + index}],
        "id": 50_000 + index,
    }
    data = {
        "source": 0,
        "texts": [],
        "attributes": [],
        "removes": [],
        "adds": [{"parentId": 3, "nextId": None, "node": node}],
    }
    return {"type": 3, "timestamp": ts, "data": data}


@dataclass
class SyntheticTracker:
    """One tab: starts a session, then sends numbered batches until its deadline."""

    http: aiohttp.ClientSession
    url: str
    name: str
    events_per_batch: int = 5
    gzip_above: int | None = None
    """Compress bodies larger than this many bytes with gzip; None never compresses."""
    backoff: Backoff = field(default_factory=Backoff)
    request_timeout: float = 10.0

    session_id: str = ""
    token: str = ""
    next_seq: int = 0
    acked: list[int] = field(default_factory=list)
    """Batch numbers answered with a 2xx, in the order of the answers."""
    given_up: list[int] = field(default_factory=list)
    """Batch numbers still unanswered when the deadline passed, or rejected with a 4xx."""
    outcomes: Counter = field(default_factory=Counter)
    """Every attempt's outcome: an HTTP status, or the name of a network error."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from sending to a 2xx answer, for the attempts answered with a 2xx."""
    events_sent: int = 0
    _index: int = 0

    @property
    def tab_id(self) -> str:
        return self.name

    async def start(self, *, deadline: float) -> None:
        """Start the session, retrying like the tracker's start request until `deadline` (monotonic)."""
        body = {
            "version": 1,
            "projectKey": PROJECT_KEY,
            "trackerVersion": "synthetic",
            "tabId": self.tab_id,
            "url": f"http://shop.test/{self.name}",
            "title": "Synthetic",
            "userID": self.name,
            "timestamp": now_ms(),
        }
        attempt = 0
        while True:
            retry_after = None
            try:
                async with self.http.post(
                    f"{self.url}/ingest/v1/web/start",
                    json=body,
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                ) as response:
                    self.outcomes[f"start:{response.status}"] += 1
                    if response.status == 200:
                        started = await response.json()
                        self.session_id, self.token = started["sessionID"], started["token"]
                        return
                    if response.status != 429 and response.status < 500:
                        raise AssertionError(f"start answered {response.status}: {await response.text()}")
                    retry_after = _retry_after(response)
            except (aiohttp.ClientError, TimeoutError) as error:
                self.outcomes[f"start:{type(error).__name__}"] += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} could not start a session before the deadline")
            await asyncio.sleep(self.backoff.delay(attempt, retry_after))
            attempt += 1

    def next_batch(self) -> tuple[int, list[dict[str, Any]]]:
        """Number the next batch and build its events: the marker first, then mutations."""
        seq = self.next_seq
        self.next_seq += 1
        ts = now_ms()
        events = [marker(self.name, seq, ts)]
        if seq == 0:
            events += page_snapshot(ts, f"http://shop.test/{self.name}")
        for _ in range(self.events_per_batch - 1):
            self._index += 1
            events.append(mutation(ts, self._index))
        return seq, events

    def encode(self, seq: int, events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps({"version": 1, "tabId": self.tab_id, "seq": seq, "events": events})
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        if self.gzip_above is not None and len(body) > self.gzip_above:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return body, headers

    async def send(self, seq: int, events: list[dict[str, Any]], *, deadline: float) -> bool:
        """Send one batch until it is answered with a 2xx (True), rejected, or `deadline` passes (False)."""
        body, headers = self.encode(seq, events)
        attempt = 0
        while True:
            retry_after = None
            started = time.perf_counter()
            try:
                async with self.http.post(
                    f"{self.url}/ingest/v1/web/i",
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                ) as response:
                    await response.read()
                    self.outcomes[response.status] += 1
                    if 200 <= response.status < 300:
                        self.latencies.append(time.perf_counter() - started)
                        self.acked.append(seq)
                        self.events_sent += len(events)
                        return True
                    if response.status != 429 and response.status < 500:
                        self.given_up.append(seq)
                        return False
                    retry_after = _retry_after(response)
            except (aiohttp.ClientError, TimeoutError) as error:
                self.outcomes[type(error).__name__] += 1
            if time.monotonic() > deadline:
                self.given_up.append(seq)
                return False
            await asyncio.sleep(self.backoff.delay(attempt, retry_after))
            attempt += 1

    async def run(self, *, until: float, interval: float, give_up_after: float = 30.0) -> None:
        """Send a batch every `interval` seconds until `until` (monotonic), one request at a time.

        The last batch is still retried for up to `give_up_after` seconds after `until`.
        """
        await asyncio.sleep(random.random() * interval)
        while time.monotonic() < until:
            seq, events = self.next_batch()
            sent_at = time.monotonic()
            await self.send(seq, events, deadline=until + give_up_after)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - sent_at)))


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


async def agent_token(http: aiohttp.ClientSession, api_url: str, password: str) -> str:
    async with http.post(f"{api_url}/api/v1/auth/login", json={"username": "admin", "password": password}) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["token"]


async def stored_events(http: aiohttp.ClientSession, api_url: str, token: str, session_id: str) -> list[dict[str, Any]]:
    """Every stored event of a session, in replay order, read page by page from the events API; [] before it exists."""
    events: list[dict[str, Any]] = []
    after = None
    while True:
        params = {"limit": "50000", **({"after": after} if after else {})}
        async with http.get(
            f"{api_url}/api/v1/sessions/{session_id}/events",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            if response.status in (404, 503):
                return []
            assert response.status == 200, await response.text()
            page = await response.json()
        events.extend(page["events"])
        after = page["next"]
        if not after:
            return events


def marker_seqs(events: list[dict[str, Any]], tracker: str) -> list[int]:
    """The batch numbers of `tracker`'s marker events, in the order the store replays them."""
    seqs = []
    for event in events:
        data = event.get("data")
        if event["type"] != 5 or not isinstance(data, dict) or data.get("tag") != "tandem.event":
            continue
        payload = data.get("payload") or {}
        inner = payload.get("payload") or {}
        if payload.get("name") == MARKER_NAME and inner.get("tracker") == tracker:
            seqs.append(inner["seq"])
    return seqs


async def wait_until_stored(
    http: aiohttp.ClientSession, api_url: str, token: str, trackers: list[SyntheticTracker], *, timeout: float
) -> dict[str, list[int]]:
    """Poll the events API until every tracker's acknowledged batches are stored; return the stored numbers.

    Returns whatever is stored when `timeout` passes, for the caller's assertions to report.
    """
    deadline = time.monotonic() + timeout
    stored: dict[str, list[int]] = {}
    while True:
        missing = False
        for tracker in trackers:
            if tracker.name in stored and set(tracker.acked) <= set(stored[tracker.name]):
                continue
            events = await stored_events(http, api_url, token, tracker.session_id)
            stored[tracker.name] = marker_seqs(events, tracker.name)
            missing = missing or not set(tracker.acked) <= set(stored[tracker.name])
        if not missing or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.5)


def assert_exactly_once_in_order(trackers: list[SyntheticTracker], stored: dict[str, list[int]]) -> None:
    """Every batch answered with a 2xx is stored once, and the store replays each tab's batches by number."""
    for tracker in trackers:
        seqs = stored.get(tracker.name, [])
        assert tracker.acked, f"{tracker.name} had no batch acknowledged: {tracker.outcomes}"
        lost = sorted(set(tracker.acked) - set(seqs))
        assert not lost, f"{tracker.name}: batches {lost[:20]} were answered 2xx but are not stored"
        duplicated = sorted(seq for seq, count in Counter(seqs).items() if count > 1)
        assert not duplicated, f"{tracker.name}: batches {duplicated[:20]} are stored more than once"
        assert seqs == sorted(seqs), f"{tracker.name}: the store replays batches out of order: {seqs[:50]}"
