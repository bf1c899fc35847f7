"""Ingest and consumer guarantees against the all-in-one server: compression, duplicates, order, dead letters.

Every test counts through the events API that each batch answered with a 2xx is
stored exactly once, in batch-number order.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import random
from pathlib import Path

import aiohttp
import orjson
from nats.errors import TimeoutError as NatsTimeoutError
from tandem_ingest.settings import IngestSettings
from tandem_protocol import EventBatch, encode, subjects
from tandem_runtime.bus import DEAD_LETTER_REASON_HEADER
from tandem_sessions.consumer import BatchConsumer
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store import StoreError, open_store
from tandem_sessions.store.writer import Lifecycle, SessionWriter

from tests.conftest import start_tandem
from tests.delivery.trackers import (
    SyntheticTracker,
    assert_exactly_once_in_order,
    marker_seqs,
    now_ms,
    stored_events,
    wait_until_stored,
)

STORE_WAIT_SECONDS = 30.0


async def started_tracker(http: aiohttp.ClientSession, url: str, name: str = "tab0", **options) -> SyntheticTracker:
    tracker = SyntheticTracker(http=http, url=url, name=name, **options)
    await tracker.start(deadline=asyncio.get_running_loop().time() + 10)
    return tracker


async def post_batch(tracker: SyntheticTracker, body: bytes, headers: dict[str, str] | None = None):
    """One attempt, no retry: return the status, the headers and the JSON body of the answer."""
    sent = {"Authorization": f"Bearer {tracker.token}", "Content-Type": "application/json", **(headers or {})}
    async with tracker.http.post(f"{tracker.url}/ingest/v1/web/i", data=body, headers=sent) as response:
        return response.status, response.headers, await response.json()


async def stored_seqs(tandem, http: aiohttp.ClientSession, tracker: SyntheticTracker) -> list[int]:
    token = await tandem.agent_token(http)
    stored = await wait_until_stored(http, tandem.url, token, [tracker], timeout=STORE_WAIT_SECONDS)
    assert_exactly_once_in_order([tracker], stored)
    return stored[tracker.name]


async def test_ingest_gzip_body(tandem, http):
    tracker = await started_tracker(http, tandem.url, gzip_above=0, events_per_batch=40)
    seq, events = tracker.next_batch()
    body, headers = tracker.encode(seq, events)
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body)  # really compressed

    status, _, answer = await post_batch(tracker, body, headers)
    assert (status, answer["seq"]) == (200, 0)
    tracker.acked.append(seq)
    assert await stored_seqs(tandem, http, tracker) == [0]
    token = await tandem.agent_token(http)
    assert await stored_events(http, tandem.url, token, tracker.session_id) == events


async def test_ingest_gzip_limit(tandem, http):
    """The body limit applies to the decompressed body: a small gzip body that expands past it is refused."""
    limit = IngestSettings().max_body_bytes
    tracker = await started_tracker(http, tandem.url)
    padding = {"type": 5, "timestamp": now_ms(), "data": {"tag": "tandem.event", "payload": {"pad": " " * limit}}}
    expanded = orjson.dumps({"version": 1, "tabId": tracker.tab_id, "seq": 0, "events": [padding]})
    compressed = gzip.compress(expanded)
    assert len(compressed) < limit // 100 < limit < len(expanded)
    js = tandem.nc.jetstream()
    before = (await js.stream_info(subjects.EVENTS_STREAM)).state.messages

    status, _, answer = await post_batch(tracker, compressed, {"Content-Encoding": "gzip"})
    assert status == 413
    assert answer["error"]["code"] == "body_too_large"
    assert answer["error"]["details"]["maxBytes"] == limit
    assert (await js.stream_info(subjects.EVENTS_STREAM)).state.messages == before

    # The same body uncompressed is refused the same way.
    status, _, answer = await post_batch(tracker, expanded)
    assert (status, answer["error"]["code"]) == (413, "body_too_large")


async def test_ingest_duplicates_reordered(tandem, http):
    tracker = await started_tracker(http, tandem.url)
    batches = [tracker.next_batch() for _ in range(20)]
    requests = [tracker.encode(seq, events) for seq, events in batches for _ in range(2)]
    random.Random(8).shuffle(requests)

    answers = await asyncio.gather(*(post_batch(tracker, body, headers) for body, headers in requests))
    assert [status for status, _, _ in answers] == [200] * len(requests)
    tracker.acked.extend(answer["seq"] for _, _, answer in answers)
    assert await stored_seqs(tandem, http, tracker) == list(range(20))


async def test_ingest_late_duplicate(tandem, http):
    """A batch published again after JetStream's duplicate window is still stored once: the consumer checks too."""
    tracker = await started_tracker(http, tandem.url)
    for _ in range(3):
        seq, events = tracker.next_batch()
        assert await tracker.send(seq, events, deadline=asyncio.get_running_loop().time() + 10)
    token = await tandem.agent_token(http)
    await wait_until_stored(http, tandem.url, token, [tracker], timeout=STORE_WAIT_SECONDS)

    # What ingest publishes for batch 1, under a message id JetStream has not seen (its window has passed).
    events = await stored_events(http, tandem.url, token, tracker.session_id)
    batch_1 = [event for event in events if marker_seqs([event], tracker.name) == [1]]
    late = EventBatch(
        project_id="demo",
        session_id=tracker.session_id,
        tab_id=tracker.tab_id,
        seq=1,
        received_at=now_ms(),
        events=batch_1,
    )
    ack = await tandem.nc.jetstream().publish(
        subjects.events("demo", tracker.session_id), encode(late), headers={"Nats-Msg-Id": "after-the-window"}
    )
    assert not ack.duplicate
    seq, events = tracker.next_batch()
    assert await tracker.send(seq, events, deadline=asyncio.get_running_loop().time() + 10)

    assert await stored_seqs(tandem, http, tracker) == [0, 1, 2, 3]


