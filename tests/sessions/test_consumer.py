"""The store consumer against a real nats-server and chdb: bulk writes, redelivery, crashes, invalid messages."""

from __future__ import annotations

import asyncio
import contextlib
import time

import orjson
from tandem_protocol import subjects
from tandem_sessions.consumer import BatchConsumer
from tandem_sessions.store import Store, open_store
from tandem_sessions.store.reader import SessionReader
from tandem_sessions.store.writer import Lifecycle, SessionWriter

from tests.sessions import builders as b
from tests.sessions.conftest import make_settings, wait_for


async def count(store, sql: str) -> int:
    return (await store.db.query(sql))[0][0]


async def stored_batches(store) -> int:
    return await count(store, "SELECT count() FROM session_batches FINAL")


async def pending(js, settings) -> tuple[int, int]:
    """Return (messages not yet delivered, messages delivered but not acknowledged)."""
    info = await js.consumer_info(subjects.EVENTS_STREAM, settings.consumer_durable)
    return info.num_pending, info.num_ack_pending


class StallingDatabase:
    """The real ClickHouse, except that an insert into `stall_table` waits forever: a process stopped mid-write."""

    def __init__(self, db, *, stall_table: str) -> None:
        self._db = db
        self._stall_table = stall_table
        self.stalled = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._db, name)

    async def insert(self, table, rows, column_names) -> None:
        if table == self._stall_table:
            self.stalled.set()
            await asyncio.Event().wait()
        await self._db.insert(table, rows, column_names)


@contextlib.asynccontextmanager
async def running(js, writer, settings):
    consumer = BatchConsumer(js=js, writer=writer, settings=settings)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
    finally:
        await consumer.stop()
        await asyncio.wait_for(task, timeout=10)
        await consumer.close()


async def test_consumer_stores_batch_once(nats_client, store, writer, reader, settings):
    js = nats_client.jetstream()
    messages = b.visit("s1", batches=3)
    for message in messages:
        await b.publish(js, message)
    await b.publish(js, messages[1], msg_id=False)  # a second copy on the stream, as after a lost ack

    async with running(js, writer, settings) as consumer:
        await wait_for(lambda: _settled(js, settings), what="every message acknowledged")
    assert consumer.stored_batches == 3
    assert await count(store, "SELECT count() FROM session_batches") == 3
    assert await count(store, "SELECT count() FROM replay_chunks") == 3
    summary = await reader.session("s1")
    assert summary["events"] == sum(len(m["events"]) for m in messages)


async def test_consumer_redelivered_unacked(nats_client, store, writer, reader, settings):
    js = nats_client.jetstream()
    messages = b.visit("s1", batches=2)
    for message in messages:
        await b.publish(js, message)

    # The first consumer writes everything but its acknowledgements are lost.
    consumer = BatchConsumer(js=js, writer=writer, settings=settings)
    await consumer.start()
    fetched = await consumer._subscription.fetch(10, timeout=2)
    for msg in fetched:
        msg.ack = _lost_ack
    await consumer.handle(fetched)
    await consumer.close()
    assert await stored_batches(store) == 2

    # After ack_wait JetStream delivers them again; the second consumer changes nothing.
    async with running(js, writer, settings) as second:
        await wait_for(lambda: _settled(js, settings), what="redelivered messages acknowledged")
    assert second.stored_batches == 0
    assert await count(store, "SELECT count() FROM session_batches") == 2
    assert await count(store, "SELECT count() FROM session_events") == 1
    page = await reader.events_page("demo", "s1", after=None, max_events=1000)
    assert page.event_count == sum(len(m["events"]) for m in messages)


