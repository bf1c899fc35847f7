"""The reading side of the live-session registry: a mirror of the key-value bucket in each live pod.

Every live pod watches the whole bucket, so that all pods list the same sessions.
Ingest pods write an entry when the session starts or changes, and refresh its
`lastSeenAt` now and then; in between, their presence messages (a core NATS
subject, `tandem_protocol.presence`) tell every live pod which sessions still
send. A session leaves the list when its entry is deleted, when it sent nothing
for `timeout_seconds` (`inactive_timeout_seconds` while its tab is hidden,
because browsers throttle the timers of hidden tabs), or `closing_grace_seconds`
after its tab's pagehide with no batch since. Closed sessions are also deleted
from the bucket, with a compare-and-set delete that fails when a batch revived
the entry meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError
from pydantic import ValidationError
from tandem_protocol import LiveSession, decode, subjects
from tandem_protocol.errors import ProtocolError
from tandem_protocol.presence import LivePresence

from tandem_live.index import ProjectIndex

log = structlog.get_logger(__name__)

Listener = Callable[[str, LiveSession | None, str], None]
"""Called with (project_id, session or None when removed, session_id) when the list shows a change."""

INVISIBLE_FIELDS = frozenset({"last_seen_at"})
"""Fields whose change alone (a heartbeat) is not pushed to agents."""


@dataclass
class ProjectSessions:
    """A project's live sessions, indexed; `index.version` grows with every change an agent could see."""

    index: ProjectIndex = field(default_factory=ProjectIndex)
    revisions: dict[str, int] = field(default_factory=dict)

    @property
    def by_id(self) -> dict[str, LiveSession]:
        return self.index.by_id


