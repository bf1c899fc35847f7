"""The writing side of the live-session registry: one key-value entry per live session.

Each ingest pod keeps the entries it wrote lately, so that a batch changes the
bucket only when something visible changed or the entry needs its heartbeat.
"""

from __future__ import annotations

import time

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from tandem_protocol import LiveSession, RrwebEvent, decode, encode, subjects
from tandem_protocol.models import RrwebEventType

log = structlog.get_logger(__name__)

MAX_CACHED_SESSIONS = 100_000


class LiveRegistryWriter:
    def __init__(self, *, js: JetStreamContext, refresh_seconds: float) -> None:
        self._js = js
        self._refresh_seconds = refresh_seconds
        self._entries: dict[str, tuple[LiveSession, float]] = {}

    async def get(self, project_id: str, session_id: str) -> LiveSession | None:
        cached = self._entries.get(session_id)
        if cached:
            return cached[0]
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        try:
            entry = await kv.get(subjects.live_key(project_id, session_id))
        except KeyNotFoundError:
            return None
        return decode(LiveSession, entry.value) if entry.value else None

    async def put(self, session: LiveSession) -> None:
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        await kv.put(subjects.live_key(session.project_id, session.session_id), encode(session))
        if len(self._entries) >= MAX_CACHED_SESSIONS:
            self._entries.clear()
        self._entries[session.session_id] = (session, time.monotonic())

    async def record_batch(self, project_id: str, session_id: str, events: list[RrwebEvent], now_ms: int) -> None:
        """Apply a batch's page, user, metadata and visibility signals to the session's entry."""
        session = await self.get(project_id, session_id)
        if session is None:
            log.warning("registry.batch_without_session", project_id=project_id, session_id=session_id)
            return
        changed = apply_signals(session, events)
        session.last_seen_at = now_ms
        cached = self._entries.get(session_id)
        stale = cached is None or time.monotonic() - cached[1] >= self._refresh_seconds
        if changed or stale:
            await self.put(session)


def apply_signals(session: LiveSession, events: list[RrwebEvent]) -> bool:
    """Update `session` in place from the tracker's `tandem.*` custom events; tell whether anything changed."""
    if not any(event.type == RrwebEventType.CUSTOM for event in events):
        return False
    before = session.model_dump()
    for event in events:
        tag = event.custom_tag()
        if tag is None:
            continue
        payload = event.data.get("payload") if isinstance(event.data, dict) else None
        if not isinstance(payload, dict):
            continue
        if tag == "tandem.page":
            session.url = str(payload.get("url", ""))[:2048]
            session.title = str(payload.get("title", ""))[:2048]
            session.active = True
        elif tag == "tandem.user" and payload.get("userID") is not None:
            session.user_id = str(payload["userID"])[:256]
        elif tag == "tandem.anonymous" and payload.get("userAnonymousID") is not None:
            session.user_anonymous_id = str(payload["userAnonymousID"])[:256]
        elif tag == "tandem.metadata" and isinstance(payload.get("key"), str):
            session.metadata[payload["key"][:128]] = str(payload.get("value", ""))[:1024]
        elif tag == "tandem.visibility":
            session.active = bool(payload.get("visible", True))
    return session.model_dump() != before