async def test_consumer_killed_mid_batch(nats_client, store, reader, settings):
    js = nats_client.jetstream()
    messages = b.visit("s1", batches=4)
    for message in messages:
        await b.publish(js, message)

    # The writer stops after the chunks and events, before the markers; then the task is cancelled.
    stalling_db = StallingDatabase(store.db, stall_table="session_batches")
    stalling = SessionWriter(store=Store(db=stalling_db, replay=store.replay), lifecycle=_never_ends())
    consumer = BatchConsumer(js=js, writer=stalling, settings=settings)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(stalling_db.stalled.wait(), timeout=10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await consumer.close()
    assert await stored_batches(store) == 0
    assert await count(store, "SELECT count() FROM replay_chunks") == 4

    # A restarted consumer gets the unacknowledged messages again and stores every event once.
    restarted = SessionWriter(store=store, lifecycle=_never_ends())
    async with running(js, restarted, settings):
        await wait_for(lambda: _settled(js, settings), what="messages stored after the restart")
    assert await stored_batches(store) == 4
    page = await reader.events_page("demo", "s1", after=None, max_events=10_000)
    events = orjson.loads(b"[" + b",".join(chunk[1:-1] for chunk in page.events_json) + b"]")
    assert events == [event for message in messages for event in message["events"]]
    assert (await reader.session("s1"))["events"] == len(events)


async def test_consumer_terminates_invalid_message(nats_client, store, writer, reader, settings):
    js = nats_client.jetstream()
    await js.publish(subjects.events("demo", "bad1"), b"{not json")
    wrong_subject = b.batch("s2", 0, [b.meta(b.BASE_MS)])
    await js.publish(subjects.events("demo", "elsewhere"), orjson.dumps(wrong_subject))
    no_events = {**b.batch("bad3", 0, []), "events": [{"type": 99, "timestamp": 1}]}
    await js.publish(subjects.events("demo", "bad3"), orjson.dumps(no_events))
    for message in b.visit("good", batches=2):
        await b.publish(js, message)

    async with running(js, writer, settings) as consumer:
        await wait_for(lambda: _settled(js, settings), what="invalid messages terminated")
    assert consumer.stored_batches == 2
    assert await reader.session("good") is not None
    assert await count(store, "SELECT count() FROM session_batches WHERE session_id != 'good'") == 0


async def test_consumer_marks_idle_session_ended(nats_client, store, reader, settings):
    from tandem_sessions.app import end_sessions_forever

    js = nats_client.jetstream()
    messages = b.visit("s1", start=b.BASE_MS, batches=1)
    # Received 4 s from now by ingest's clock: with a 1 s inactivity timeout, the session
    # is live for 5 s, which leaves a slow machine time to store it first.
    messages[0]["receivedAt"] = int(time.time() * 1000) + 4000
    await b.publish(js, messages[0])
    writer = SessionWriter(store=store, lifecycle=Lifecycle(inactivity_ms=1000, max_duration_ms=10**12))
    ender = asyncio.create_task(end_sessions_forever(writer, 0.2))
    try:
        async with running(js, writer, settings):
            await wait_for(lambda: reader.session("s1"), what="the session's summary")
            assert (await reader.session("s1"))["ended"] is False

            async def ended() -> bool:
                return (await reader.session("s1"))["ended"]

            await wait_for(ended, what="the session marked ended")
    finally:
        ender.cancel()


async def _settled(js, settings) -> bool:
    return await pending(js, settings) == (0, 0)


async def _lost_ack() -> None:
    return None


def _never_ends() -> Lifecycle:
    return Lifecycle(inactivity_ms=10**12, max_duration_ms=10**12)


async def test_consumer_folder_replay_store(nats_client, tmp_path):
    settings = make_settings(tmp_path / "folder-data", replay_store="folder")
    store = await open_store(settings)
    try:
        js = nats_client.jetstream()
        messages = b.visit("s1", batches=3)
        for message in messages:
            await b.publish(js, message)
        async with running(js, SessionWriter(store=store, lifecycle=_never_ends()), settings):
            await wait_for(lambda: _settled(js, settings), what="every message acknowledged")
        assert len(list((tmp_path / "folder-data" / "replay").rglob("*.json.zst"))) == 3
        assert await count(store, "SELECT count() FROM replay_chunks") == 0
        page = await SessionReader(store=store).events_page("demo", "s1", after=None, max_events=100)
        events = orjson.loads(b"[" + b",".join(chunk[1:-1] for chunk in page.events_json) + b"]")
        assert events == [event for message in messages for event in message["events"]]
    finally:
        await store.close()
