"""The benchmark's web server: the busy page, the bundles, a stand-in for OpenReplay's ingest, and a proxy to Tandem.

Every tracker request goes through this server, which counts its body as it
arrived on the wire (compressed if the tracker compressed it), so all
configurations are measured at the same place.

- `/openreplay/v1/web/*` is a stand-in for OpenReplay's ingest endpoint. It is a
  stand-in because OpenReplay's backend (AGPL, several Go services, Kafka,
  Postgres and Redis) cannot run here. It responds to the start request with the
  fields the tracker 19.0.1 checks (`token`, `userUUID`, `sessionID`,
  `projectID`, `delay`, `startTimestamp`) and leaves `beaconSizeLimit` and
  `compressionThreshold` unset, so the tracker keeps its own defaults (1 MB
  and 24,000 bytes). It accepts every batch and stores only its size; it does
  not decode OpenReplay's binary format.
- `/ingest/*` is forwarded unchanged, body and headers, to the all-in-one
  Tandem server started by the harness, and its response is passed back. The
  page's origin is this server, so Tandem's tracker makes same-origin requests
  (no CORS preflight), as it would behind a site's own reverse proxy. The
  batches are also decompressed and kept for the replay check.
"""

from __future__ import annotations

import gzip
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from tandem_protocol.parts import PartJoiner

PAGE = Path(__file__).resolve().parent / "page"
FORWARDED_REQUEST_HEADERS = ("Authorization", "Content-Type", "Content-Encoding")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Retry-After")

# The <script> tag each configuration puts in the page's <head>.
TRACKER_SCRIPTS = {
    "none": "",
    "rrweb": '<script src="/bundles/rrweb.js"></script>',
    "openreplay": '<script src="/bundles/openreplay.js"></script>',
    "tandem": '<script src="/static/tracker.js"></script>',
}


@dataclass
class Received:
    """One tracker request: where it went, its body size as sent, and when it arrived."""

    path: str
    wire_bytes: int
    encoding: str
    at: float