class LiveRegistry:
    """Every live session in memory, fed by a watch on the bucket, with listeners called on each visible change."""

    def __init__(
        self,
        *,
        js: JetStreamContext,
        nc: NatsClient | None = None,
        timeout_seconds: float,
        inactive_timeout_seconds: float | None = None,
        closing_grace_seconds: float = 3.0,
        sweep_interval_seconds: float = 1.0,
    ) -> None:
        self._js = js
        self._nc = nc
        self._timeout_ms = timeout_seconds * 1000
        self._inactive_timeout_ms = (inactive_timeout_seconds or timeout_seconds) * 1000
        self._closing_grace_ms = closing_grace_seconds * 1000
        self._sweep_interval = sweep_interval_seconds
        self._projects: dict[str, ProjectSessions] = {}
        self._project_of: dict[str, str] = {}
        self._listeners: set[Listener] = set()
        self._deletes: set[asyncio.Task] = set()
        self.ready = asyncio.Event()

    # Reading ------------------------------------------------------------------------------

    def sessions(self, project_id: str) -> list[LiveSession]:
        """Return the project's sessions, newest start first."""
        return self.ordered(project_id)[::-1]

    def ordered(self, project_id: str) -> list[LiveSession]:
        """Return the project's sessions, oldest start first; the list is shared, do not change it."""
        return self.index(project_id).ordered()

    def index(self, project_id: str) -> ProjectIndex:
        """Return the project's indexed sessions (an empty index for a project without any); read only."""
        project = self._projects.get(project_id)
        return project.index if project else ProjectIndex()

    def version(self, project_id: str) -> int:
        project = self._projects.get(project_id)
        return project.index.version if project else 0

    def find(self, session_id: str) -> LiveSession | None:
        project_id = self._project_of.get(session_id)
        if project_id is None:
            return None
        return self._projects[project_id].by_id.get(session_id)

    def count(self) -> int:
        return len(self._project_of)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the mirror contains every entry the bucket had at start; return whether it does."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # Following the bucket -----------------------------------------------------------------

    async def run(self) -> None:
        """Watch the bucket and sweep out silent and closed sessions, until cancelled."""
        sweeper = asyncio.create_task(self._sweep_forever())
        presence = None
        if self._nc is not None:
            presence = await self._nc.subscribe(subjects.live_presence_all(), cb=self._on_presence)
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
            if presence is not None:
                try:
                    await presence.unsubscribe()
                except Exception as exc:
                    log.debug("registry.presence_unsubscribe_failed", error=str(exc))
            for task in list(self._deletes):
                task.cancel()

    async def _watch(self) -> None:
        kv = await self._js.key_value(subjects.LIVE_BUCKET)
        watcher = await kv.watchall()
        # Keys present when the watch starts; after a reconnection, entries missing from them are gone.
        seen: set[str] | None = set()
        try:
            async for entry in watcher:
                if entry is None:
                    # nats-py sends this "nothing more" marker when the consumer reports nothing
                    # pending, which can happen before the messages it already delivered are read:
                    # trust the marker only when the bucket is empty.
                    if seen is not None and not seen and await self._bucket_is_empty():
                        self._loaded(seen)
                        seen = None
                    continue
                if seen is not None:
                    seen.add(entry.key)
                self._apply(entry.key, entry.value, entry.operation, entry.revision or 0)
                if seen is not None and entry.delta == 0:
                    self._loaded(seen)
                    seen = None
        finally:
            await watcher.stop()

    async def _bucket_is_empty(self) -> bool:
        info = await self._js.stream_info(f"KV_{subjects.LIVE_BUCKET}")
        return info.state.messages == 0

    def _loaded(self, seen: set[str]) -> None:
        """Mark the registry ready: the watch has read every entry the bucket held when it began."""
        self._forget_all_but(seen)
        self.ready.set()

    def _apply(self, key: str, value: bytes | None, operation: str | None, revision: int) -> None:
        project_id, _, session_id = key.partition(".")
        if operation in ("DEL", "PURGE") or not value:
            self._remove(project_id, session_id)
            return
        try:
            session = decode(LiveSession, value)
        except (ProtocolError, ValidationError) as exc:
            log.warning("registry.invalid_entry", key=key, error=str(exc))
            return
        project = self._projects.get(project_id)
        previous = project.by_id.get(session_id) if project is not None else None
        if previous is not None:
            # Presence may have moved lastSeenAt past the entry's, which is refreshed less often.
            session.last_seen_at = max(session.last_seen_at, previous.last_seen_at)
        if self._removal_reason(session, time.time() * 1000) is not None:
            self._remove(project_id, session_id)
            return

        if project is None:
            project = self._projects[project_id] = ProjectSessions()
        project.revisions[session_id] = revision
        if previous is not None and _same_for_agents(previous, session):
            # A heartbeat: keep the object agents were sent, so that identity still means "unchanged".
            previous.last_seen_at = session.last_seen_at
            return
        project.index.put(session)
        self._project_of[session_id] = project_id
        self._notify(project_id, session, session_id)

    def _remove(self, project_id: str, session_id: str) -> None:
        project = self._projects.get(project_id)
        if project is None or project.index.remove(session_id) is None:
            return
        project.revisions.pop(session_id, None)
        self._project_of.pop(session_id, None)
        self._notify(project_id, None, session_id)

    async def _on_presence(self, msg: Msg) -> None:
        """Move `lastSeenAt` forward for the listed sessions an ingest pod received batches from; notify no agent."""
        try:
            presence = decode(LivePresence, msg.data, what="presence message")
        except ProtocolError as exc:
            log.warning("registry.invalid_presence", error=exc.message)
            return
        project = self._projects.get(presence.project_id)
        if project is None:
            return
        by_id = project.by_id
        for session_id, seen_at in presence.last_seen.items():
            session = by_id.get(session_id)
            if session is not None and seen_at > session.last_seen_at:
                session.last_seen_at = seen_at

    def _forget_all_but(self, keys: set[str]) -> None:
        for project_id, project in list(self._projects.items()):
            for session_id in [s for s in project.by_id if f"{project_id}.{s}" not in keys]:
                self._remove(project_id, session_id)

    # Sweeping -----------------------------------------------------------------------------

    def _removal_reason(self, session: LiveSession, now_ms: float) -> str | None:
        if session.closing_at is not None and now_ms - session.closing_at > self._closing_grace_ms:
            return "closed"
        timeout = self._timeout_ms if session.active else self._inactive_timeout_ms
        if now_ms - session.last_seen_at > timeout:
            return "timed_out"
        return None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            self.sweep(time.time() * 1000)

    def sweep(self, now_ms: float) -> int:
        """Remove the sessions that timed out or closed; delete closed ones from the bucket. Returns how many left."""
        removed = 0
        for project_id, project in list(self._projects.items()):
            for session in list(project.by_id.values()):
                reason = self._removal_reason(session, now_ms)
                if reason is None:
                    continue
                revision = project.revisions.get(session.session_id, 0)
                self._remove(project_id, session.session_id)
                removed += 1
                if reason == "closed":
                    self._delete_later(project_id, session.session_id, revision)
        return removed

    def _delete_later(self, project_id: str, session_id: str, revision: int) -> None:
        task = asyncio.get_running_loop().create_task(self._delete(project_id, session_id, revision))
        self._deletes.add(task)
        task.add_done_callback(self._deletes.discard)

    async def _delete(self, project_id: str, session_id: str, revision: int) -> None:
        """Delete a closed session's entry unless it changed since `revision`; every pod tries, one succeeds."""
        try:
            kv = await self._js.key_value(subjects.LIVE_BUCKET)
            await kv.delete(subjects.live_key(project_id, session_id), last=revision)
        except APIError as exc:
            # Another pod deleted it first, or a batch wrote a newer revision: both are fine.
            log.debug("registry.delete_skipped", project_id=project_id, session_id=session_id, error=str(exc))
        except Exception as exc:
            log.warning("registry.delete_failed", project_id=project_id, session_id=session_id, error=str(exc))

    def _notify(self, project_id: str, session: LiveSession | None, session_id: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(project_id, session, session_id)
            except Exception:
                log.exception("registry.listener_failed", project_id=project_id, session_id=session_id)


async def cancel_and_wait(task: asyncio.Task, *, retry_seconds: float = 0.1) -> None:
    """Cancel `task` until it ends.

    NOTE: a pod stopped while its bucket watch starts sometimes lost one cancel() in tests
    (nats-py 2.16, Python 3.11). nats-py's requests use asyncio.wait_for, which on 3.11 can
    drop a cancellation that arrives as its inner future completes (CPython issue 86296).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=retry_seconds)


def _same_for_agents(old: LiveSession, new: LiveSession) -> bool:
    """Tell whether two versions of a session differ only in fields the live list does not show."""
    old_fields, new_fields = old.__dict__, new.__dict__
    return all(old_fields[name] == new_fields[name] for name in old_fields if name not in INVISIBLE_FIELDS)