async def test_ingest_rejects_unstorable(tandem, http):
    """Batches the store could never keep get a 4xx, never a 2xx."""
    tracker = await started_tracker(http, tandem.url)
    seq, events = tracker.next_batch()
    too_far = orjson.dumps({"version": 1, "tabId": tracker.tab_id, "seq": 2**32, "events": events})
    status, _, answer = await post_batch(tracker, too_far)
    assert (status, answer["error"]["code"]) == (400, "invalid_seq")

    future = [{**events[0], "timestamp": 10**15}]
    status, _, answer = await post_batch(
        tracker, orjson.dumps({"version": 1, "tabId": tracker.tab_id, "seq": 0, "events": future})
    )
    assert status == 400


async def test_ingest_bus_down(nats_server, http, tmp_path: Path):
    """With nats-server stopped, ingest answers 503 with Retry-After at once; the retried batch is stored once."""
    (tmp_path / "data").mkdir()
    runner, tandem = await start_tandem(tmp_path / "data", nats_url=nats_server.url)
    try:
        tracker = await started_tracker(http, tandem.url)
        seq, events = tracker.next_batch()
        body, headers = tracker.encode(seq, events)
        nats_server.stop(kill=True)
        await asyncio.sleep(0.2)

        status, response_headers, answer = await post_batch(tracker, body, headers)
        assert (status, answer["error"]["code"]) == (503, "bus_unavailable")
        assert response_headers["Retry-After"] == "2"
        start = {"version": 1, "projectKey": "demo-key", "tabId": "tab1", "timestamp": now_ms()}
        async with http.post(f"{tandem.url}/ingest/v1/web/start", json=start) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "2"

        await nats_server.start()
        assert await tracker.send(seq, events, deadline=asyncio.get_running_loop().time() + 20)
        assert await stored_seqs(tandem, http, tracker) == [0]
    finally:
        await runner.cleanup()


