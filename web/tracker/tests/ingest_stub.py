"""A stand-in for Tandem's two tracker endpoints, for testing the tracker alone.

It serves web/dist the way the all-in-one server does (`/static/`, `/demo/`),
implements `POST /ingest/v1/web/start` and `POST /ingest/v1/web/i` as
docs/PROTOCOL.md describes, and records every request it receives. Tests can
queue error responses, delay responses and shift the stub's clock. Unlike the
real server, it accepts a batch whose number it has already seen; `stored_events`
returns what the real server would keep.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

DEFAULT_MAX_BATCH_BYTES = 786_432


@dataclass
class ReceivedBatch:
    """One request to /ingest/v1/web/i, as received."""

    status: int
    headers: dict[str, str]
    raw_body: str
    body: dict[str, Any] | None

    @property
    def seq(self) -> int:
        return self.body["seq"] if self.body else -1

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.body["events"] if self.body else []


@dataclass
class IngestStub:
    """Shared state between the test thread and the server thread; guard it with `lock`."""

    dist: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    start_requests: list[dict[str, Any]] = field(default_factory=list)
    start_responses: list[dict[str, Any]] = field(default_factory=list)
    batches: list[ReceivedBatch] = field(default_factory=list)
    # Session id of each token the stub issued, and the tokens of ended sessions.
    tokens: dict[str, str] = field(default_factory=dict)
    ended_tokens: set[str] = field(default_factory=set)
    # Responses to send instead of 200 to the next batch requests: (status, code, headers).
    batch_failures: list[tuple[int, str, dict[str, str]]] = field(default_factory=list)
    clock_skew_ms: int = 0
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    # Seconds to wait before responding to the next batch requests, which are recorded on arrival.
    response_delays: list[float] = field(default_factory=list)

    # Accessors used by tests -----------------------------------------------------------

    def accepted_batches(self) -> list[ReceivedBatch]:
        with self.lock:
            return [batch for batch in self.batches if batch.status == 200]

    def accepted_events(self) -> list[dict[str, Any]]:
        return [event for batch in self.accepted_batches() for event in batch.events]

    def custom_events(self, tag: str) -> list[dict[str, Any]]:
        return [event for event in self.accepted_events() if event["type"] == 5 and event["data"].get("tag") == tag]

    def stored_events(self) -> list[dict[str, Any]]:
        """Returns the events the real server would store, in the order it replays them.

        Ingest is idempotent on session, tab and batch number, so only the first
        accepted batch with each number counts; the store orders batches by number.
        """
        first: dict[tuple[str, str, int], ReceivedBatch] = {}
        with self.lock:
            for batch in self.batches:
                if batch.status != 200:
                    continue
                session_id = self.tokens[batch.headers["Authorization"].removeprefix("Bearer ")]
                first.setdefault((session_id, batch.body["tabId"], batch.seq), batch)
        return [event for key in sorted(first) for event in first[key].events]

    def all_request_bodies(self) -> list[str]:
        with self.lock:
            return [json.dumps(request) for request in self.start_requests] + [batch.raw_body for batch in self.batches]

    def fail_next_batches(self, *failures: tuple[int, str, dict[str, str]]) -> None:
        with self.lock:
            self.batch_failures.extend(failures)

    def delay_next_responses(self, *seconds: float) -> None:
        """Holds the responses to the next batch requests, one delay each, to keep a request in flight."""
        with self.lock:
            self.response_delays.extend(seconds)

    def end_sessions(self) -> None:
        with self.lock:
            self.ended_tokens.update(self.tokens)

    # Handlers ----------------------------------------------------------------------------

    async def handle_start(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self.lock:
            self.start_requests.append(body)
            token = body.get("token")
            resumed = token in self.tokens and token not in self.ended_tokens
            session_id = self.tokens[token] if resumed else "S" + secrets.token_hex(8)
            new_token = "T" + secrets.token_hex(12)
            # Earlier tokens of a resumed session stay valid, as a keepalive batch
            # from the previous page may arrive after this start request.
            self.tokens[new_token] = session_id
            answer = {
                "version": 1,
                "sessionID": session_id,
                "projectID": "demo",
                "token": new_token,
                "timestamp": int(time.time() * 1000) + self.clock_skew_ms,
                "resumed": resumed,
                "maxBatchBytes": self.max_batch_bytes,
            }
            self.start_responses.append(answer)
        return web.json_response(answer)

    async def handle_batch(self, request: web.Request) -> web.Response:
        raw = await request.text()
        headers = dict(request.headers)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None

        with self.lock:
            status, code, extra_headers = self._batch_verdict(headers, raw, body)
            self.batches.append(ReceivedBatch(status=status, headers=headers, raw_body=raw, body=body))
            delay = self.response_delays.pop(0) if self.response_delays else 0.0
        if delay:
            await asyncio.sleep(delay)
        if status == 200:
            return web.json_response({"version": 1, "seq": body["seq"]})
        error = {"error": {"code": code, "message": f"Stub answered {status}.", "details": {}}}
        return web.json_response(error, status=status, headers=extra_headers)

    def _batch_verdict(
        self, headers: dict[str, str], raw: str, body: dict[str, Any] | None
    ) -> tuple[int, str, dict[str, str]]:
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return 401, "invalid_token", {}
        if token in self.ended_tokens:
            return 401, "session_ended", {}
        if self.batch_failures:
            return self.batch_failures.pop(0)
        if body is None:
            return 400, "invalid_body", {}
        if len(raw.encode()) > self.max_batch_bytes:
            return 413, "batch_too_large", {}
        return 200, "", {}


# A page with the async snippet and nothing that changes on its own.
QUIET_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Quiet page</title>
<script>
  window.tandem = { q: [], options: { projectKey: "test-key", ingestPoint: "/ingest" } };
  "start stop setUserID setUserAnonymousID setMetadata event issue use".split(" ").forEach(function (method) {
    window.tandem[method] = function () { window.tandem.q.push([method, [].slice.call(arguments)]); };
  });
  tandem.start();
</script>
<script async src="/static/tracker.js"></script>
</head><body><p>Nothing moves here.</p></body></html>
"""


def build_app(stub: IngestStub) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/ingest/v1/web/start", stub.handle_start)
    app.router.add_post("/ingest/v1/web/i", stub.handle_batch)

    async def demo_index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(stub.dist / "demo" / "index.html")

    async def quiet_page(_: web.Request) -> web.Response:
        return web.Response(text=QUIET_PAGE, content_type="text/html")

    app.router.add_get("/quiet.html", quiet_page)
    app.router.add_get("/demo/", demo_index)
    app.router.add_static("/demo/", stub.dist / "demo")
    app.router.add_static("/static/", stub.dist)
    return app


class StubServer:
    """Runs the stub on 127.0.0.1 and a free port, in a thread with its own event loop."""

    def __init__(self, stub: IngestStub) -> None:
        self.stub = stub
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.stub))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._runner:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