@dataclass
class Traffic:
    """The tracker requests of one run; the harness calls `reset` before each run."""

    requests: list[Received] = field(default_factory=list)
    # Tandem's batches as sent, decompressed, in arrival order: (seq, events). A batch the
    # server rejected is kept too, and counted in `tandem_errors`.
    tandem_batches: list[tuple[int, list]] = field(default_factory=list)
    tandem_errors: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.requests.clear()
        self.tandem_batches.clear()
        self.tandem_errors.clear()

    def rejected(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for error in self.tandem_errors:
            counts[error] = counts.get(error, 0) + 1
        return counts

    def wire_bytes(self, prefix: str, before: float = math.inf) -> int:
        """Bytes of the requests under `prefix`, those that arrived before `before` (a monotonic time) only if given."""
        return sum(item.wire_bytes for item in self.requests if item.path.startswith(prefix) and item.at < before)

    def count(self, prefix: str) -> int:
        return sum(1 for item in self.requests if item.path.startswith(prefix))

    def last_at(self) -> float:
        return max((item.at for item in self.requests), default=0.0)

    def tandem_events(self) -> list[dict]:
        """Tandem's recorded events ordered by batch number, with split events rebuilt, as the export gives them."""
        events: list[dict] = []
        for _, batch in sorted(self.tandem_batches, key=lambda item: item[0]):
            events.extend(batch)
        return PartJoiner().join(events)


TRAFFIC = web.AppKey("traffic", Traffic)
TANDEM_URL = web.AppKey("tandem_url", str)
HTTP = web.AppKey("http", aiohttp.ClientSession)
REPLAY_EVENTS = web.AppKey("replay_events", list)


async def record_body(request: web.Request) -> bytes:
    """Read the raw body (this server does not decompress) and count it."""
    body = await request.read()
    encoding = request.headers.get("Content-Encoding", "")
    request.app[TRAFFIC].requests.append(Received(request.path, len(body), encoding, time.monotonic()))
    return body


# The busy page and the replay page -----------------------------------------------------------


async def busy_page(request: web.Request) -> web.Response:
    tracker = request.match_info["tracker"]
    if tracker not in TRACKER_SCRIPTS:
        raise web.HTTPNotFound(text=f"Unknown tracker {tracker!r}; expected one of {sorted(TRACKER_SCRIPTS)}.")
    html = (PAGE / "index.html").read_text()
    html = html.replace("{tracker_script}", TRACKER_SCRIPTS[tracker]).replace("{tracker}", tracker)
    return web.Response(text=html, content_type="text/html")


async def replay_events(request: web.Request) -> web.Response:
    return web.json_response(request.app[REPLAY_EVENTS])


# OpenReplay's ingest, stand-in --------------------------------------------------------------


async def openreplay_start(request: web.Request) -> web.Response:
    await record_body(request)
    now_ms = int(time.time() * 1000)
    return web.json_response(
        {
            "token": uuid.uuid4().hex,
            "userUUID": str(uuid.uuid4()),
            "sessionID": str(now_ms),
            "projectID": "1",
            "delay": 0,
            "startTimestamp": now_ms,
        }
    )


async def openreplay_batch(request: web.Request) -> web.Response:
    await record_body(request)
    return web.Response(status=200)


async def openreplay_tags(request: web.Request) -> web.Response:
    return web.json_response({"tags": []})


async def openreplay_other(request: web.Request) -> web.Response:
    await record_body(request)
    return web.json_response({})


# Tandem's ingest, forwarded ------------------------------------------------------------------


async def tandem_proxy(request: web.Request) -> web.Response:
    body = await record_body(request)
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    url = request.app[TANDEM_URL] + request.path_qs
    async with request.app[HTTP].request(request.method, url, data=body, headers=headers) as upstream:
        payload = await upstream.read()
        status = upstream.status
        forwarded = FORWARDED_RESPONSE_HEADERS
        response_headers = {name: upstream.headers[name] for name in forwarded if name in upstream.headers}
    if request.path.endswith("/v1/web/i"):
        keep_batch(request.app[TRAFFIC], body, request.headers.get("Content-Encoding", ""), status)
    return web.Response(body=payload, status=status, headers=response_headers)


def keep_batch(traffic: Traffic, body: bytes, encoding: str, status: int) -> None:
    """Keep a batch as the tracker sent it, whether the server accepted it or not."""
    if status != 200:
        traffic.tandem_errors.append(f"HTTP {status}")
    raw = gzip.decompress(body) if encoding == "gzip" else body
    batch = json.loads(raw)
    traffic.tandem_batches.append((batch["seq"], batch["events"]))


def create_app(*, bundles: Path, dist: Path, tandem_url: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[TRAFFIC] = Traffic()
    app[TANDEM_URL] = tandem_url
    app[REPLAY_EVENTS] = []

    async def http_session(app: web.Application):
        app[HTTP] = aiohttp.ClientSession(auto_decompress=False)
        yield
        await app[HTTP].close()

    app.cleanup_ctx.append(http_session)
    app.router.add_get("/busy/{tracker}", busy_page)
    app.router.add_get("/replay/", lambda _: web.FileResponse(PAGE / "replay.html"))
    app.router.add_get("/replay/events.json", replay_events)
    app.router.add_post("/openreplay/v1/web/start", openreplay_start)
    app.router.add_post("/openreplay/v1/web/i", openreplay_batch)
    app.router.add_get("/openreplay/v1/web/tags", openreplay_tags)
    app.router.add_route("*", "/openreplay/{tail:.*}", openreplay_other)
    app.router.add_route("*", "/ingest/{tail:.*}", tandem_proxy)
    app.router.add_static("/page/", PAGE)
    app.router.add_static("/bundles/", bundles)
    app.router.add_static("/static/", dist)
    return app


async def serve(app: web.Application, port: int) -> web.AppRunner:
    """Serve `app` on 127.0.0.1:`port`; request bodies stay as sent (no decompression)."""
    runner = web.AppRunner(app, auto_decompress=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner
