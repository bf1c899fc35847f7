"""Routes of the ingest service, mounted under `/ingest`."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from tandem_protocol import (
    EventBatch,
    IngestBatchRequest,
    IngestBatchResponse,
    LiveSession,
    Project,
    ProtocolError,
    SnapshotPointer,
    StartRequest,
    StartResponse,
    decode,
    encode,
    subjects,
)
from tandem_runtime.access import tracker_cors_middleware
from tandem_runtime.bus import MAX_BATCH_MESSAGE_BYTES
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.http import error_middleware, json_response
from tandem_runtime.ratelimit import retry_after_middleware as rate_limit_middleware
from tandem_runtime.tokens import TokenSigner, bearer_token

from tandem_ingest import access, leak_alarm
from tandem_ingest.enrichment import ClientLocator, merge_metadata, open_geo_locator, utm_parameters
from tandem_ingest.registry import LiveRegistryWriter
from tandem_ingest.settings import IngestSettings
from tandem_ingest.useragent import describe

log = structlog.get_logger(__name__)

SETTINGS = web.AppKey("settings", IngestSettings)
NATS = web.AppKey("nats", NatsClient)
JS = web.AppKey("js", JetStreamContext)
SIGNER = web.AppKey("signer", TokenSigner)
PROJECTS = web.AppKey("projects", ProjectDirectory)
REGISTRY = web.AppKey("registry", LiveRegistryWriter)
CLIENT_LOCATOR = web.AppKey("client_locator", ClientLocator)

SESSIONS_STARTED = Counter("tandem_ingest_sessions_started_total", "Sessions started or resumed.", ["resumed"])
BATCHES = Counter("tandem_ingest_batches_total", "Batches accepted onto the bus.", ["duplicate"])
HEARTBEATS = Counter(
    "tandem_ingest_heartbeats_total",
    "Empty batches (heartbeats) accepted, by whether they also went on the events stream.",
    ["stored"],
)
EVENTS = Counter("tandem_ingest_events_total", "rrweb events accepted onto the bus.")
BYTES = Counter("tandem_ingest_bytes_total", "Request body bytes of accepted batches.")
SESSIONS_NOT_SAMPLED = Counter(
    "tandem_ingest_sessions_not_sampled_total", "New tabs told not to record because of their project's sampling."
)
REJECTIONS = Counter("tandem_ingest_rejections_total", "Requests rejected, by reason.", ["reason"])
PUBLISH_LATENCY = Histogram(
    "tandem_bus_publish_duration_seconds",
    "Time for JetStream to acknowledge a publish.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
PUBLISH_ERRORS = Counter("tandem_bus_publish_errors_total", "Publishes that failed, by reason.", ["reason"])

RETRY_AFTER_SECONDS = "2"
MAX_BATCH_SEQ = 2**32 - 1

LONG_NUMBER = re.compile(rb"\d{20,}|\d[eE][+-]?\d{3,}")
"""Digits that may be a number the store's JSON parser (orjson) cannot read: an integer past 64 bits, an exponent
that overflows a double. A match may also be text inside a string, so the body is then parsed to be sure."""
"""Largest batch number: the store keeps `seq` as a UInt32."""


def now_ms() -> int:
    return int(time.time() * 1000)


def new_session_id() -> str:
    """A 26-character id that sorts by start time: 12 hex digits of milliseconds, then randomness."""
    return f"{now_ms():012x}{secrets.token_hex(7)}"


async def start_session(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await request.read()
    start = decode(StartRequest, body, what="start request")
    project = await request.app[PROJECTS].by_key(start.project_key)
    if project is None:
        REJECTIONS.labels("unknown_project").inc()
        raise ProtocolError(
            code="unknown_project",
            message=f"No project has the key {start.project_key[:64]!r}. Check projectKey in the tracker's options.",
            status=404,
        )
    request.app[access.GUARD].admit(request, project)

    resumed = await resume_session(request, start, project.id)
    if resumed is None and not access.sampled_in(project, start.tab_id):
        return not_sampled(project)
    if resumed is not None:
        session = resumed
    else:
        session = new_live_session(request, start, project.id)
    await request.app[REGISTRY].put(session)

    token = request.app[SIGNER].sign_session(
        session_id=session.session_id,
        project_id=session.project_id,
        tab_id=session.tab_id,
        started_at=session.started_at,
        ttl_seconds=int(settings.session_max_duration_seconds + settings.session_inactivity_seconds),
    )
    SESSIONS_STARTED.labels(str(resumed is not None).lower()).inc()
    log.info(
        "session.started",
        project_id=session.project_id,
        session_id=session.session_id,
        resumed=resumed is not None,
    )
    return json_response(
        StartResponse(
            session_id=session.session_id,
            project_id=session.project_id,
            token=token,
            timestamp=now_ms(),
            resumed=resumed is not None,
            max_batch_bytes=settings.max_batch_bytes,
            session_confirm=project.session_confirm,
        )
    )


def not_sampled(project: Project) -> web.Response:
    """Tell the tracker of a tab that the project's sampling left out to record nothing."""
    SESSIONS_NOT_SAMPLED.inc()
    return json_response(
        StartResponse(
            session_id="",
            project_id=project.id,
            token="",
            timestamp=now_ms(),
            resumed=False,
            max_batch_bytes=0,
            record=False,
        )
    )


