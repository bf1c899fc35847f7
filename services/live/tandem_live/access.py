"""Who may watch, viewing consent before a watch starts, and the watch audit events.

A watch of a session whose project sets `sessionConfirm` starts only once the user
accepted: the gate writes a pending consent record, tells the agent
`watch.pending`, and waits for the tracker's answer (see tandem_runtime.consent).
Until then no event of the session is read from the stream. An accepted consent
covers every agent for the rest of the session, until the user withdraws it,
which stops every watch of the session at once.

Every watch that starts publishes `watch.started`, and `watch.stopped` with its
duration when the agent unwatches or disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from pydantic import Field
from tandem_protocol import LiveSession, ProtocolError
from tandem_protocol.access import ConsentRecord
from tandem_protocol.signal import AssistEvent
from tandem_runtime.access import AUTHENTICATOR, Authenticator
from tandem_runtime.accounts import AccountGuard, follow_accounts
from tandem_runtime.consent import ConsentStore, consent_event, new_id, now_ms
from tandem_runtime.directory import AgentDirectory, ApiTokenDirectory, ProjectDirectory
from tandem_runtime.settings import ServiceSettings
from tandem_runtime.tokens import AgentClaims, TokenSigner

log = structlog.get_logger(__name__)


class LiveAccessSettings(ServiceSettings):
    watch_consent_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        le=600,
        description="Time a user has to accept an agent's watch request, for projects with sessionConfirm.",
    )


class Watcher(Protocol):
    """The agent connection, as the gate sees it."""

    claims: AgentClaims

    def send(self, frame: dict) -> None: ...

    async def stop_watch(self, session_id: str, *, reason: str) -> None: ...


StartWatch = Callable[[LiveSession], Awaitable[None]]


@dataclass
class OpenWatch:
    watch_id: str
    project_id: str
    started_at_ms: int
    started_at: float = field(default_factory=time.monotonic)
    consent_task: asyncio.Task | None = None
    """Follows the consent record of a session watched under consent, to stop the watch if it is withdrawn."""


class WatchGate:
    """Runs each agent's watch requests through viewing consent, and records watch starts and stops."""

    def __init__(self, *, nc: NatsClient, projects: ProjectDirectory, consent_timeout_seconds: float) -> None:
        self._consent = ConsentStore(nc=nc)
        self._projects = projects
        self._timeout = consent_timeout_seconds
        self._waiting: dict[tuple[int, str], asyncio.Task] = {}
        self._open: dict[tuple[int, str], OpenWatch] = {}

    def is_waiting(self, watcher: Watcher, session_id: str) -> bool:
        return (id(watcher), session_id) in self._waiting

    async def watch(self, watcher: Watcher, session: LiveSession, start: StartWatch) -> None:
        """Start the watch now, or once the user accepts when the project asks for consent."""
        project = await self._projects.by_id(session.project_id)
        if project is None:
            # Fail closed: without the project, whether the user must agree first is unknown.
            watcher.send(
                {
                    "type": "error",
                    "code": "unknown_project",
                    "message": f"Project {session.project_id!r} of session {session.session_id!r} not found, "
                    "so the session cannot be watched. Check that the project still exists.",
                    "details": {"sessionId": session.session_id},
                }
            )
            return
        if not project.session_confirm:
            await start(session)
            return

        claims = watcher.claims
        record, created = await self._consent.request(
            project_id=session.project_id,
            session_id=session.session_id,
            agent_id=claims.agent_id,
            agent_name=claims.name,
            timeout_seconds=self._timeout,
        )
        if record.state == "accepted":
            await start(session)
            return

        if created:
            await self._consent.publish(consent_event(record, "consent.requested"))
        watcher.send(
            {
                "type": "watch.pending",
                "sessionId": session.session_id,
                "requestId": record.request_id,
                "expiresAt": record.expires_at,
            }
        )

        key = (id(watcher), session.session_id)
        task = asyncio.create_task(self._wait_for_answer(watcher, session, record, start))
        self._waiting[key] = task
        task.add_done_callback(lambda _: self._waiting.pop(key, None))

    async def _wait_for_answer(
        self, watcher: Watcher, session: LiveSession, record: ConsentRecord, start: StartWatch
    ) -> None:
        try:
            current = await self._answer_of(record)
            if current.state == "accepted":
                await start(session)
                return
            code = "consent_timeout" if current.state == "expired" else "consent_declined"
            outcome = "did not answer in time" if current.state == "expired" else "declined"
            watcher.send(
                {
                    "type": "error",
                    "code": code,
                    "message": f"The user {outcome}: session {session.session_id!r} cannot be watched. "
                    "Ask again later or call the user.",
                    "details": {"sessionId": session.session_id, "requestId": record.request_id},
                }
            )
        except ProtocolError as error:
            watcher.send({"type": "error", **error.to_payload().model_dump()})
        except Exception:
            log.exception("watch.consent_wait_failed", session_id=session.session_id)

    async def _answer_of(self, record: ConsentRecord) -> ConsentRecord:
        """Wait until the request is answered or expires; mark it expired (and record that) when it does."""
        while True:
            current, revision = await self._consent.get(record.project_id, record.session_id)
            if current is None or current.request_id != record.request_id:
                # Another request replaced this one, which happens only after it was closed.
                return current or record.model_copy(update={"state": "expired"})
            if current.state != "pending":
                return current
            remaining = (current.expires_at - now_ms()) / 1000
            if remaining <= 0:
                expired = await self._consent.expire(current)
                if expired is not None:
                    await self._consent.publish(consent_event(expired, "consent.answered", outcome="timeout"))
                    return expired
                continue
            await self._consent.wait_for_change(
                record.project_id, record.session_id, revision=revision, timeout_seconds=remaining
            )

    async def started(self, watcher: Watcher, session: LiveSession) -> None:
        """Record the start of a watch; under consent, follow the consent to stop the watch when it is withdrawn."""
        opened = OpenWatch(watch_id=new_id(), project_id=session.project_id, started_at_ms=now_ms())
        self._open[(id(watcher), session.session_id)] = opened
        project = await self._projects.by_id(session.project_id)
        if project is not None and project.session_confirm:
            opened.consent_task = asyncio.create_task(self._follow_consent(watcher, session))
        await self._consent.publish(self._event(watcher, session.session_id, opened, "watch.started"))

    async def stopped(self, watcher: Watcher, session_id: str, *, reason: str) -> None:
        """Record the end of a watch with its duration; forget a consent request the agent still waited for."""
        waiting = self._waiting.pop((id(watcher), session_id), None)
        if waiting is not None:
            waiting.cancel()
        opened = self._open.pop((id(watcher), session_id), None)
        if opened is None:
            return
        if opened.consent_task is not None and opened.consent_task is not asyncio.current_task():
            opened.consent_task.cancel()
        event = self._event(watcher, session_id, opened, "watch.stopped")
        event.duration_ms = int((time.monotonic() - opened.started_at) * 1000)
        event.reason = reason
        await self._consent.publish(event)

    async def forget(self, watcher: Watcher, *, reason: str) -> None:
        """Stop following everything of a closing connection: its open watches and its pending requests."""
        sessions = {session_id for key, session_id in (*self._waiting, *self._open) if key == id(watcher)}
        for session_id in sessions:
            await self.stopped(watcher, session_id, reason=reason)

    async def _follow_consent(self, watcher: Watcher, session: LiveSession) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                record, revision = await self._consent.get(session.project_id, session.session_id)
                if record is None or record.state != "accepted":
                    log.info("watch.consent_withdrawn", session_id=session.session_id, agent_id=watcher.claims.agent_id)
                    await watcher.stop_watch(session.session_id, reason="consent_withdrawn")
                    return
                await self._consent.wait_for_change(
                    session.project_id, session.session_id, revision=revision, timeout_seconds=30.0
                )

    def _event(self, watcher: Watcher, session_id: str, opened: OpenWatch, kind: str) -> AssistEvent:
        return AssistEvent(
            event_id=new_id(),
            kind=kind,
            project_id=opened.project_id,
            session_id=session_id,
            agent_id=watcher.claims.agent_id,
            agent_name=watcher.claims.name,
            watch_id=opened.watch_id,
            at=now_ms(),
        )


WATCH_GATE = web.AppKey("watch_gate", WatchGate)


def setup(app: web.Application, *, settings: LiveAccessSettings, nc: NatsClient, signer: TokenSigner) -> None:
    """Add the authenticator (agent tokens on the socket, API tokens too on HTTP) and the watch gate."""
    js = nc.jetstream()
    agents = AgentDirectory(js=js)
    guard = AccountGuard(agents)
    app[AUTHENTICATOR] = Authenticator(signer=signer, api_tokens=ApiTokenDirectory(js=js, agents=agents), guard=guard)
    follow_accounts(app, guard)
    app[WATCH_GATE] = WatchGate(
        nc=nc, projects=ProjectDirectory(js=js), consent_timeout_seconds=settings.watch_consent_timeout_seconds
    )
