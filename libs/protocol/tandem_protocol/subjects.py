"""Every NATS subject, stream and key-value bucket name Tandem uses.

Services never format a subject by hand: they call these functions, which also
reject identifiers that would break the subject grammar (dots, spaces, wildcards).
"""

from __future__ import annotations

import re

from tandem_protocol.errors import ProtocolError

PREFIX = "tandem.v1"

EVENTS_STREAM = "TANDEM_EVENTS"
"""JetStream stream with every tracker batch, for the durable consumers and live catch-up."""

LIVE_BUCKET = "tandem_live"
"""Key-value bucket of live sessions, keyed by `live_key(project_id, session_id)`."""

SNAPSHOT_BUCKET = "tandem_snapshots"
"""Key-value bucket: for each session, the stream sequence of its latest page snapshot."""

PROJECTS_BUCKET = "tandem_projects"
"""Key-value bucket of projects, keyed by project key."""

AGENTS_BUCKET = "tandem_agents"
"""Key-value bucket of agent accounts, keyed by user name."""

SIGNAL_BUCKET = "tandem_signal_rooms"
"""Key-value bucket of Assist rooms (consent, call and control state), keyed by `signal_room_key`."""

ASSIST_STREAM = "TANDEM_ASSIST"
"""JetStream stream keeping the typed assist events, for the audit log."""

API_TOKENS_BUCKET = "tandem_api_tokens"
"""Key-value bucket of API tokens (their SHA-256 hashes, never the tokens), keyed by token id."""

LOGIN_FAILURES_BUCKET = "tandem_login_failures"
"""Key-value bucket of failed sign-ins per client address, keyed by the address's SHA-256, for the lockout."""

CONSENT_BUCKET = "tandem_consent"
"""Key-value bucket of viewing-consent records, one per session, keyed by `consent_key`."""

DEAD_LETTERS_STREAM = "TANDEM_DEAD_LETTERS"
"""JetStream stream of the messages a consumer can never handle, each with the reason in its headers."""

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def token(value: str, *, what: str = "identifier") -> str:
    """Return `value` if it is safe as one subject token or key part, else raise ProtocolError."""
    if not _TOKEN.match(value):
        raise ProtocolError(
            code="invalid_identifier",
            message=f"The {what} {value[:64]!r} is invalid: use 1 to 128 letters, digits, '-' or '_'.",
        )
    return value


def events(project_id: str, session_id: str) -> str:
    """Subject of one session's event batches."""
    return f"{PREFIX}.events.{token(project_id, what='project id')}.{token(session_id, what='session id')}"


def events_of_session(session_id: str) -> str:
    """Subject filter matching one session's batches whatever its project."""
    return f"{PREFIX}.events.*.{token(session_id, what='session id')}"


def events_all() -> str:
    """Subject filter for every batch of every project: the stream's subjects."""
    return f"{PREFIX}.events.>"


def live_key(project_id: str, session_id: str) -> str:
    """Key of a live session in LIVE_BUCKET."""
    return f"{token(project_id, what='project id')}.{token(session_id, what='session id')}"


def live_keys_of_project(project_id: str) -> str:
    """Key filter for every live session of a project in LIVE_BUCKET."""
    return f"{token(project_id, what='project id')}.*"


def live_presence(project_id: str) -> str:
    """Core NATS subject (not stored) of the sessions of a project that ingest heard from lately."""
    return f"{PREFIX}.presence.{token(project_id, what='project id')}"


def live_presence_all() -> str:
    """Subject filter for the live presence of every project."""
    return f"{PREFIX}.presence.*"


def snapshot_key(session_id: str) -> str:
    """Key of a session's snapshot pointer in SNAPSHOT_BUCKET."""
    return token(session_id, what="session id")


def signal_room(project_id: str, session_id: str) -> str:
    """Subject of one session's signalling room (calls and remote control)."""
    return f"{PREFIX}.signal.{token(project_id, what='project id')}.{token(session_id, what='session id')}"


def assist_events() -> str:
    """Subject filter for the typed assist events (consent, calls, control) of every project."""
    return f"{PREFIX}.assist.>"


def assist_event(project_id: str, kind: str) -> str:
    """Subject of one typed assist event, such as `call.started`."""
    kind_tokens = ".".join(token(part, what="event kind") for part in kind.split("."))
    return f"{PREFIX}.assist.{token(project_id, what='project id')}.{kind_tokens}"


def signal_room_key(project_id: str, session_id: str) -> str:
    """Key of one room in SIGNAL_BUCKET."""
    return f"{token(project_id, what='project id')}.{token(session_id, what='session id')}"


def consent_key(project_id: str, session_id: str) -> str:
    """Key of a session's viewing-consent record in CONSENT_BUCKET."""
    return f"{token(project_id, what='project id')}.{token(session_id, what='session id')}"


def consent_updates(project_id: str, session_id: str) -> str:
    """Subject on which NATS publishes every change of a session's consent record (the bucket's own subject)."""
    return f"$KV.{CONSENT_BUCKET}.{consent_key(project_id, session_id)}"


def dead_letter(consumer: str) -> str:
    """Subject of the messages that the durable consumer `consumer` gave up on."""
    return f"{PREFIX}.dead.{token(consumer, what='consumer name')}"


def dead_letters_all() -> str:
    """Subject filter for every dead letter: the dead-letter stream's subjects."""
    return f"{PREFIX}.dead.>"