async def resume_session(request: web.Request, start: StartRequest, project_id: str) -> LiveSession | None:
    """Return the live session the previous page's token names, if it may go on; else None."""
    if not start.token:
        return None
    settings = request.app[SETTINGS]
    try:
        claims = request.app[SIGNER].verify_session(start.token)
    except ProtocolError:
        return None
    if claims.project_id != project_id or claims.tab_id != start.tab_id:
        return None
    session = await request.app[REGISTRY].get(project_id, claims.session_id)
    if session is None:
        return None
    now = now_ms()
    idle_too_long = now - session.last_seen_at > settings.session_inactivity_seconds * 1000
    too_old = now - session.started_at > settings.session_max_duration_seconds * 1000
    if idle_too_long or too_old:
        return None
    session.last_seen_at = now
    session.url = start.url or session.url
    session.title = start.title or session.title
    session.active = True
    session.closing_at = None
    if start.user_id is not None:
        session.user_id = start.user_id
    if start.user_anonymous_id is not None:
        session.user_anonymous_id = start.user_anonymous_id
    dropped = merge_metadata(session.metadata, start.metadata, settings.metadata_key_limit(project_id))
    request.app[REGISTRY].count_dropped_metadata(project_id, session.session_id, dropped)
    return session


def new_live_session(request: web.Request, start: StartRequest, project_id: str) -> LiveSession:
    """Build a new session's entry from the start request, its User-Agent and its client's place."""
    software = describe(request.headers.get("User-Agent", ""))
    place = request.app[CLIENT_LOCATOR].locate(request.remote, request.headers.getall("X-Forwarded-For", []))
    session_id = new_session_id()
    metadata: dict[str, str] = {}
    dropped = merge_metadata(metadata, start.metadata, request.app[SETTINGS].metadata_key_limit(project_id))
    request.app[REGISTRY].count_dropped_metadata(project_id, session_id, dropped)
    now = now_ms()
    return LiveSession(
        session_id=session_id,
        project_id=project_id,
        tab_id=start.tab_id,
        user_id=start.user_id,
        user_anonymous_id=start.user_anonymous_id,
        metadata=metadata,
        started_at=now,
        last_seen_at=now,
        url=start.url,
        title=start.title,
        referrer=start.referrer,
        browser=software.browser,
        browser_version=software.browser_version,
        os=software.os,
        os_version=software.os_version,
        device=software.device,
        country=place.country,
        city=place.city,
        screen=start.screen,
        timezone=start.timezone,
        language=start.language,
        **utm_parameters(start.url),
    )


