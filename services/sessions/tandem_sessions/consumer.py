"""The durable JetStream pull consumer that stores every tracker batch in the session store.

Each fetch of up to `consumer_batch_messages` messages becomes one write: one
insert per table. Messages are acknowledged only after the write. A message that
can never be stored (not a valid EventBatch) is logged, counted and terminated
so that it does not block the rest; a write that fails for a passing reason
(ClickHouse unreachable) is negatively acknowledged and delivered again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson
import structlog
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from tandem_protocol import EventBatch, LiveSession, ProtocolError, decode, subjects

from tandem_sessions.extract import ExtractedBatch, extract
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store.driver import StoreError
from tandem_sessions.store.writer import BatchId, SessionWriter

log = structlog.get_logger(__name__)

MESSAGES = Counter(
    "tandem_sessions_consumer_messages_total",
    "Messages handled by the store consumer, by outcome (stored, duplicate, invalid, retried).",
    ["outcome"],
)
EVENTS_STORED = Counter("tandem_sessions_consumer_events_total", "rrweb events stored.")
WRITE_SECONDS = Histogram(
    "tandem_sessions_consumer_write_duration_seconds",
    "Time to store one fetch of messages, acknowledgements included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FETCH_MESSAGES = Histogram(
    "tandem_sessions_consumer_fetch_messages",
    "Messages per fetch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)

MAX_EVENT_BATCH_SEQ = 2**32 - 1
MAX_DELIVERIES_BEFORE_TERM = 5
FAILURE_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


class InvalidMessage(Exception):
    """A message that can never be stored; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Delivery:
    """A fetched message and the batch it carries."""

    msg: Msg
    batch: ExtractedBatch

    @property
    def id(self) -> BatchId:
        return (self.batch.project_id, self.batch.session_id, self.batch.tab_id, self.batch.seq)


def parse(msg: Msg, *, zstd_level: int) -> ExtractedBatch:
    """Validate a message as an EventBatch on its own session's subject and extract its rows."""
    try:
        document = orjson.loads(msg.data)
    except orjson.JSONDecodeError as error:
        raise InvalidMessage(f"not JSON: {error}") from None
    try:
        batch = EventBatch.model_validate(document)
    except ValidationError as error:
        raise InvalidMessage(f"not a valid EventBatch: {error.errors(include_url=False)[:3]}") from None
    try:
        expected = subjects.events(batch.project_id, batch.session_id)
        subjects.token(batch.tab_id, what="tab id")
    except ProtocolError as error:
        raise InvalidMessage(error.message) from None
    if msg.subject != expected:
        raise InvalidMessage(f"published on {msg.subject!r} but names the session of {expected!r}")
    if batch.seq > MAX_EVENT_BATCH_SEQ:
        raise InvalidMessage(f"seq {batch.seq} is over {MAX_EVENT_BATCH_SEQ}")
    return extract(document, zstd_level=zstd_level)


def message_ids(msg: Msg) -> dict[str, object]:
    """The ids of a message for a log line: subject, Nats-Msg-Id, stream sequence and delivery count."""
    ids: dict[str, object] = {"subject": msg.subject, "msg_id": (msg.headers or {}).get("Nats-Msg-Id", "")}
    with contextlib.suppress(Exception):
        ids["stream_seq"] = msg.metadata.sequence.stream
        ids["deliveries"] = msg.metadata.num_delivered
    return ids


