"""The audit trail: typed assist events from the bus into ClickHouse, and the admin API that reads them.

The live service publishes `watch.started` and `watch.stopped`; the signal service
publishes consent requests and answers, calls and control; the ingest service
publishes the answers to viewing-consent requests. A durable JetStream consumer
writes every event to `assist_audit`, with `duration_ms` on the events that end
something: the time since the event that started it.

    GET /api/v1/audit?agent=&session=&project=&kind=&from=&to=&limit=&offset=
    GET /api/v1/audit/totals?agent=&project=&from=&to=
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from prometheus_client import Counter
from pydantic import ValidationError
from tandem_protocol import ProtocolError, subjects
from tandem_protocol.signal import AssistEvent
from tandem_runtime.access import Permission, requires
from tandem_runtime.http import json_response

from tandem_sessions.api import RUNTIME, int_parameter, invalid_parameter, time_parameter
from tandem_sessions.store.driver import ClickHouse, StoreError

log = structlog.get_logger(__name__)

AUDIT_EVENTS = Counter(
    "tandem_audit_events_total", "Assist events handled by the audit consumer, by outcome.", ["outcome"]
)

ASSIST_STREAM_MAX_AGE_SECONDS = 30 * 86_400.0
"""Kept by the stream when this service creates it; the signal service's setting wins once it starts."""
FETCH_MESSAGES = 256
MAX_TIME_MS = 10_000_000_000_000
"""2286-11-20 in milliseconds since the epoch: inside DateTime64(3)'s range, which ends in 2299."""
FETCH_TIMEOUT_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0

COLUMNS = (
    "event_id",
    "project_id",
    "session_id",
    "kind",
    "agent_id",
    "agent_name",
    "consent_kind",
    "outcome",
    "reason",
    "request_id",
    "call_id",
    "watch_id",
    "at",
    "duration_ms",
    "received_at",
)

STARTS = {
    "watch.stopped": "watch.started",
    "call.ended": "call.started",
    "call.left": "call.joined",
    "control.ended": "control.started",
    "consent.answered": "consent.requested",
}
"""The event each ending event is measured from."""