async def ingest_batch(request: web.Request) -> web.Response:
    try:
        claims = request.app[SIGNER].verify_session(bearer_token(request.headers.get("Authorization")))
        guard = request.app[access.GUARD]
        guard.admit(request, await guard.project_of(claims.project_id))
    except ProtocolError as error:
        REJECTIONS.labels(error.code).inc()
        raise
    body = await read_body(request, request.app[SETTINGS].max_body_bytes)
    try:
        batch = decode(IngestBatchRequest, body, what="batch")
        check_numbers(body)
    except ProtocolError as error:
        REJECTIONS.labels(error.code).inc()
        raise
    if batch.seq > MAX_BATCH_SEQ:
        REJECTIONS.labels("invalid_seq").inc()
        raise ProtocolError(
            code="invalid_seq",
            message=f"The batch number {batch.seq} is over {MAX_BATCH_SEQ}. Start a new session.",
            details={"maxSeq": MAX_BATCH_SEQ},
        )
    if batch.session_id is not None and batch.session_id != claims.session_id:
        REJECTIONS.labels("session_mismatch").inc()
        raise ProtocolError(
            code="session_mismatch",
            message=(
                "The token belongs to another session than the batch's sessionID. "
                "Send each session's batches with its own token."
            ),
            status=403,
        )
    if batch.tab_id != claims.tab_id:
        REJECTIONS.labels("tab_mismatch").inc()
        raise ProtocolError(
            code="tab_mismatch",
            message=(
                "The token belongs to another tab than the batch's tabId. Send each tab's batches with its own token."
            ),
            status=403,
        )

    received_at = now_ms()
    if not batch.events and not request.app[REGISTRY].heartbeat_needs_store(claims.session_id):
        return await record_heartbeat(request, claims.project_id, claims.session_id, batch.seq, received_at)
    message = EventBatch(
        project_id=claims.project_id,
        session_id=claims.session_id,
        tab_id=claims.tab_id,
        seq=batch.seq,
        received_at=received_at,
        events=batch.events,
    )
    payload = encode(message)
    if len(payload) > MAX_BATCH_MESSAGE_BYTES:
        REJECTIONS.labels("batch_too_large").inc()
        raise ProtocolError(
            code="batch_too_large",
            message=(
                f"The batch is {len(payload)} bytes on the bus, over the limit of {MAX_BATCH_MESSAGE_BYTES}. Split it."
            ),
            status=413,
            details={"maxBytes": MAX_BATCH_MESSAGE_BYTES},
        )

    ack = await publish(request, message, payload)
    BATCHES.labels(str(ack.duplicate).lower()).inc()
    if not batch.events:
        HEARTBEATS.labels("true").inc()
    if not ack.duplicate:
        EVENTS.inc(len(batch.events))
        leak_alarm.check_batch(claims.project_id, claims.session_id, batch.seq, batch.events)
        BYTES.inc(len(body))
        if message.has_meta():
            await save_snapshot_pointer(request, message, ack.seq)
        await request.app[REGISTRY].record_batch(claims.project_id, claims.session_id, batch.events, received_at)
    return json_response(IngestBatchResponse(seq=batch.seq))


def check_numbers(body: bytes) -> None:
    """Raise a 400 ProtocolError for a number the consumer could not parse, which would lose the whole batch there."""
    if LONG_NUMBER.search(body) is None:
        return
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(
            code="number_out_of_range",
            message=f"The batch has a number out of range ({exc}). Send numbers that fit in a double.",
        ) from None


async def record_heartbeat(
    request: web.Request, project_id: str, session_id: str, seq: int, received_at: int
) -> web.Response:
    """Accept an empty batch without putting it on the events stream: it only keeps the session listed.

    It contains no event, so the recorded session is the same with or without it, and
    its number is simply absent from the store. The live pods learn that the session
    still sends from this pod's next presence message. While NATS is disconnected the
    response is 503, as for any batch, so that the tracker retries.
    """
    if not request.app[NATS].is_connected:
        raise bus_unavailable("NotConnected")
    await request.app[REGISTRY].record_batch(project_id, session_id, [], received_at, stored=False)
    HEARTBEATS.labels("false").inc()
    return json_response(IngestBatchResponse(seq=seq))


async def read_chunk(request: web.Request) -> bytes:
    """Read the next part of the body; a body that cannot be decompressed or was cut off is a 400."""
    try:
        return await request.content.readany()
    except RequestPayloadError as error:
        REJECTIONS.labels("invalid_encoding").inc()
        log.warning("batch.invalid_encoding", encoding=request.headers.get("Content-Encoding", ""), error=str(error))
        raise ProtocolError(
            code="invalid_encoding",
            message="The body could not be read: it is cut off or not valid for its Content-Encoding. "
            "Send it again, compressed with gzip or not at all.",
        ) from None


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read the body, decompressed, and raise a 413 ProtocolError once it passes `limit` bytes.

    aiohttp decompresses a body sent with `Content-Encoding: gzip` (or deflate, br,
    zstd) while it is read, so the limit applies to the decompressed size, and a
    small compressed body cannot expand past it.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await read_chunk(request):
        size += len(chunk)
        if size > limit:
            REJECTIONS.labels("body_too_large").inc()
            raise ProtocolError(
                code="body_too_large",
                message=f"The body is larger than {limit} bytes once decompressed. Send smaller batches.",
                status=413,
                details={"maxBytes": limit},
            )
        chunks.append(chunk)
    return b"".join(chunks)