class BatchConsumer:
    """Fetches from the durable consumer and writes each fetch in bulk, until `stop` or cancellation."""

    def __init__(self, *, js: JetStreamContext, writer: SessionWriter, settings: SessionsSettings) -> None:
        self._js = js
        self._writer = writer
        self._settings = settings
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()
        self.stored_batches = 0

    async def start(self) -> None:
        """Create or update the durable consumer and bind to it."""
        settings = self._settings
        config = ConsumerConfig(
            durable_name=settings.consumer_durable,
            filter_subject=subjects.events_all(),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.consumer_ack_wait_seconds,
            max_ack_pending=max(1000, settings.consumer_batch_messages * 4),
        )
        await self._js.add_consumer(subjects.EVENTS_STREAM, config)
        self._subscription = await self._js.pull_subscribe_bind(
            durable=settings.consumer_durable, stream=subjects.EVENTS_STREAM
        )
        log.info("consumer.started", durable=settings.consumer_durable, batch_messages=settings.consumer_batch_messages)

    async def run(self) -> None:
        """Fetch and store until `stop` is called; a cancelled run leaves its messages unacknowledged."""
        if self._subscription is None:
            await self.start()
        failures = 0
        while not self._stopping.is_set():
            messages = await self._fetch()
            if not messages:
                continue
            try:
                await self.handle(messages)
                failures = 0
            except StoreError as error:
                delay = FAILURE_BACKOFF_SECONDS[min(failures, len(FAILURE_BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning("consumer.write_failed", error=error.message, code=error.code, messages=len(messages))
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Finish the fetch in hand, then unsubscribe, so that `nc.drain()` does not wait on a pending fetch."""
        self._stopping.set()

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        log.info("consumer.stopped", stored_batches=self.stored_batches)

    async def _fetch(self) -> list[Msg]:
        assert self._subscription is not None
        try:
            messages = await self._subscription.fetch(
                self._settings.consumer_batch_messages, timeout=self._settings.consumer_fetch_timeout_seconds
            )
        except (NatsTimeoutError, asyncio.TimeoutError):
            return []
        FETCH_MESSAGES.observe(len(messages))
        return messages

    async def handle(self, messages: list[Msg]) -> None:
        """Store one fetch: parse, skip batches stored before, write the rest in bulk, summarise, acknowledge."""
        started = time.perf_counter()
        deliveries = []
        for msg in messages:
            try:
                deliveries.append(Delivery(msg=msg, batch=parse(msg, zstd_level=self._settings.replay_zstd_level)))
            except InvalidMessage as error:
                MESSAGES.labels("invalid").inc()
                log.warning("consumer.message_invalid", reason=error.reason, **message_ids(msg))
                await msg.term()
        if not deliveries:
            return

        try:
            await self._store(deliveries)
        except StoreError as error:
            if error.retryable:
                await self._give_back(deliveries)
                raise
            # Find the messages the store rejects by writing them one by one.
            log.warning("consumer.bulk_write_rejected", error=error.message, code=error.code, messages=len(deliveries))
            await self._store_one_by_one(deliveries)
        WRITE_SECONDS.observe(time.perf_counter() - started)

    async def _store(self, deliveries: list[Delivery]) -> None:
        unique: dict[BatchId, Delivery] = {}
        for delivery in deliveries:
            unique.setdefault(delivery.id, delivery)
        already = await self._writer.stored(list(unique))
        fresh = [delivery.batch for batch_id, delivery in unique.items() if batch_id not in already]
        await self._writer.write(fresh)
        await self._writer.summarize({(d.batch.project_id, d.batch.session_id) for d in deliveries})
        for delivery in deliveries:
            await delivery.msg.ack()
        duplicates = len(deliveries) - len(fresh)
        MESSAGES.labels("stored").inc(len(fresh))
        MESSAGES.labels("duplicate").inc(duplicates)
        EVENTS_STORED.inc(sum(batch.event_count for batch in fresh))
        self.stored_batches += len(fresh)
        if duplicates:
            log.info("consumer.duplicates_skipped", count=duplicates)

    async def _store_one_by_one(self, deliveries: list[Delivery]) -> None:
        """Write each delivery alone; terminate those the store rejects, unless the store rejects every one.

        When every message fails, the fault is more likely the store's (a dropped table, a
        schema from another version) than the messages', so they are delivered again
        until a message has been tried MAX_DELIVERIES_BEFORE_TERM times.
        """
        rejected: list[tuple[Delivery, StoreError]] = []
        for delivery in deliveries:
            try:
                await self._store([delivery])
            except StoreError as error:
                if error.retryable:
                    await self._give_back([delivery])
                else:
                    rejected.append((delivery, error))
        everything_failed = len(rejected) == len(deliveries)
        for delivery, error in rejected:
            if everything_failed and delivery_count(delivery.msg) < MAX_DELIVERIES_BEFORE_TERM:
                await self._give_back([delivery])
                continue
            MESSAGES.labels("invalid").inc()
            log.error("consumer.message_rejected", error=error.message, code=error.code, **message_ids(delivery.msg))
            await delivery.msg.term()
        if everything_failed:
            raise rejected[0][1]

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        """Ask JetStream to deliver the messages again after the retry delay."""
        MESSAGES.labels("retried").inc(len(deliveries))
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.msg.nak(delay=self._settings.consumer_retry_delay_seconds)


def delivery_count(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered
    except Exception:  # nats-py raises NotJSMessageError for a message that JetStream did not deliver
        return 1


async def live_session_lookup(js: JetStreamContext, project_id: str, session_id: str) -> LiveSession | None:
    """Read a session's entry in ingest's live-session bucket (what it recorded at start), or None."""
    kv = await js.key_value(subjects.LIVE_BUCKET)
    try:
        entry = await kv.get(subjects.live_key(project_id, session_id))
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    try:
        return decode(LiveSession, entry.value)
    except ProtocolError as error:
        log.warning("consumer.live_entry_invalid", project_id=project_id, session_id=session_id, error=error.message)
        return None
