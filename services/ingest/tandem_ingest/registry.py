"""The writing side of the live-session registry: one key-value entry per live session, and presence.

Each ingest pod caches the entries it wrote lately with their bucket revision. A
batch then changes the bucket only when something visible changed, or when the
entry's `lastSeenAt` is older than `refresh_seconds`. Every update names the
revision it read (compare-and-set), so that a write never overwrites a newer
one: on a conflict the pod reads the entry again and applies the batch to it.

Between two writes, the live pods learn from presence that a session still
sends: the pod gathers the sessions it received batches from and publishes them
once per `presence_interval_seconds` on a core NATS subject
(`tandem_protocol.presence`). A heartbeat then costs a dictionary update. With
the default settings and a heartbeat every 10 s, the bucket takes one write per
session every 20 s, where each heartbeat used to cost two JetStream publishes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from prometheus_client import Counter
from tandem_protocol import LiveSession, RrwebEvent, decode, encode, subjects
from tandem_protocol.models import RrwebEventType
from tandem_protocol.presence import MAX_PRESENCE_SESSIONS, LivePresence

from tandem_ingest.enrichment import merge_metadata

log = structlog.get_logger(__name__)

MAX_CACHED_SESSIONS = 100_000
MAX_WRITE_ATTEMPTS = 3
MAX_WARNED_SESSIONS = 10_000

REGISTRY_WRITES = Counter(
    "tandem_ingest_registry_writes_total",
    "Writes of live-session entries to the bucket, by reason (start, change, heartbeat).",
    ["reason"],
)
REGISTRY_CONFLICTS = Counter(
    "tandem_ingest_registry_conflicts_total",
    "Live-session writes retried because another writer changed the entry first.",
)
PRESENCE_SESSIONS = Counter(
    "tandem_ingest_presence_sessions_total",
    "Sessions reported as still sending in presence messages to the live pods.",
)
PRESENCE_ERRORS = Counter(
    "tandem_ingest_presence_errors_total",
    "Presence messages that could not be published, and were dropped.",
)
METADATA_KEYS_DROPPED = Counter(
    "tandem_ingest_metadata_keys_dropped_total",
    "Metadata keys dropped because the session already had its project's maximum number of keys.",
)


@dataclass
class CachedEntry:
    session: LiveSession
    revision: int
    """Bucket revision the session was read or written at; 0 for an entry that does not exist."""
    written_at: float = -math.inf
    """time.monotonic() of the last write from this pod."""
    stored_at: float = -math.inf
    """time.monotonic() of the last batch of the session this pod put on the events stream."""


class LiveRegistryWriter:
    """Create and refresh the live-session entries of LIVE_BUCKET from start requests and batches."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        nc: NatsClient | None = None,
        refresh_seconds: float,
        store_heartbeat_seconds: float = 60.0,
        metadata_key_limit: Callable[[str], int] = lambda project_id: 10,
    ) -> None:
        self._js = js
        self._nc = nc
        self._refresh_seconds = refresh_seconds
        self._store_heartbeat_seconds = store_heartbeat_seconds
        self._metadata_key_limit = metadata_key_limit
        self._entries: OrderedDict[str, CachedEntry] = OrderedDict()
        self._warned: set[str] = set()
        self._presence: dict[str, dict[str, int]] = {}
        """Project id to {session id: server time of the latest request} since the last presence message."""

    def heartbeat_needs_store(self, session_id: str) -> bool:
        """Tell whether an empty batch of the session goes on the events stream.

        One goes there every `store_heartbeat_seconds`, and whenever this pod does not
        know the session, so that the sessions service does not mark the recorded session
        ended while its tab stays open. The others only keep the session listed.
        """
        entry = self._entries.get(session_id)
        return entry is None or time.monotonic() - entry.stored_at >= self._store_heartbeat_seconds

    async def get(self, project_id: str, session_id: str) -> LiveSession | None:
        """Return the session's entry, from this pod's cache or the bucket, or None when there is none."""
        entry = self._entries.get(session_id) or await self._load(project_id, session_id)
        return entry.session if entry else None

    async def put(self, session: LiveSession) -> None:
        """Write a started or resumed session, whatever the bucket holds: its tab is the one that sends."""
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        revision = await kv.put(subjects.live_key(session.project_id, session.session_id), encode(session))
        REGISTRY_WRITES.labels("start").inc()
        self._remember(CachedEntry(session=session, revision=revision, written_at=time.monotonic()))

    async def record_batch(
        self, project_id: str, session_id: str, events: list[RrwebEvent], now_ms: int, *, stored: bool = True
    ) -> None:
        """Apply a batch's page, user, metadata, visibility and pagehide signals to the session's entry.

        `stored` is False for a batch kept off the events stream (most heartbeats).
        """
        entry = self._entries.get(session_id) or await self._load(project_id, session_id)
        if entry is None:
            self._warn_once(session_id, "registry.batch_without_session", project_id=project_id)
            return
        if stored:
            entry.stored_at = time.monotonic()
        self._note_presence(project_id, session_id, now_ms)
        limit = self._metadata_key_limit(project_id)
        for _ in range(MAX_WRITE_ATTEMPTS):
            changed, dropped = apply_signals(entry.session, events, now_ms, metadata_key_limit=limit)
            entry.session.last_seen_at = max(entry.session.last_seen_at, now_ms)
            self.count_dropped_metadata(project_id, session_id, dropped)
            if not changed and time.monotonic() - entry.written_at < self._refresh_seconds:
                self._remember(entry)
                return
            try:
                await self._store(entry)
                REGISTRY_WRITES.labels("change" if changed else "heartbeat").inc()
                return
            except KeyWrongLastSequenceError:
                REGISTRY_CONFLICTS.inc()
                fresh = await self._load(project_id, session_id)
                if fresh is not None:
                    fresh.stored_at = entry.stored_at
                    entry = fresh
                else:
                    # The live pods deleted the entry after a pagehide, but this batch shows the tab is
                    # still sending (a page restored from the back-forward cache): write it back.
                    entry.revision = 0
        log.warning(
            "registry.write_conflicts", project_id=project_id, session_id=session_id, attempts=MAX_WRITE_ATTEMPTS
        )

    # Presence ---------------------------------------------------------------------------

    def _note_presence(self, project_id: str, session_id: str, now_ms: int) -> None:
        sessions = self._presence.get(project_id)
        if sessions is None:
            sessions = self._presence[project_id] = {}
        sessions[session_id] = now_ms

    async def publish_presence(self) -> int:
        """Publish the sessions heard from since the last call, per project; return how many were sent.

        Presence is a hint on top of the bucket: while NATS is disconnected it is dropped,
        not queued, and the bucket's refreshed entries keep the sessions listed meanwhile.
        """
        pending, self._presence = self._presence, {}
        if self._nc is None or not pending:
            return 0
        if not self._nc.is_connected:
            PRESENCE_ERRORS.inc()
            return 0
        sent = 0
        for project_id, sessions in pending.items():
            items = list(sessions.items())
            for start in range(0, len(items), MAX_PRESENCE_SESSIONS):
                chunk = dict(items[start : start + MAX_PRESENCE_SESSIONS])
                message = LivePresence(project_id=project_id, last_seen=chunk)
                try:
                    await self._nc.publish(subjects.live_presence(project_id), encode(message))
                except (NatsError, OSError) as exc:
                    PRESENCE_ERRORS.inc()
                    log.warning("registry.presence_failed", project_id=project_id, error=type(exc).__name__)
                    continue
                sent += len(chunk)
        PRESENCE_SESSIONS.inc(sent)
        return sent

    async def publish_presence_forever(self, interval_seconds: float) -> None:
        """Publish presence every `interval_seconds` until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.publish_presence()
            except Exception:
                log.exception("registry.presence_failed")

    def count_dropped_metadata(self, project_id: str, session_id: str, dropped: int) -> None:
        """Count metadata keys a start request carried beyond the project's limit, and log it once per session."""
        if dropped:
            METADATA_KEYS_DROPPED.inc(dropped)
            limit = self._metadata_key_limit(project_id)
            self._warn_once(session_id, "session.metadata_keys_dropped", project_id=project_id, limit=limit)

    async def _store(self, entry: CachedEntry) -> None:
        """Write the entry if the bucket still has the revision it was read at, else raise KeyWrongLastSequenceError."""
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        key = subjects.live_key(entry.session.project_id, entry.session.session_id)
        payload = encode(entry.session)
        if entry.revision:
            entry.revision = await kv.update(key, payload, last=entry.revision)
        else:
            entry.revision = await kv.create(key, payload)
        entry.written_at = time.monotonic()
        self._remember(entry)

    async def _load(self, project_id: str, session_id: str) -> CachedEntry | None:
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        try:
            stored = await kv.get(subjects.live_key(project_id, session_id))
        except KeyNotFoundError:
            self._entries.pop(session_id, None)
            return None
        if not stored.value:
            return None
        return CachedEntry(session=decode(LiveSession, stored.value), revision=stored.revision or 0)

    def _remember(self, entry: CachedEntry) -> None:
        session_id = entry.session.session_id
        self._entries[session_id] = entry
        self._entries.move_to_end(session_id)
        while len(self._entries) > MAX_CACHED_SESSIONS:
            self._entries.popitem(last=False)

    def _warn_once(self, session_id: str, event: str, **fields: object) -> None:
        """Log `event` once per session, so that a tracker repeating a mistake does not flood the log."""
        if session_id in self._warned:
            return
        if len(self._warned) >= MAX_WARNED_SESSIONS:
            self._warned.clear()
        self._warned.add(session_id)
        log.warning(event, session_id=session_id, **fields)