async def metric(http: aiohttp.ClientSession, url: str, line_start: str) -> float:
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))


async def test_consumer_dead_letters(tandem, http):
    """Messages that can never be stored go to the dead-letter stream with the reason, and the rest is stored."""
    js = tandem.nc.jetstream()
    counter = 'tandem_sessions_consumer_dead_letters_total{reason="invalid"}'
    before = await metric(http, tandem.url, counter)
    await js.publish(subjects.events("demo", "broken1"), b"{not json", headers={"Nats-Msg-Id": "broken-1"})
    elsewhere = {
        "version": 1,
        "projectId": "demo",
        "sessionId": "other",
        "tabId": "t",
        "seq": 0,
        "receivedAt": 1,
        "events": [],
    }
    await js.publish(subjects.events("demo", "broken2"), orjson.dumps(elsewhere))

    tracker = await started_tracker(http, tandem.url)
    for _ in range(3):
        seq, events = tracker.next_batch()
        assert await tracker.send(seq, events, deadline=asyncio.get_running_loop().time() + 10)
    assert await stored_seqs(tandem, http, tracker) == [0, 1, 2]

    subscription = await js.pull_subscribe(
        subjects.dead_letters_all(), durable="delivery-test", stream=subjects.DEAD_LETTERS_STREAM
    )
    letters = await subscription.fetch(2, timeout=5)
    await subscription.unsubscribe()
    by_subject = {letter.headers["Tandem-Original-Subject"]: letter for letter in letters}
    assert set(by_subject) == {subjects.events("demo", "broken1"), subjects.events("demo", "broken2")}
    broken = by_subject[subjects.events("demo", "broken1")]
    assert broken.data == b"{not json"
    assert broken.subject == subjects.dead_letter("tandem-sessions-store")
    assert broken.headers[DEAD_LETTER_REASON_HEADER].startswith("not JSON")
    assert broken.headers["Tandem-Original-Msg-Id"] == "broken-1"
    assert "names the session of" in by_subject[subjects.events("demo", "broken2")].headers[DEAD_LETTER_REASON_HEADER]
    assert await metric(http, tandem.url, counter) == before + 2


class RefusingDatabase:
    """The real chdb store, except that it refuses any insert with a row of session `refused`.

    A stand-in: no valid batch makes ClickHouse itself refuse one insert and accept the next.
    """

    def __init__(self, db) -> None:
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    async def insert(self, table, rows, column_names) -> None:
        if any("refused" in row for row in rows):
            raise StoreError("Code: 53. Type mismatch in the refused row.", code=53)
        await self._db.insert(table, rows, column_names)


DEAD_LETTER_WAIT_SECONDS = 90.0
"""Bound of the wait for the refused batch's dead letter; a loaded machine needs far longer than an idle one."""


async def refusing_consumer(nats_client, tmp_path: Path, **settings) -> tuple:
    """Start a consumer on the real chdb store wrapped in RefusingDatabase; return the store, writer and consumer."""
    sessions_settings = SessionsSettings(
        data_dir=tmp_path / "data", consumer_retry_delay_seconds=0.2, store_threads=2, **settings
    )
    store = await open_store(sessions_settings)
    store.db = RefusingDatabase(store.db)
    writer = SessionWriter(store=store, lifecycle=Lifecycle(inactivity_ms=10**12, max_duration_ms=10**12))
    consumer = BatchConsumer(js=nats_client.jetstream(), writer=writer, settings=sessions_settings)
    await consumer.start()
    return store, writer, consumer


async def publish_empty_batch(js, session_id: str, seq: int) -> None:
    batch = EventBatch(project_id="demo", session_id=session_id, tab_id="t", seq=seq, received_at=now_ms(), events=[])
    await js.publish(subjects.events("demo", session_id), encode(batch))


