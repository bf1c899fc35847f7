"""Latency from a change on the user's side to its arrival at an agent's WebSocket.

    .venv/bin/python -m bench.live_latency [--seconds 20] [--sessions 1 10 100]

Runs `python -m tandem run` as a child process on loopback. One session is a
real Chromium page of the demo shop whose text the harness changes; 10 and 100
sessions are synthetic trackers posting batches. Each session has its own
agent socket watching it. The baseline is the bus alone: the same messages
published on core NATS to one subscriber each, in the same process layout.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import aiohttp
import nats
import orjson
from playwright.async_api import async_playwright

from bench.common import Server, machine, start_server, summary_ms

CHANGE_INTERVAL_SECONDS = 0.2
META = {"type": 4, "timestamp": 0, "data": {"href": "http://bench.test/", "width": 1280, "height": 800}}
SNAPSHOT = {
    "type": 2,
    "timestamp": 0,
    "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
}


async def agent_token(http: aiohttp.ClientSession, server: Server) -> str:
    async with http.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": server.admin_password}
    ) as response:
        return (await response.json())["token"]


async def watch(http: aiohttp.ClientSession, server: Server, token: str, session_id: str, arrivals: dict[str, float]):
    """Open an agent socket on `session_id`; record the arrival time of every marker seen."""
    ws = await http.ws_connect(server.url.replace("http", "ws") + "/live/v1/ws")
    await ws.send_json({"type": "auth", "token": token})
    await ws.receive_json()
    await ws.send_json({"type": "watch", "sessionId": session_id})

    async def read() -> None:
        async for frame in ws:
            now = time.time()
            text = frame.data
            if '"events"' not in text[:40] or "mk-" not in text:
                continue
            start = 0
            while (index := text.find("mk-", start)) >= 0:
                arrivals.setdefault(text[index : index + 35], now)
                start = index + 3

    return ws, asyncio.create_task(read())


async def synthetic_tracker(http, server, index, seconds, sent: dict[str, float]) -> str:
    tab = f"bench-{index}"
    async with http.post(
        f"{server.url}/ingest/v1/web/start", json={"projectKey": "demo-key", "tabId": tab, "userID": f"u{index}"}
    ) as response:
        started = await response.json()
    token = started["token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = {"tabId": tab, "seq": 0, "events": [{**META, "timestamp": int(time.time() * 1000)}, SNAPSHOT]}
    async with http.post(f"{server.url}/ingest/v1/web/i", data=orjson.dumps(body), headers=headers):
        pass
    return started["sessionID"], token, headers, tab


async def drive_synthetic(http, server, sessions, seconds, sent):
    deadline = time.time() + seconds
    session_id, _, headers, tab = sessions
    seq = 1
    await asyncio.sleep(CHANGE_INTERVAL_SECONDS * (hash(tab) % 100) / 100)
    while time.time() < deadline:
        marker = f"mk-{uuid.uuid4().hex}"[:35]
        now = time.time()
        event = {
            "type": 3,
            "timestamp": int(now * 1000),
            "data": {"source": 0, "texts": [{"id": 5, "value": marker}], "attributes": [], "removes": [], "adds": []},
        }
        sent[marker] = now
        async with http.post(
            f"{server.url}/ingest/v1/web/i",
            data=orjson.dumps({"tabId": tab, "seq": seq, "events": [event]}),
            headers=headers,
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"batch rejected: {response.status} {await response.text()}")
        seq += 1
        await asyncio.sleep(max(0.0, CHANGE_INTERVAL_SECONDS - (time.time() - now)))


async def run_synthetic(server: Server, count: int, seconds: float) -> list[float]:
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        token = await agent_token(http, server)
        trackers = [await synthetic_tracker(http, server, index, seconds, sent) for index in range(count)]
        await asyncio.sleep(1.0)
        sockets = [await watch(http, server, token, tracker[0], arrivals) for tracker in trackers]
        await asyncio.sleep(0.5)
        await asyncio.gather(*(drive_synthetic(http, server, tracker, seconds, sent) for tracker in trackers))
        await asyncio.sleep(1.0)
        for ws, reader in sockets:
            reader.cancel()
            await ws.close()
    return [arrivals[marker] - sent_at for marker, sent_at in sent.items() if marker in arrivals], len(sent) - len(
        arrivals.keys() & sent.keys()
    )


async def run_browser(server: Server, seconds: float) -> list[float]:
    """Time text changes made in one real Chromium page of the demo until they reach the agent."""
    sent: dict[str, float] = {}
    arrivals: dict[str, float] = {}
    async with async_playwright() as playwright, aiohttp.ClientSession() as http:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        page = await browser.new_page()
        user = f"bench-{uuid.uuid4().hex[:6]}"
        await page.goto(f"{server.url}/demo/?user={user}")
        session_id = None
        for _ in range(100):
            session_id = await page.evaluate(
                "() => window.tandem && window.tandem.getSessionID && window.tandem.getSessionID()"
            )
            if session_id:
                break
            await asyncio.sleep(0.1)
        token = await agent_token(http, server)
        ws, reader = await watch(http, server, token, session_id, arrivals)
        await asyncio.sleep(1.0)
        deadline = time.time() + seconds
        while time.time() < deadline:
            marker = f"mk-{uuid.uuid4().hex}"[:35]
            sent[marker] = time.time()
            await page.evaluate("marker => { document.getElementById('search-echo').textContent = marker; }", marker)
            await asyncio.sleep(CHANGE_INTERVAL_SECONDS)
        await asyncio.sleep(1.0)
        reader.cancel()
        await ws.close()
        await browser.close()
    return [arrivals[m] - t for m, t in sent.items() if m in arrivals], len(sent) - len(arrivals.keys() & sent.keys())


async def run_baseline(nats_url: str, count: int, seconds: float) -> list[float]:
    """Time the bus alone: each session's changes published on core NATS to one subscriber."""
    publisher = await nats.connect(nats_url)
    subscriber = await nats.connect(nats_url)
    latencies: list[float] = []

    async def received(msg) -> None:
        latencies.append(time.time() - orjson.loads(msg.data)["sentAt"])

    for index in range(count):
        await subscriber.subscribe(f"bench.baseline.{index}", cb=received)
    await subscriber.flush()

    async def drive(index: int) -> None:
        deadline = time.time() + seconds
        await asyncio.sleep(CHANGE_INTERVAL_SECONDS * index / max(count, 1))
        while time.time() < deadline:
            await publisher.publish(f"bench.baseline.{index}", orjson.dumps({"sentAt": time.time(), "pad": "x" * 200}))
            await asyncio.sleep(CHANGE_INTERVAL_SECONDS)

    await asyncio.gather(*(drive(index) for index in range(count)))
    await publisher.flush()
    await asyncio.sleep(0.5)
    await publisher.close()
    await subscriber.close()
    return latencies