def apply_signals(
    session: LiveSession, events: list[RrwebEvent], now_ms: int, *, metadata_key_limit: int
) -> tuple[bool, int]:
    """Update `session` in place from the tracker's `tandem.*` custom events.

    Returns whether a field the live list shows changed, and how many new metadata
    keys were dropped for being over `metadata_key_limit`. A batch without
    `tandem.pagehide` clears the closing mark: the tab still sends, so a page
    that was reloaded or restored from the back-forward cache stays listed.
    """
    if not any(event.type == RrwebEventType.CUSTOM for event in events):
        # Most batches, heartbeats included, carry no tracker signal: only a closing mark can change.
        reopened = session.closing_at is not None
        session.closing_at = None
        return reopened, 0

    before = _visible_state(session)
    closing = False
    dropped = 0
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
        elif tag == "tandem.metadata" and isinstance(payload.get("key"), str) and payload["key"]:
            update = {payload["key"][:128]: str(payload.get("value", ""))[:1024]}
            dropped += merge_metadata(session.metadata, update, metadata_key_limit)
        elif tag == "tandem.visibility":
            session.active = bool(payload.get("visible", True))
        elif tag == "tandem.pagehide":
            closing = True
    if closing:
        session.closing_at = session.closing_at or now_ms
    else:
        session.closing_at = None
    return _visible_state(session) != before, dropped


def _visible_state(session: LiveSession) -> tuple:
    return (
        session.url,
        session.title,
        session.user_id,
        session.user_anonymous_id,
        tuple(session.metadata.items()),
        session.active,
        session.closing_at,
    )
