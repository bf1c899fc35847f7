"""Routes of the ingest service, mounted under `/ingest`."""

from __future__ import annotations

import asyncio
import secrets
import time

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from prometheus_client import Counter, Histogram
from tandem_protocol import (
    EventBatch,
    IngestBatchRequest,
    IngestBatchResponse,
    LiveSession,
    ProtocolError,
    SnapshotPointer,
    StartRequest,
    StartResponse,
    decode,
    encode,
    subjects,
)
from tandem_runtime.bus import MAX_BATCH_MESSAGE_BYTES
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.http import cors_middleware, error_middleware, json_response
from tandem_runtime.tokens import TokenSigner, bearer_token

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

SESSIONS_STARTED = Counter("tandem_ingest_sessions_started_total", "Sessions started or resumed.", ["resumed"])
BATCHES = Counter("tandem_ingest_batches_total", "Batches accepted onto the bus.", ["duplicate"])
EVENTS = Counter("tandem_ingest_events_total", "rrweb events accepted onto the bus.")
BYTES = Counter("tandem_ingest_bytes_total", "Request body bytes of accepted batches.")
REJECTIONS = Counter("tandem_ingest_rejections_total", "Requests rejected, by reason.", ["reason"])
PUBLISH_LATENCY = Histogram(
    "tandem_bus_publish_duration_seconds",
    "Time for JetStream to acknowledge a publish.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
PUBLISH_ERRORS = Counter("tandem_bus_publish_errors_total", "Publishes that failed, by reason.", ["reason"])

RETRY_AFTER_SECONDS = "2"


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

    resumed = await resume_session(request, start, project.id)
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
    if start.user_id is not None:
        session.user_id = start.user_id
    session.metadata.update(start.metadata)
    return session


def new_live_session(request: web.Request, start: StartRequest, project_id: str) -> LiveSession:
    software = describe(request.headers.get("User-Agent", ""))
    now = now_ms()
    return LiveSession(
        session_id=new_session_id(),
        project_id=project_id,
        tab_id=start.tab_id,
        user_id=start.user_id,
        user_anonymous_id=start.user_anonymous_id,
        metadata=dict(start.metadata),
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
        screen=start.screen,
        timezone=start.timezone,
        language=start.language,
    )


async def ingest_batch(request: web.Request) -> web.Response:
    try:
        claims = request.app[SIGNER].verify_session(bearer_token(request.headers.get("Authorization")))
    except ProtocolError as error:
        REJECTIONS.labels(error.code).inc()
        raise
    body = await request.read()
    try:
        batch = decode(IngestBatchRequest, body, what="batch")
    except ProtocolError as error:
        REJECTIONS.labels(error.code).inc()
        raise
    if batch.session_id is not None and batch.session_id != claims.session_id:
        REJECTIONS.labels("session_mismatch").inc()
        raise ProtocolError(
            code="session_mismatch",
            message="The token belongs to another session than the batch's sessionID. Send each session's batches with its own token.",
            status=403,
        )
    if batch.tab_id != claims.tab_id:
        REJECTIONS.labels("tab_mismatch").inc()
        raise ProtocolError(
            code="tab_mismatch",
            message="The token belongs to another tab than the batch's tabId. Send each tab's batches with its own token.",
            status=403,
        )

    received_at = now_ms()
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
            message=f"The batch is {len(payload)} bytes on the bus, over the limit of {MAX_BATCH_MESSAGE_BYTES}. Split it.",
            status=413,
            details={"maxBytes": MAX_BATCH_MESSAGE_BYTES},
        )

    ack = await publish(request, message, payload)
    BATCHES.labels(str(ack.duplicate).lower()).inc()
    if not ack.duplicate:
        EVENTS.inc(len(batch.events))
        BYTES.inc(len(body))
        if message.has_meta():
            await save_snapshot_pointer(request, message, ack.seq)
        await request.app[REGISTRY].record_batch(claims.project_id, claims.session_id, batch.events, received_at)
    return json_response(IngestBatchResponse(seq=batch.seq))


async def publish(request: web.Request, message: EventBatch, payload: bytes):
    """Publish a batch and wait for JetStream's acknowledgement; answer 503 when the bus cannot take it."""
    settings = request.app[SETTINGS]
    message_id = f"{message.session_id}:{message.tab_id}:{message.seq}"
    started = time.perf_counter()
    try:
        ack = await request.app[JS].publish(
            subjects.events(message.project_id, message.session_id),
            payload,
            timeout=settings.publish_timeout_seconds,
            headers={"Nats-Msg-Id": message_id},
        )
    except (NatsTimeoutError, asyncio.TimeoutError, NoRespondersError, NoStreamResponseError, ConnectionClosedError) as exc:
        reason = type(exc).__name__
        PUBLISH_ERRORS.labels(reason).inc()
        REJECTIONS.labels("bus_unavailable").inc()
        log.warning(
            "batch.publish_failed", project_id=message.project_id, session_id=message.session_id, seq=message.seq, error=reason
        )
        raise ProtocolError(
            code="bus_unavailable",
            message="The event bus did not acknowledge the batch. Retry after the Retry-After delay.",
            status=503,
            details={"retryAfterSeconds": int(RETRY_AFTER_SECONDS)},
        ) from None
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
    if response.status == 503:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return response


def create_app(*, settings: IngestSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the ingest application; mount it under `/ingest`."""
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[cors_middleware(), retry_after_middleware, error_middleware("ingest")],
    )
    js = nc.jetstream()
    app[SETTINGS] = settings
    app[NATS] = nc
    app[JS] = js
    app[SIGNER] = signer
    app[PROJECTS] = ProjectDirectory(js=js)
    app[REGISTRY] = LiveRegistryWriter(js=js, refresh_seconds=settings.registry_refresh_seconds)
    app.router.add_post("/v1/web/start", start_session)
    app.router.add_post("/v1/web/i", ingest_batch)
    return app
