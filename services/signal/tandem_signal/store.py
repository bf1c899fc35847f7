"""Rooms in a NATS key-value bucket, changed with compare-and-set so that every pod sees one state."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import structlog
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from tandem_protocol import ProtocolError, decode, encode, subjects
from tandem_protocol.signal import RoomState

from tandem_signal.room import Transition, expire_overdue

log = structlog.get_logger(__name__)

MAX_WRITE_ATTEMPTS = 20
"""Compare-and-set retries before a change fails; each retry means another pod changed the room meanwhile."""

Step = Callable[[Transition], None]


class RoomStore:
    """Applies steps to rooms: read, expire what is overdue, apply, and write back if the revision is unchanged."""

    def __init__(self, *, js: JetStreamContext, consent_timeout_seconds: float, reconnect_grace_seconds: float) -> None:
        self._js = js
        self._kv: KeyValue | None = None
        self._consent_timeout_ms = int(consent_timeout_seconds * 1000)
        self._reconnect_grace_ms = int(reconnect_grace_seconds * 1000)

    async def open(self, *, ttl_seconds: float, replicas: int = 1) -> None:
        """Create the bucket if needed. Safe to call from every pod."""
        self._kv = await self._js.create_key_value(
            KeyValueConfig(bucket=subjects.SIGNAL_BUCKET, ttl=ttl_seconds, replicas=replicas, history=1)
        )

    async def apply(self, project_id: str, session_id: str, step: Step) -> Transition:
        """Run `step` on the room and store the result.

        A ProtocolError from `step` is raised after storing only what expired on the
        way, so a rejected frame changes nothing else. The error then carries that
        expiry as its `transition` attribute, for the caller to send.
        """
        assert self._kv is not None, "RoomStore.open() was not awaited"
        key = subjects.signal_room_key(project_id, session_id)
        for _ in range(MAX_WRITE_ATTEMPTS):
            state, revision = await self._read(key, project_id, session_id)
            transition = Transition(
                state=state,
                now=int(time.time() * 1000),
                consent_timeout_ms=self._consent_timeout_ms,
                reconnect_grace_ms=self._reconnect_grace_ms,
            )
            expire_overdue(transition)
            expired = replace(
                transition,
                state=state.model_copy(deep=True),
                outputs=[*transition.outputs],
                events=[*transition.events],
            )
            try:
                step(transition)
            except ProtocolError as error:
                # Store only what expired: the rejected step's partial changes are dropped.
                if expired.changed and not await self._write(key, expired, revision):
                    continue
                error.transition = expired  # type: ignore[attr-defined]
                raise
            if transition.changed and not await self._write(key, transition, revision):
                continue
            return transition
        raise ProtocolError(
            code="room_busy",
            message=f"The room of session {session_id!r} changed {MAX_WRITE_ATTEMPTS} times while this frame "
            "was applied. Send it again.",
            status=503,
        )

    async def get(self, project_id: str, session_id: str) -> RoomState:
        state, _ = await self._read(subjects.signal_room_key(project_id, session_id), project_id, session_id)
        return state

    async def _read(self, key: str, project_id: str, session_id: str) -> tuple[RoomState, int | None]:
        assert self._kv is not None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return RoomState(project_id=project_id, session_id=session_id), None
        if not entry.value:
            return RoomState(project_id=project_id, session_id=session_id), entry.revision
        return decode(RoomState, entry.value, what="room state"), entry.revision

    async def _write(self, key: str, transition: Transition, revision: int | None) -> bool:
        """Store the state if the room is still at `revision`; return False when another pod got there first."""
        assert self._kv is not None
        state = transition.state
        state.revision += 1
        state.updated_at = transition.now
        try:
            if revision is None:
                await self._kv.create(key, encode(state))
            else:
                await self._kv.update(key, encode(state), last=revision)
        except KeyWrongLastSequenceError:
            log.debug("room.write_conflict", key=key)
            return False
        return True
