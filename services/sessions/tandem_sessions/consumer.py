"""The durable JetStream pull consumer that stores every tracker batch in the session store.

Each fetch of up to `consumer_batch_messages` messages becomes one write: one
insert per table. Messages are acknowledged only after the write. A message that
can never be stored (not a valid EventBatch) is logged, counted, copied to the
dead-letter stream with the reason, and terminated, so that it does not block the
rest; a write that fails for a passing reason (ClickHouse unreachable) is
negatively acknowledged and delivered again later. A message the store rejects
is dead-lettered only after it failed MAX_STRIKES times right after, or in the
same pass as, successful writes, so that a store that is down (every write fails) never loses a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import orjson
import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from tandem_protocol import EventBatch, LiveSession, ProtocolError, decode, subjects
from tandem_runtime.bus import publish_dead_letter

from tandem_sessions.clicks import ClickLabels
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
PENDING_MESSAGES = Gauge(
    "tandem_sessions_consumer_pending_messages",
    "Messages on the events stream that the store consumer has not fetched yet, as of its last fetch.",
)

DEAD_LETTERS = Counter(
    "tandem_sessions_consumer_dead_letters_total",
    "Messages moved to the dead-letter stream, by reason (invalid: not a batch; rejected: the store refuses it).",
    ["reason"],
)

MAX_EVENT_BATCH_SEQ = 2**32 - 1
MAX_STRIKES = 3
"""Failed writes of one message, each right after a successful write, before it goes to the dead letters."""
MAX_TRACKED_STRIKES = 10_000
FAILURE_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)


class InvalidMessage(Exception):
    """A message that can never be stored, and the `reason`."""

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


def parse(msg: Msg, *, clicks: ClickLabels | None = None) -> ExtractedBatch:
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
    return extract(document, clicks=clicks)


def message_ids(msg: Msg) -> dict[str, object]:
    """Return the ids of a message for a log line: subject, Nats-Msg-Id, stream sequence and delivery count."""
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
        self._fetching: asyncio.Task | None = None
        self._clicks = ClickLabels()
        self.stored_batches = 0
        # Whether the latest write of one message (or of a whole fetch) succeeded, and the strikes of
        # messages the store rejected while it worked.
        self._store_working = True
        self._strikes: dict[BatchId, int] = {}

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
            messages: list[Msg] = []
            try:
                messages = await self._fetch()
                if not messages:
                    continue
                await self.handle(messages)
                failures = 0
            except StoreError as error:
                delay = FAILURE_BACKOFF_SECONDS[min(failures, len(FAILURE_BACKOFF_SECONDS) - 1)]
                failures += 1
                log.warning("consumer.write_failed", error=error.message, code=error.code, messages=len(messages))
                await asyncio.sleep(delay)
            except Exception:
                # A NATS error (a fetch or an acknowledgement while reconnecting) must not end the consumer;
                # the messages not acknowledged come back after ack_wait.
                delay = FAILURE_BACKOFF_SECONDS[min(failures, len(FAILURE_BACKOFF_SECONDS) - 1)]
                failures += 1
                log.exception("consumer.iteration_failed", messages=len(messages), retry_seconds=delay)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Make `run` return: at once when it waits for messages, else after the write in hand.

        Messages that arrive for a cancelled fetch stay unacknowledged and come back after ack_wait.
        """
        self._stopping.set()
        if self._fetching is not None:
            self._fetching.cancel()

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        log.info("consumer.stopped", stored_batches=self.stored_batches)

    async def _fetch(self) -> list[Msg]:
        assert self._subscription is not None
        self._fetching = asyncio.ensure_future(
            self._subscription.fetch(
                self._settings.consumer_batch_messages, timeout=self._settings.consumer_fetch_timeout_seconds
            )
        )
        try:
            messages = await self._fetching
        except (TimeoutError, NatsTimeoutError):
            PENDING_MESSAGES.set(0)
            return []
        except asyncio.CancelledError:
            if self._stopping.is_set() and not _current_task_cancelling():
                return []
            raise
        finally:
            self._fetching = None
        FETCH_MESSAGES.observe(len(messages))
        with contextlib.suppress(Exception):  # a message without JetStream metadata leaves the gauge as it was
            PENDING_MESSAGES.set(messages[-1].metadata.num_pending)
        return messages

    async def handle(self, messages: list[Msg]) -> None:
        """Store one fetch: parse, skip batches stored before, write the rest in bulk, summarise, acknowledge."""
        started = time.perf_counter()
        deliveries = []
        for msg in messages:
            try:
                deliveries.append(Delivery(msg=msg, batch=parse(msg, clicks=self._clicks)))
            except InvalidMessage as error:
                MESSAGES.labels("invalid").inc()
                log.warning("consumer.message_invalid", reason=error.reason, **message_ids(msg))
                await self._dead_letter(msg, error.reason, "invalid")
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
        try:
            already = await self._writer.stored(list(unique))
            fresh = [delivery.batch for batch_id, delivery in unique.items() if batch_id not in already]
            await self._writer.write(fresh)
            await self._writer.summarize({(d.batch.project_id, d.batch.session_id) for d in deliveries})
        except StoreError:
            # A failed bulk write proves nothing about the store: one bad message fails it too.
            # Only `_store_one_by_one` updates `_store_working`, so a message fetched alone is counted once.
            raise
        self._store_working = True
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
        """Write each delivery alone; dead-letter those the store keeps rejecting while it accepts others.

        A failed write counts against its message (a strike) only when the write before it,
        or another write in the same pass, succeeded: while every write fails, the fault is
        the store's (a full or read-only disk, a dropped table, a schema from another version), so the messages are
        delivered again, however long that lasts. A message goes to the dead letters
        after MAX_STRIKES strikes.
        """
        rejected: list[tuple[Delivery, StoreError]] = []
        struck: set[BatchId] = set()
        accepted_any = False
        for delivery in deliveries:
            store_was_working = self._store_working
            try:
                await self._store([delivery])
                self._strikes.pop(delivery.id, None)
                accepted_any = True
            except StoreError as error:
                if error.retryable:
                    await self._give_back([delivery])
                    continue
                self._store_working = False
                rejected.append((delivery, error))
                if store_was_working:
                    self._strike(delivery.id)
                    struck.add(delivery.id)
        if accepted_any:
            # The store accepted another write in this pass, so the failed messages are at fault.
            for delivery, _ in rejected:
                if delivery.id not in struck:
                    self._strike(delivery.id)
        everything_failed = len(rejected) == len(deliveries)
        for delivery, error in rejected:
            if self._strikes.get(delivery.id, 0) < MAX_STRIKES:
                await self._give_back([delivery])
                continue
            MESSAGES.labels("invalid").inc()
            log.error("consumer.message_rejected", error=error.message, code=error.code, **message_ids(delivery.msg))
            if await self._dead_letter(delivery.msg, f"the store rejects it: {error.message}", "rejected"):
                self._strikes.pop(delivery.id, None)
        if everything_failed:
            raise rejected[0][1]

    def _strike(self, batch_id: BatchId) -> None:
        """Count a failed write of a message that came right after a successful write."""
        if len(self._strikes) >= MAX_TRACKED_STRIKES and batch_id not in self._strikes:
            self._strikes.clear()
        self._strikes[batch_id] = self._strikes.get(batch_id, 0) + 1

    async def _dead_letter(self, msg: Msg, reason: str, kind: str) -> bool:
        """Copy `msg` to the dead-letter stream and terminate it; if the copy fails, deliver it again later."""
        try:
            await publish_dead_letter(self._js, consumer=self._settings.consumer_durable, msg=msg, reason=reason)
        except Exception as error:  # nats-py raises several unrelated types for a publish that fails
            log.warning("consumer.dead_letter_failed", error=repr(error), **message_ids(msg))
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._settings.consumer_retry_delay_seconds)
            return False
        DEAD_LETTERS.labels(kind).inc()
        log.error("consumer.dead_lettered", reason=reason, kind=kind, **message_ids(msg))
        await msg.term()
        return True

    async def _give_back(self, deliveries: list[Delivery]) -> None:
        """Ask JetStream to deliver the messages again after the retry delay."""
        MESSAGES.labels("retried").inc(len(deliveries))
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.msg.nak(delay=self._settings.consumer_retry_delay_seconds)


def _current_task_cancelling() -> bool:
    """Tell whether the running task itself was cancelled, rather than only the fetch it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def delivery_count(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered
    except Exception:  # nats-py raises NotJSMessageError for a message that JetStream did not deliver
        return 1


async def live_session_lookup(js: JetStreamContext, project_id: str, session_id: str) -> LiveSession | None:
    """Read a session's entry in ingest's live-session bucket (what it recorded at start), or None.

    A failed read raises a retryable StoreError, so that the fetch is delivered again
    rather than stored without the session's browser and user.
    """
    try:
        kv = await js.key_value(subjects.LIVE_BUCKET)
        entry = await kv.get(subjects.live_key(project_id, session_id))
    except KeyNotFoundError:
        return None
    except (TimeoutError, NatsError) as error:
        raise StoreError(f"Reading the live-session entry of {session_id} failed: {error!r}", retryable=True) from None
    if not entry.value:
        return None
    try:
        return decode(LiveSession, entry.value)
    except ProtocolError as error:
        log.warning("consumer.live_entry_invalid", project_id=project_id, session_id=session_id, error=error.message)
        return None