def bus_unavailable(reason: str) -> ProtocolError:
    PUBLISH_ERRORS.labels(reason).inc()
    REJECTIONS.labels("bus_unavailable").inc()
    return ProtocolError(
        code="bus_unavailable",
        message="The event bus did not acknowledge the batch. Retry after the Retry-After delay.",
        status=503,
        details={"retryAfterSeconds": int(RETRY_AFTER_SECONDS)},
    )


async def publish(request: web.Request, message: EventBatch, payload: bytes):
    """Publish a batch and wait for JetStream's acknowledgement; raise a 503 ProtocolError when the bus cannot take it.

    While NATS is disconnected the 503 comes at once: nats-py would otherwise keep
    the publish in its reconnect buffer and the request would wait for the timeout.
    """
    settings = request.app[SETTINGS]
    message_id = f"{message.session_id}:{message.tab_id}:{message.seq}"
    if not request.app[NATS].is_connected:
        log.warning(
            "batch.publish_failed",
            project_id=message.project_id,
            session_id=message.session_id,
            seq=message.seq,
            error="NotConnected",
        )
        raise bus_unavailable("NotConnected")
    started = time.perf_counter()
    try:
        ack = await request.app[JS].publish(
            subjects.events(message.project_id, message.session_id),
            payload,
            timeout=settings.publish_timeout_seconds,
            headers={"Nats-Msg-Id": message_id},
        )
    except (NatsError, TimeoutError) as exc:
        reason = type(exc).__name__
        log.warning(
            "batch.publish_failed",
            project_id=message.project_id,
            session_id=message.session_id,
            seq=message.seq,
            error=reason,
        )
        raise bus_unavailable(reason) from None
    PUBLISH_LATENCY.observe(time.perf_counter() - started)
    return ack


async def save_snapshot_pointer(request: web.Request, message: EventBatch, stream_seq: int) -> None:
    pointer = SnapshotPointer(
        stream_seq=stream_seq, batch_seq=message.seq, tab_id=message.tab_id, timestamp=message.received_at
    )
    kv = await request.app[JS].key_value(subjects.SNAPSHOT_BUCKET)
    await kv.put(subjects.snapshot_key(message.session_id), encode(pointer))


@web.middleware
async def retry_after_middleware(request: web.Request, handler):
    response = await handler(request)
    if response.status in (429, 503):
        response.headers.setdefault("Retry-After", RETRY_AFTER_SECONDS)
    return response


@web.middleware
async def bus_error_middleware(request: web.Request, handler):
    """Turn a NATS failure outside a publish (project lookup, live registry) into a 503 rather than a 500."""
    try:
        return await handler(request)
    except (NatsError, TimeoutError) as exc:
        log.warning("ingest.bus_failed", path=request.path, error=type(exc).__name__, detail=str(exc))
        raise bus_unavailable(type(exc).__name__) from None


async def run_presence(app: web.Application) -> AsyncIterator[None]:
    """Publish the live presence every `presence_interval_seconds`, and once more on shutdown."""
    registry = app[REGISTRY]
    task = asyncio.create_task(registry.publish_presence_forever(app[SETTINGS].presence_interval_seconds))
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    try:
        await registry.publish_presence()
    except Exception as exc:
        log.warning("registry.presence_failed", error=type(exc).__name__)


def create_app(*, settings: IngestSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the ingest application; mount it under `/ingest`."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            tracker_cors_middleware(),
            retry_after_middleware,
            error_middleware("ingest"),
            rate_limit_middleware,
            bus_error_middleware,
        ],
    )
    js = nc.jetstream()
    app[SETTINGS] = settings
    app[NATS] = nc
    app[JS] = js
    app[SIGNER] = signer
    app[PROJECTS] = ProjectDirectory(js=js)
    app[REGISTRY] = LiveRegistryWriter(
        js=js,
        nc=nc,
        refresh_seconds=settings.registry_refresh_seconds,
        store_heartbeat_seconds=settings.heartbeat_store_seconds,
        metadata_key_limit=settings.metadata_key_limit,
    )
    app[CLIENT_LOCATOR] = ClientLocator(
        locator=open_geo_locator(enabled=settings.geoip_enabled, database=settings.geoip_database),
        trusted_proxies=settings.trusted_proxies,
    )
    app.cleanup_ctx.append(run_presence)
    app.router.add_post("/v1/web/start", start_session)
    app.router.add_post("/v1/web/i", ingest_batch)
    access.add_routes(app, settings=settings, projects=app[PROJECTS], nc=nc, signer=signer)
    return app