async def test_consumer_rejected_message(nats_client, tmp_path: Path):
    """A batch the store refuses while it stores others goes to the dead letters, and never stops the rest."""
    store, writer, consumer = await refusing_consumer(
        nats_client, tmp_path, consumer_fetch_timeout_seconds=0.2, consumer_ack_wait_seconds=2.0
    )
    task = asyncio.create_task(consumer.run())
    js = nats_client.jetstream()

    subscription = await js.pull_subscribe(
        subjects.dead_letters_all(), durable="rejected-test", stream=subjects.DEAD_LETTERS_STREAM
    )
    try:
        await publish_empty_batch(js, "refused", 0)
        letters = []
        seq = -1
        give_up_at = asyncio.get_running_loop().time() + DEAD_LETTER_WAIT_SECONDS
        # Other batches keep coming, and are stored, while the refused one is retried.
        while not letters and asyncio.get_running_loop().time() < give_up_at:
            seq += 1
            await publish_empty_batch(js, "good", seq)
            with contextlib.suppress(NatsTimeoutError):
                letters = await subscription.fetch(1, timeout=0.1)
        assert letters, "the refused batch never reached the dead letters"
        assert letters[0].headers["Tandem-Original-Subject"] == subjects.events("demo", "refused")
        assert letters[0].headers[DEAD_LETTER_REASON_HEADER].startswith("the store rejects it: Code: 53.")
        good = [("demo", "good", "t", number) for number in range(seq + 1)]
        deadline = asyncio.get_running_loop().time() + STORE_WAIT_SECONDS
        while len(await writer.stored(good)) < len(good) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        assert await writer.stored(good) == set(good)
        assert not await writer.stored([("demo", "refused", "t", 0)])
    finally:
        await subscription.unsubscribe()
        await consumer.stop()
        await asyncio.wait_for(task, timeout=10)
        await consumer.close()
        await store.close()


async def test_rejected_batch_fetched_alone(nats_client, tmp_path: Path):
    """A rejected batch that comes alone in every other fetch still reaches the dead letters.

    In this order (alone, then first of several, in turn) each failure can look like a store
    fault. The test drives the fetches by hand so that the order is the same on every run.
    """
    store, writer, consumer = await refusing_consumer(
        nats_client, tmp_path, consumer_fetch_timeout_seconds=0.5, consumer_ack_wait_seconds=30.0
    )
    js = nats_client.jetstream()

    async def handle_one_fetch(expected: int) -> list[str]:
        """Fetch until one fetch returns `expected` messages, handle them, and return their subjects."""
        for _ in range(20):
            await asyncio.sleep(0.3)  # Longer than the retry delay, so the rejected batch is delivered again.
            messages = await consumer._fetch()
            if len(messages) == expected:
                break
            for msg in messages:
                await msg.nak()
        else:
            raise AssertionError(f"timed out waiting for a fetch of {expected} messages")
        with contextlib.suppress(StoreError):
            await consumer.handle(messages)
        return [msg.subject for msg in messages]

    subscription = await js.pull_subscribe(
        subjects.dead_letters_all(), durable="rejected-alone-test", stream=subjects.DEAD_LETTERS_STREAM
    )
    try:
        rejected = subjects.events("demo", "refused")
        await publish_empty_batch(js, "refused", 0)
        letters = []
        for round_number in range(8):
            if round_number % 2 == 0:
                assert await handle_one_fetch(1) == [rejected]
            else:
                await publish_empty_batch(js, "good", round_number)
                assert (await handle_one_fetch(2))[0] == rejected
            with contextlib.suppress(NatsTimeoutError):
                letters = await subscription.fetch(1, timeout=0.2)
            if letters:
                break
        assert letters, "the refused batch never reached the dead letters"
        assert letters[0].headers["Tandem-Original-Subject"] == subjects.events("demo", "refused")
        good = [("demo", "good", "t", number) for number in range(1, round_number + 1, 2)]
        assert await writer.stored(good) == set(good)
    finally:
        await subscription.unsubscribe()
        await consumer.close()
        await store.close()