async def ensure_assist_stream(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create the assist events stream if no service did yet; an existing stream is left as it is."""
    try:
        await js.stream_info(subjects.ASSIST_STREAM)
        return
    except NotFoundError:
        pass
    config = StreamConfig(
        name=subjects.ASSIST_STREAM,
        subjects=[subjects.assist_events()],
        storage=StorageType.FILE,
        max_age=ASSIST_STREAM_MAX_AGE_SECONDS,
        num_replicas=replicas,
    )
    with contextlib.suppress(BadRequestError):  # another pod created it meanwhile
        await js.add_stream(config)


def matches_start(end: AssistEvent, start: AssistEvent) -> bool:
    """Tell whether `start` is the event that `end` closes."""
    if STARTS.get(end.kind) != start.kind or start.session_id != end.session_id or start.at > end.at:
        return False
    if end.kind == "watch.stopped":
        return start.watch_id == end.watch_id
    if end.kind == "call.ended":
        return start.call_id == end.call_id
    if end.kind == "call.left":
        return start.call_id == end.call_id and start.agent_id == end.agent_id
    if end.kind == "control.ended":
        return start.agent_id == end.agent_id
    return start.request_id == end.request_id


def start_condition(end: AssistEvent) -> tuple[str, dict[str, Any]]:
    """SQL condition and parameters that find the start of `end` in the table."""
    if end.kind == "watch.stopped":
        return "watch_id = {key:String}", {"key": end.watch_id or ""}
    if end.kind == "call.ended":
        return "call_id = {key:String}", {"key": end.call_id or ""}
    if end.kind == "call.left":
        return "call_id = {key:String} AND agent_id = {agent:String}", {"key": end.call_id or "", "agent": end.agent_id}
    if end.kind == "control.ended":
        return "agent_id = {agent:String}", {"agent": end.agent_id}
    return "request_id = {key:String}", {"key": end.request_id or ""}


class AuditWriter:
    """Writes assist events to `assist_audit`, measuring each ending event from its start."""

    def __init__(self, db: ClickHouse) -> None:
        self._db = db

    async def write(self, events: list[AssistEvent]) -> None:
        rows = []
        for index, event in enumerate(events):
            if event.duration_ms is None and event.kind in STARTS:
                event.duration_ms = await self._duration(event, events[:index])
            rows.append(row_of(event))
        await self._db.insert("assist_audit", rows, COLUMNS)

    async def _duration(self, end: AssistEvent, earlier: list[AssistEvent]) -> int | None:
        for start in reversed(earlier):
            if matches_start(end, start):
                return end.at - start.at
        condition, parameters = start_condition(end)
        rows = await self._db.query(
            "SELECT toUnixTimestamp64Milli(max(at)), count() FROM assist_audit "
            "WHERE project_id = {project:String} AND session_id = {session:String} AND kind = {kind:String} "
            f"AND at <= fromUnixTimestamp64Milli({{end:Int64}}) AND {condition}",
            {
                "project": end.project_id,
                "session": end.session_id,
                "kind": STARTS[end.kind],
                "end": end.at,
                **parameters,
            },
        )
        if not rows or not rows[0][1]:
            log.warning("audit.start_not_found", kind=end.kind, session_id=end.session_id, agent_id=end.agent_id)
            return None
        return end.at - rows[0][0]


def row_of(event: AssistEvent) -> list[Any]:
    return [
        event.event_id,
        event.project_id,
        event.session_id,
        event.kind,
        event.agent_id,
        event.agent_name,
        event.consent_kind or "",
        event.outcome or "",
        event.reason or "",
        event.request_id or "",
        event.call_id or "",
        event.watch_id or "",
        event.at,
        event.duration_ms,
        int(time.time() * 1000),
    ]


class AuditConsumer:
    """Fetches assist events from a durable consumer and writes each fetch in one insert."""

    def __init__(self, *, js: JetStreamContext, writer: AuditWriter, durable: str, replicas: int = 1) -> None:
        self._js = js
        self._writer = writer
        self._durable = durable
        self._replicas = replicas
        self._subscription: JetStreamContext.PullSubscription | None = None
        self.stored = 0

    async def start(self) -> None:
        await ensure_assist_stream(self._js, replicas=self._replicas)
        config = ConsumerConfig(
            durable_name=self._durable,
            filter_subject=subjects.assist_events(),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=60.0,
            max_ack_pending=FETCH_MESSAGES * 4,
        )
        await self._js.add_consumer(subjects.ASSIST_STREAM, config)
        self._subscription = await self._js.pull_subscribe_bind(durable=self._durable, stream=subjects.ASSIST_STREAM)
        log.info("audit.consumer_started", durable=self._durable)

    async def run(self) -> None:
        """Fetch and write until cancelled; a write that fails is retried after RETRY_DELAY_SECONDS."""
        assert self._subscription is not None, "AuditConsumer.start() was not awaited"
        while True:
            try:
                messages = await self._subscription.fetch(FETCH_MESSAGES, timeout=FETCH_TIMEOUT_SECONDS)
            except (TimeoutError, NatsTimeoutError):
                # nats-py's fetch can turn the cancellation of this task into a timeout.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                continue
            try:
                await self.handle(messages)
            except StoreError as error:
                log.warning("audit.write_failed", error=error.message, code=error.code, messages=len(messages))
                for msg in messages:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_DELAY_SECONDS)
                await asyncio.sleep(RETRY_DELAY_SECONDS)

    async def handle(self, messages: Iterable[Msg]) -> None:
        events: list[AssistEvent] = []
        valid: list[Msg] = []
        for msg in messages:
            try:
                events.append(AssistEvent.model_validate_json(msg.data))
                valid.append(msg)
            except ValidationError as error:
                AUDIT_EVENTS.labels("invalid").inc()
                log.warning("audit.event_invalid", subject=msg.subject, error=str(error.errors(include_url=False)[:2]))
                await msg.term()
        if not events:
            return
        await self._writer.write(events)
        for msg in valid:
            await msg.ack()
        AUDIT_EVENTS.labels("stored").inc(len(events))
        self.stored += len(events)

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        log.info("audit.consumer_stopped", stored=self.stored)


# The API ---------------------------------------------------------------------------------------


@dataclass
class AuditFilter:
    where: str
    parameters: dict[str, Any]


def audit_filter(request: web.Request) -> AuditFilter:
    """Build the WHERE clause from `agent`, `session`, `project`, `kind`, `from` and `to`."""
    conditions = ["1"]
    parameters: dict[str, Any] = {}
    agent = request.query.get("agent", "")
    if agent:
        conditions.append("(agent_id = {agent:String} OR agent_name = {agent:String})")
        parameters["agent"] = agent[:128]
    for name, column in (("session", "session_id"), ("project", "project_id"), ("kind", "kind")):
        value = request.query.get(name, "")
        if value:
            conditions.append(f"{column} = {{{name}:String}}")
            parameters[name] = value[:128]
    from_ms = clamp_time(time_parameter(request, "from"))
    to_ms = clamp_time(time_parameter(request, "to"))
    if from_ms is not None and to_ms is not None and from_ms > to_ms:
        raise invalid_parameter("from", "from is after to. Swap them.")
    if from_ms is not None:
        conditions.append("at >= fromUnixTimestamp64Milli({from_ms:Int64})")
        parameters["from_ms"] = from_ms
    if to_ms is not None:
        conditions.append("at < fromUnixTimestamp64Milli({to_ms:Int64})")
        parameters["to_ms"] = to_ms
    return AuditFilter(where=" AND ".join(conditions), parameters=parameters)


def clamp_time(value: int | None) -> int | None:
    """Keep a time inside DateTime64(3)'s range, past which ClickHouse's conversion wraps around."""
    return None if value is None else min(max(value, 0), MAX_TIME_MS)


def store_of(request: web.Request) -> ClickHouse:
    runtime = request.app[RUNTIME]
    if runtime.store is None:
        raise ProtocolError(
            code="store_unavailable",
            message=f"{runtime.store_problem or 'The session store is not open.'} Try again later.",
            status=503,
        )
    return runtime.store.db


@requires(Permission.ADMIN)
async def list_events(request: web.Request) -> web.Response:
    db = store_of(request)
    selected = audit_filter(request)
    limit = int_parameter(request, "limit", 100, low=1, high=1000)
    offset = int_parameter(request, "offset", 0, low=0, high=1_000_000)
    events = await db.query_dicts(
        "SELECT event_id AS eventId, project_id AS projectId, session_id AS sessionId, kind, agent_id AS agentId, "
        "agent_name AS agentName, consent_kind AS consentKind, outcome, reason, request_id AS requestId, "
        "call_id AS callId, watch_id AS watchId, toUnixTimestamp64Milli(at) AS atMs, duration_ms AS durationMs "
        f"FROM assist_audit FINAL WHERE {selected.where} "
        "ORDER BY at DESC, event_id LIMIT {limit:UInt32} OFFSET {offset:UInt32}",
        {**selected.parameters, "limit": limit, "offset": offset},
    )
    for event in events:
        # Named atMs in SQL: an alias `at` would replace the column `at` in the WHERE clause.
        event["at"] = event.pop("atMs")
    total = await db.query(f"SELECT count() FROM assist_audit FINAL WHERE {selected.where}", selected.parameters)
    return json_response({"events": events, "total": total[0][0], "limit": limit, "offset": offset})


@requires(Permission.ADMIN)
async def agent_totals(request: web.Request) -> web.Response:
    """Per agent: how often and how long they watched, called and controlled, and how users answered."""
    db = store_of(request)
    selected = audit_filter(request)
    agents = await db.query_dicts(
        "SELECT agent_id AS agentId, argMax(agent_name, at) AS agentName, "
        "countIf(kind = 'watch.started') AS watches, sumIf(duration_ms, kind = 'watch.stopped') AS watchMs, "
        "countIf(kind = 'call.joined') AS calls, sumIf(duration_ms, kind = 'call.left') AS callMs, "
        "countIf(kind = 'control.started') AS controls, sumIf(duration_ms, kind = 'control.ended') AS controlMs, "
        "countIf(kind = 'consent.requested') AS consentRequests, "
        "countIf(kind = 'consent.answered' AND outcome = 'accepted') AS consentAccepted, "
        "countIf(kind = 'consent.answered' AND outcome = 'declined') AS consentDeclined, "
        "countIf(kind = 'consent.answered' AND outcome IN ('timeout', 'cancelled')) AS consentUnanswered, "
        "uniqExact(session_id) AS sessions "
        f"FROM assist_audit FINAL WHERE {selected.where} AND agent_id != '' "
        "GROUP BY agent_id ORDER BY agentName",
        selected.parameters,
    )
    for row in agents:
        for name, value in row.items():
            if name not in ("agentId", "agentName") and value is not None:
                row[name] = int(value)
    return json_response({"agents": agents})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", list_events)
    app.router.add_get("/v1/audit/totals", agent_totals)
