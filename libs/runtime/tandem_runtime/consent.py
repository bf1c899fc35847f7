"""Viewing consent (`sessionConfirm`): one record per session in a key-value bucket, shared by live and ingest.

The live service writes a `pending` record when an agent asks to watch; the tracker
reads it through ingest's `/v1/web/consent`, shows its dialog, and posts the answer,
which ingest writes as `accepted` or `declined`. Every change is published by NATS
on the key's own subject, which both services subscribe to while they wait.
Changes use compare-and-set on the entry's revision, so one answer wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from tandem_protocol import ProtocolError, decode, encode, subjects
from tandem_protocol.access import ConsentRecord
from tandem_protocol.signal import AssistEvent

log = structlog.get_logger(__name__)

MAX_WRITE_ATTEMPTS = 10


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return secrets.token_hex(8)


class ConsentStore:
    """Read, request, answer and wait for a session's viewing consent."""

    def __init__(self, *, nc: NatsClient) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()

    async def get(self, project_id: str, session_id: str) -> tuple[ConsentRecord | None, int]:
        """Return the record (None before the first request) and its revision (0 when none)."""
        kv = await self._js.key_value(subjects.CONSENT_BUCKET)
        try:
            entry = await kv.get(subjects.consent_key(project_id, session_id))
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision or 0
        return decode(ConsentRecord, entry.value, what="consent record"), entry.revision or 0

    async def request(
        self, *, project_id: str, session_id: str, agent_id: str, agent_name: str, timeout_seconds: float
    ) -> tuple[ConsentRecord, bool]:
        """Return the session's open request, creating one unless consent is granted or already asked for.

        The boolean is True when this call created the request, so that its caller
        publishes `consent.requested` once.
        """
        for _ in range(MAX_WRITE_ATTEMPTS):
            record, revision = await self.get(project_id, session_id)
            now = now_ms()
            if record is not None and (
                record.state == "accepted" or (record.state == "pending" and record.expires_at > now)
            ):
                return record, False
            fresh = ConsentRecord(
                project_id=project_id,
                session_id=session_id,
                state="pending",
                request_id=new_id(),
                agent_id=agent_id,
                agent_name=agent_name,
                requested_at=now,
                expires_at=now + int(timeout_seconds * 1000),
            )
            if await self._write(fresh, revision):
                return fresh, True
        raise busy(session_id)

    async def answer(
        self, project_id: str, session_id: str, *, request_id: str | None, accepted: bool
    ) -> tuple[ConsentRecord, ConsentRecord]:
        """Store the user's answer; return the record before and after.

        With `request_id`, it answers that pending request. Without one, `accepted`
        must be False, and it withdraws a consent given before.
        """
        for _ in range(MAX_WRITE_ATTEMPTS):
            record, revision = await self.get(project_id, session_id)
            check_answerable(record, request_id=request_id, accepted=accepted)
            assert record is not None
            state = "accepted" if accepted else "declined"
            answered = record.model_copy(update={"state": state, "answered_at": now_ms()})
            if await self._write(answered, revision):
                return record, answered
        raise busy(session_id)

    async def expire(self, record: ConsentRecord) -> ConsentRecord | None:
        """Mark a pending request that expired without a response; return it, or None when it changed meanwhile."""
        for _ in range(MAX_WRITE_ATTEMPTS):
            current, revision = await self.get(record.project_id, record.session_id)
            if current is None or current.request_id != record.request_id or current.state != "pending":
                return None
            expired = current.model_copy(update={"state": "expired", "answered_at": now_ms()})
            if await self._write(expired, revision):
                return expired
        return None

    async def wait_for_change(self, project_id: str, session_id: str, *, revision: int, timeout_seconds: float) -> None:
        """Return when the record's revision differs from `revision`, or after `timeout_seconds`."""
        changed = asyncio.Event()

        async def on_change(_msg: object) -> None:
            changed.set()

        subscription = await self._nc.subscribe(subjects.consent_updates(project_id, session_id), cb=on_change)
        try:
            # A change made between the caller's read and this subscription is caught here.
            _, current = await self.get(project_id, session_id)
            if current != revision:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=timeout_seconds)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def publish(self, event: AssistEvent) -> None:
        """Publish an audit event about this session's consent (see `publish_assist_event`)."""
        await publish_assist_event(self._js, event)

    async def _write(self, record: ConsentRecord, revision: int) -> bool:
        kv = await self._js.key_value(subjects.CONSENT_BUCKET)
        key = subjects.consent_key(record.project_id, record.session_id)
        try:
            if revision:
                await kv.update(key, encode(record), last=revision)
            else:
                await kv.create(key, encode(record))
        except KeyWrongLastSequenceError:
            return False
        return True


def check_answerable(record: ConsentRecord | None, *, request_id: str | None, accepted: bool) -> None:
    """Raise a 409 ProtocolError when the answer does not fit the record's state."""
    if request_id is None:
        if accepted:
            raise ProtocolError(
                code="invalid_request", message="An answer that accepts needs the requestId of the request it accepts."
            )
        if record is None or record.state != "accepted":
            state = record.state if record else "none"
            raise ProtocolError(
                code="consent_not_given",
                message=f"There is no consent to withdraw: the session's consent is {state!r}.",
                status=409,
            )
        return
    if record is None or record.request_id != request_id:
        raise ProtocolError(
            code="unknown_request",
            message=f"No watch request {request_id!r} waits for an answer. Poll /v1/web/consent for the current one.",
            status=409,
        )
    if record.state != "pending" or record.expires_at <= now_ms():
        raise ProtocolError(
            code="request_closed",
            message=f"Watch request {request_id!r} is closed (its state is {record.state!r}). Wait for a new one.",
            status=409,
        )


def busy(session_id: str) -> ProtocolError:
    return ProtocolError(
        code="consent_busy",
        message=f"The consent record of session {session_id!r} changed {MAX_WRITE_ATTEMPTS} times meanwhile. "
        "Try again.",
        status=503,
    )


def consent_event(
    record: ConsentRecord, kind: str, *, outcome: str | None = None, reason: str | None = None
) -> AssistEvent:
    """Return the audit event of a viewing-consent request or answer."""
    return AssistEvent(
        event_id=new_id(),
        kind=kind,
        project_id=record.project_id,
        session_id=record.session_id,
        agent_id=record.agent_id,
        agent_name=record.agent_name,
        consent_kind="watch",
        request_id=record.request_id,
        outcome=outcome,
        reason=reason,
        at=now_ms(),
    )


async def publish_assist_event(js: JetStreamContext, event: AssistEvent, *, timeout_seconds: float = 2.0) -> None:
    """Publish an audit event on the assist stream; log the failure rather than failing the caller.

    NOTE: an event that cannot be published (the stream is missing or NATS is down) is
    lost from the audit trail; the log line `assist_event.publish_failed` records it.
    """
    try:
        await js.publish(subjects.assist_event(event.project_id, event.kind), encode(event), timeout=timeout_seconds)
    except Exception as error:  # nats-py raises several unrelated types for a failed publish
        log.error(
            "assist_event.publish_failed",
            kind=event.kind,
            project_id=event.project_id,
            session_id=event.session_id,
            agent_id=event.agent_id,
            error=f"{type(error).__name__}: {error}",
        )
