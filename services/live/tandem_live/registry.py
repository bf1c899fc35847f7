"""The reading side of the live-session registry: a mirror of the key-value bucket in each live pod."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from nats.js import JetStreamContext
from pydantic import ValidationError
from tandem_protocol import LiveSession, decode, subjects
from tandem_protocol.errors import ProtocolError

log = structlog.get_logger(__name__)

Listener = Callable[[str, LiveSession | None, str], None]
"""Called with (project_id, session or None when removed, session_id)."""


class LiveRegistry:
    """Keeps every live session in memory, fed by a watch on the bucket, and tells listeners of changes."""

    def __init__(self, *, js: JetStreamContext, timeout_seconds: float) -> None:
        self._js = js
        self._timeout_ms = timeout_seconds * 1000
        self._by_project: dict[str, dict[str, LiveSession]] = {}
        self._project_of: dict[str, str] = {}
        self._listeners: set[Listener] = set()
        self.ready = asyncio.Event()

    def sessions(self, project_id: str) -> list[LiveSession]:
        return sorted(self._by_project.get(project_id, {}).values(), key=lambda s: s.started_at, reverse=True)

    def find(self, session_id: str) -> LiveSession | None:
        project_id = self._project_of.get(session_id)
        if project_id is None:
            return None
        return self._by_project.get(project_id, {}).get(session_id)

    def count(self) -> int:
        return len(self._project_of)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    async def run(self) -> None:
        """Watch the bucket and sweep out silent sessions, until cancelled."""
        sweeper = asyncio.create_task(self._sweep_forever())
        try:
            while True:
                try:
                    await self._watch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("registry.watch_failed", error=str(exc))
                    await asyncio.sleep(1.0)
        finally:
            sweeper.cancel()

    async def _watch(self) -> None:
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    self.ready.set()
                    continue
                self._apply(entry.key, entry.value, entry.operation)
        finally:
            await watcher.stop()

    def _apply(self, key: str, value: bytes | None, operation: str | None) -> None:
        project_id, _, session_id = key.partition(".")
        if operation in ("DEL", "PURGE") or not value:
            self._remove(project_id, session_id)
            return
        try:
            session = decode(LiveSession, value)
        except (ProtocolError, ValidationError) as exc:
            log.warning("registry.invalid_entry", key=key, error=str(exc))
            return
        if self._is_expired(session):
            self._remove(project_id, session_id)
            return
        self._by_project.setdefault(project_id, {})[session_id] = session
        self._project_of[session_id] = project_id
        self._notify(project_id, session, session_id)

    def _remove(self, project_id: str, session_id: str) -> None:
        sessions = self._by_project.get(project_id, {})
        if sessions.pop(session_id, None) is not None:
            self._project_of.pop(session_id, None)
            self._notify(project_id, None, session_id)

    def _is_expired(self, session: LiveSession) -> bool:
        return time.time() * 1000 - session.last_seen_at > self._timeout_ms

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for project_id, sessions in list(self._by_project.items()):
                for session in [s for s in sessions.values() if self._is_expired(s)]:
                    self._remove(project_id, session.session_id)

    def _notify(self, project_id: str, session: LiveSession | None, session_id: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(project_id, session, session_id)
            except Exception:
                log.exception("registry.listener_failed", project_id=project_id, session_id=session_id)