def row(label: str, samples: list[float], lost: int, baseline: list[float]) -> str:
    tandem = summary_ms(samples)
    bus = summary_ms(baseline)
    ratio = tandem["p95"] / bus["p95"] if bus["p95"] else float("nan")
    return (
        f"| {label} | {tandem['n']} | {lost} | {tandem['p50']:.1f} | {tandem['p95']:.1f} | {tandem['p99']:.1f} "
        f"| {bus['p50']:.2f} | {bus['p95']:.2f} | {ratio:.0f}x |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of each run, in seconds.")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 100], help="Watched sessions per run.")
    arguments = parser.parse_args()

    server = await start_server()
    rows = []
    try:
        for count in arguments.sessions:
            if count == 1:
                samples, lost = await run_browser(server, arguments.seconds)
                label = "1 (Chromium demo page)"
            else:
                samples, lost = await run_synthetic(server, count, arguments.seconds)
                label = f"{count} (synthetic trackers)"
            baseline = await run_baseline(server.nats_url, count, arguments.seconds)
            rows.append(row(label, samples, lost, baseline))
            print(rows[-1], flush=True)
    finally:
        server.stop()

    print()
    print(
        f"Machine: {machine()}; each session changes every {CHANGE_INTERVAL_SECONDS * 1000:.0f} ms"
        f" for {arguments.seconds:.0f} s."
    )
    print("| watched sessions | samples | missing | p50 ms | p95 ms | p99 ms | bus p50 ms | bus p95 ms | p95 vs bus |")
    print("|---|---|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)


if __name__ == "__main__":
    asyncio.run(main())
