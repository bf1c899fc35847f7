"""Recorded-session store: replay bytes and load times, consumer insert rate, search latency at scale.

    .venv/bin/python -m bench.sessions_store [--sessions 1000000] [--rows-per-session 50] [--part all]

Parts, each on a fresh chdb store in a temporary folder:

replay   Four 60-minute sessions from bench/sessions_data.py written through the store's writer, 256
         batches per write, in arrival order. Bytes per session-minute of the ClickHouse replay table
         (ZSTD(3) column codec) and of the folder store (zstd-3 per file), against the raw rrweb JSON;
         time to the first page of events (2,000) and to the whole 60-minute replay, for both stores.
insert   Sessions published on a real nats-server, stored by the real consumer. Events per second
         with 256 messages per fetch and insert, against a baseline of 1 message per fetch.
search   `--sessions` summary rows and `--rows-per-session` searchable event rows per session,
         generated in SQL; p50 and p95 of the search API's queries (compile + ClickHouse).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

try:  # Python 3.14 ships zstd; older versions use the backport with the same API.
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd
from tandem_protocol import subjects
from tandem_runtime import bus
from tandem_runtime.embedded import EmbeddedNats, free_port
from tandem_runtime.logs import configure_logging
from tandem_sessions.consumer import BatchConsumer
from tandem_sessions.extract import extract
from tandem_sessions.search.query import parse
from tandem_sessions.search.sql import compile_query
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store import Store, open_store
from tandem_sessions.store.reader import SessionReader
from tandem_sessions.store.writer import Lifecycle, SessionWriter

from bench.common import REPOSITORY, machine
from bench.sessions_data import session_batches

START_MS = 1_764_876_000_000
NEVER_ENDS = Lifecycle(inactivity_ms=10**13, max_duration_ms=10**13)
FIRST_PAGE_EVENTS = 2000


def settings_for(folder: Path, **overrides) -> SessionsSettings:
    return SessionsSettings(data_dir=folder, store_threads=2, **overrides)


def batch_message(session_id: str, seq: int, events: list[dict], project_id: str = "bench") -> dict:
    return {
        "version": 1, "projectId": project_id, "sessionId": session_id, "tabId": "tab-1", "seq": seq,
        "receivedAt": events[-1]["timestamp"] + 80, "events": events,
    }  # fmt: skip


def arrival_order(sessions: dict[str, list[list[dict]]]) -> list[dict]:
    """Return every batch of every session as a message, in the order the tracker would send them."""
    messages = [
        batch_message(sid, seq, events) for sid, batches in sessions.items() for seq, events in enumerate(batches)
    ]
    messages.sort(key=lambda message: message["receivedAt"])
    return messages


async def timed(call: Callable[[], Awaitable[object]], repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


def ms(samples: list[float], quantile: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] * 1000, 1)


def folder_bytes(root: Path) -> tuple[int, int]:
    """Return (bytes of the files, bytes of the disk blocks they take)."""
    files = [path for path in root.rglob("*") if path.is_file()]
    return sum(p.stat().st_size for p in files), sum(p.stat().st_blocks * 512 for p in files)


async def table_bytes(store: Store, table: str) -> int:
    rows = await store.db.query(
        "SELECT sum(bytes_on_disk) FROM system.parts"
        " WHERE active AND database = currentDatabase() AND table = {t:String}",
        {"t": table},
    )
    return int(rows[0][0] or 0)


# Replay ---------------------------------------------------------------------------------------


async def write_sessions(store: Store, messages: list[dict], per_write: int = 256) -> float:
    writer = SessionWriter(store=store, lifecycle=NEVER_ENDS)
    started = time.perf_counter()
    for start in range(0, len(messages), per_write):
        window = messages[start : start + per_write]
        await writer.write([extract(message) for message in window])
        await writer.summarize({(m["projectId"], m["sessionId"]) for m in window})
    return time.perf_counter() - started


def compression_shapes(sessions: dict[str, list[list[dict]]]) -> dict:
    """Ratios to the raw JSON of other ways to compress the same chunks: per chunk, per minute, per session."""
    raw = per_chunk_gzip = per_minute = whole = 0
    for batches in sessions.values():
        chunks = [orjson.dumps(events) for events in batches]
        raw += sum(len(chunk) for chunk in chunks)
        per_chunk_gzip += sum(len(gzip.compress(chunk, 6)) for chunk in chunks)
        minutes: dict[int, list[dict]] = {}
        for events in batches:
            minutes.setdefault(events[0]["timestamp"] // 60_000, []).extend(events)
        per_minute += sum(len(zstd.compress(orjson.dumps(events), level=3)) for events in minutes.values())
        whole += len(zstd.compress(orjson.dumps([e for events in batches for e in events]), level=3))
    return {
        "gzip6_per_chunk": round(raw / per_chunk_gzip, 1),
        "zstd3_per_minute": round(raw / per_minute, 1),
        "zstd3_per_session": round(raw / whole, 1),
    }


async def replay_part(folder: Path, minutes: int, session_count: int) -> dict:
    sessions = {f"replay-{n}": session_batches(n, minutes, START_MS) for n in range(session_count)}
    messages = arrival_order(sessions)
    raw_bytes = sum(len(orjson.dumps(m["events"])) for m in messages)
    event_count = sum(len(m["events"]) for m in messages)
    session_minutes = minutes * session_count
    results: dict = {
        "sessions": session_count, "minutes": minutes, "batches": len(messages), "events": event_count,
        "raw_bytes_per_session_minute": round(raw_bytes / session_minutes),
        "median_batch_bytes": round(statistics.median(len(orjson.dumps(m["events"])) for m in messages)),
        "compression_ratios": compression_shapes(sessions),
    }  # fmt: skip
    for kind in ("clickhouse", "folder"):
        root = folder / kind
        store = await open_store(settings_for(root, replay_store=kind))
        try:
            seconds = await write_sessions(store, messages)
            for table in ("replay_chunks", "session_batches", "session_events", "sessions"):
                await store.db.command(f"OPTIMIZE TABLE {table} FINAL")
            if kind == "clickhouse":
                replay_bytes = disk_bytes = await table_bytes(store, "replay_chunks")
            else:
                replay_bytes, disk_bytes = folder_bytes(root / "replay")
            index_bytes = sum([await table_bytes(store, t) for t in ("session_batches", "session_events", "sessions")])
            reader = SessionReader(store=store)

            def first_page_of(reader: SessionReader = reader) -> Awaitable[object]:
                return reader.events_page("bench", "replay-1", after=None, max_events=FIRST_PAGE_EVENTS)

            def whole_of(reader: SessionReader = reader) -> Awaitable[object]:
                return whole_replay(reader, "replay-1")

            first_page = await timed(first_page_of, 10)
            whole = await timed(whole_of, 5)
            results[kind] = {
                "write_seconds": round(seconds, 2),
                "replay_bytes_per_session_minute": round(replay_bytes / session_minutes),
                "disk_bytes_per_session_minute": round(disk_bytes / session_minutes),
                "ratio_to_raw": round(raw_bytes / disk_bytes, 1),
                "index_bytes_per_session_minute": round(index_bytes / session_minutes),
                "first_page_ms_p50": ms(first_page, 0.5),
                "whole_replay_ms_p50": ms(whole, 0.5),
            }
        finally:
            await store.close()
    return results


async def whole_replay(reader: SessionReader, session_id: str) -> int:
    keys, _, _ = await reader.chunk_index("bench", session_id, after=None, max_events=None)
    total = 0
    async for chunk in reader.chunks_json("bench", session_id, keys):
        total += len(chunk)
    return total


# Insert ---------------------------------------------------------------------------------------


async def consumer_rate(folder: Path, messages: list[dict], batch_messages: int) -> float:
    """Publish `messages` on a fresh nats-server, then time the consumer until it has stored them all."""
    nats_server = EmbeddedNats(data_dir=folder / "nats", port=free_port())
    await nats_server.start()
    nc = await bus.connect(nats_server.url, name="bench")
    store = await open_store(settings_for(folder / "store"))
    try:
        js = nc.jetstream()
        await bus.ensure_streams(js)
        for message in messages:
            await js.publish(subjects.events(message["projectId"], message["sessionId"]), orjson.dumps(message))
        settings = settings_for(
            folder / "store", consumer_batch_messages=batch_messages, consumer_fetch_timeout_seconds=0.5
        )
        consumer = BatchConsumer(js=js, writer=SessionWriter(store=store, lifecycle=NEVER_ENDS), settings=settings)
        await consumer.start()
        started = time.perf_counter()
        task = asyncio.create_task(consumer.run())
        while consumer.stored_batches < len(messages):
            await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        await consumer.stop()
        await task
        await consumer.close()
        return sum(len(m["events"]) for m in messages) / seconds
    finally:
        await store.close()
        await nc.drain()
        nats_server.stop()


async def insert_part(folder: Path) -> dict:
    # 100 five-minute sessions, about 21,000 batches and 42,000 events.
    sessions = {f"insert-{n}": session_batches(100 + n, 5, START_MS + n * 1000) for n in range(100)}
    messages = arrival_order(sessions)
    bulk = await consumer_rate(folder / "bulk", messages, 256)
    # The baseline stores one message per fetch; 3,000 messages are enough for a steady rate.
    single = await consumer_rate(folder / "single", messages[:3000], 1)
    return {
        "messages": len(messages),
        "events": sum(len(m["events"]) for m in messages),
        "events_per_second_256": round(bulk),
        "events_per_second_1": round(single),
        "speedup": round(bulk / single, 1),
    }


# Search ---------------------------------------------------------------------------------------

SEARCHES = [
    ("no filter, last day", "", {"from_ms": START_MS - 86_400_000}),
    ("user id", "user:user-4242", {}),
    ("browser and duration", "browser:firefox duration>50m", {}),
    ("metadata and errors", "meta.plan:team errors>0", {}),
    ("clicked label", 'clicked:"Place order"', {}),
    ("visited url", "url:/checkout/payment", {}),
    ("custom event payload", "event:add_to_cart[sku=17]", {}),
    ("error message", 'error:"TypeError: cart"', {}),
    ("rare label", 'clicked:"Item 4321"', {}),
    ("sequence", "url:/checkout/payment then error:*", {}),
    ("documented example", 'user:user-1* browser:firefox duration>1m clicked:"Place order" then error:*', {}),
    # The dashboard's default range. The generated sessions start 1.5 s apart, so they span 17 days.
    ("clicked label, last 7 days", 'clicked:"Place order"', {"from_ms": START_MS - 7 * 86_400_000}),
    (
        "documented example, last 7 days",
        'user:user-1* browser:firefox duration>1m clicked:"Place order" then error:*',
        {"from_ms": START_MS - 7 * 86_400_000},
    ),
]


async def generate_search_data(store: Store, sessions: int, rows_per_session: int) -> float:
    """Fill the tables in SQL: `sessions` summary rows, and `rows_per_session` event rows for each."""
    started = time.perf_counter()
    step = 200_000
    for first in range(0, sessions, step):
        await store.db.command(
            f"""
            INSERT INTO sessions SELECT
                'bench', concat('s', leftPad(toString(number), 9, '0')), 'tab-1',
                if(number % 3 = 0, '', concat('user-', toString(number % 200000))), concat('anon-', toString(number)),
                map('plan', ['free', 'pro', 'team'][number % 3 + 1]),
                ['Chrome', 'Firefox', 'Safari', 'Edge'][number % 4 + 1], '120',
                ['Windows', 'Mac OS X', 'Linux', 'Android'][number % 4 + 1], '',
                ['desktop', 'mobile', 'tablet'][number % 3 + 1], ['FR', 'DE', 'US', 'GB', 'JP'][number % 5 + 1],
                'https://shop.example/',
                fromUnixTimestamp64Milli(toInt64({START_MS} - number * 1500), 'UTC'),
                fromUnixTimestamp64Milli(toInt64({START_MS} - number * 1500 + cityHash64(number) % 3600000), 'UTC'),
                cityHash64(number) % 3600000,
                fromUnixTimestamp64Milli(toInt64({START_MS} - number * 1500 + cityHash64(number) % 3600000), 'UTC'),
                1 + number % 7, 20 + number % 500, if(number % 10 = 0, 1 + number % 3, 0), number % 12, 1,
                now64(6)
            FROM numbers({first}, {min(step, sessions - first)})
            """
        )
    # Each session has `rows_per_session` rows: 20% page views, 40% clicks, 20% inputs, 10% custom events,
    # 10% errors or console messages. Labels, URLs and messages are drawn by hash, so that a filter is
    # selective: "Place order" is 0.5% of clicks, /checkout/payment 0.5% of page views, and one session
    # in ten has JS errors.
    rows = sessions * rows_per_session
    step = 5_000_000
    for first in range(0, rows, step):
        await store.db.command(
            f"""
            INSERT INTO session_events SELECT
                'bench',
                multiIf(slot < 2, 'page', slot < 6, 'click', slot < 8, 'input', slot = 8, 'custom',
                        session % 10 = 0, 'error', 'console'),
                concat('s', leftPad(toString(session), 9, '0')), 'tab-1', idx, 0,
                fromUnixTimestamp64Milli(toInt64({START_MS} - session * 1500 + idx * 60000), 'UTC'),
                multiIf(slot = 8, 'add_to_cart', slot = 9, if(h % 50 = 0, 'error', 'warn'), ''),
                multiIf(slot >= 2 AND slot < 6,
                            multiIf(h % 1000 < 5, 'Place order', h % 1000 < 200, 'Add to cart',
                                    concat('Item ', toString(h % 5000))),
                        slot = 9 AND session % 10 = 0,
                            ['TypeError: cart is undefined', 'ReferenceError: x is not defined'][h % 2 + 1],
                        slot = 9, concat('Slow request ', toString(h % 100)), ''),
                '',
                if(slot < 2, concat('https://shop.example',
                                    multiIf(h % 1000 < 5, '/checkout/payment', h % 1000 < 100, '/cart',
                                            concat('/p/', toString(h % 20000)))), ''),
                if(slot = 8, concat('{{"sku":', toString(h % 100), '}}'), '')
            FROM (SELECT intDiv(number, {rows_per_session}) AS session, number % {rows_per_session} AS idx,
                         idx % 10 AS slot, cityHash64(number) AS h
                  FROM numbers({first}, {min(step, rows - first)}))
            """
        )
    await store.db.command("OPTIMIZE TABLE sessions FINAL")
    return time.perf_counter() - started


async def search_part(folder: Path, sessions: int, rows_per_session: int, repeats: int) -> dict:
    store = await open_store(settings_for(folder / "search"))
    try:
        seconds = await generate_search_data(store, sessions, rows_per_session)
        reader = SessionReader(store=store)
        results = {"sessions": sessions, "event_rows": sessions * rows_per_session, "generate_seconds": round(seconds)}
        rows = []
        for name, query, options in SEARCHES:
            compiled = compile_query(parse(query) if query else None)
            found: list[int] = []

            async def run(compiled=compiled, options=options, found=found) -> None:
                page = await reader.search(
                    project_id="bench", compiled=compiled, from_ms=options.get("from_ms"), to_ms=None,
                    sort="startedAt", descending=True, offset=0, limit=50,
                )  # fmt: skip
                found.append(page.total)

            await run()  # warm-up: the first run reads the parts from disk
            samples = await timed(run, repeats)
            rows.append(
                {
                    "search": name,
                    "query": query,
                    "matches": found[-1],
                    "p50_ms": ms(samples, 0.5),
                    "p95_ms": ms(samples, 0.95),
                }
            )
        results["searches"] = rows
        return results
    finally:
        await store.close()


# Main -----------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "replay", "insert", "search"], default="all")
    parser.add_argument("--sessions", type=int, default=1_000_000, help="Sessions in the search part.")
    parser.add_argument("--rows-per-session", type=int, default=50, help="Searchable event rows per session.")
    parser.add_argument("--repeats", type=int, default=20, help="Runs of each search.")
    parser.add_argument("--folder", type=Path, help="Where the stores go; a temporary folder by default.")
    arguments = parser.parse_args()
    configure_logging("warning")

    folder = arguments.folder or Path(tempfile.mkdtemp(prefix="tandem-bench-sessions-"))
    report: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        parts = {
            "replay": lambda: replay_part(folder / "replay", minutes=60, session_count=4),
            "insert": lambda: insert_part(folder / "insert"),
            "search": lambda: search_part(folder, arguments.sessions, arguments.rows_per_session, arguments.repeats),
        }
        for name, run in parts.items():
            if arguments.part not in ("all", name):
                continue
            # Other processes on the machine slow every number down: the load average says how busy it was.
            load_before = os.getloadavg()[0]
            report[name] = await run()
            report[name]["load_average_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
            print(json.dumps(report[name], indent=2), flush=True)
    finally:
        if arguments.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    results = REPOSITORY / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"sessions_store-{int(time.time())}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
