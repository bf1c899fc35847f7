"""The NATS connection and the JetStream stream and buckets every service expects."""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionReconnectingError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from tandem_protocol import subjects

log = structlog.get_logger(__name__)

MAX_BATCH_MESSAGE_BYTES = 1024 * 1024
"""nats-server's default max_payload (1 MiB): no bus message may be larger."""

DUPLICATE_WINDOW_SECONDS = 600.0
"""How long JetStream remembers a message id, so that a retried batch is stored once."""

LIVE_ENTRY_TTL_SECONDS = 3600.0
"""Age after which the bucket drops a live-session entry that no batch refreshed (garbage collection)."""

CONSENT_ENTRY_TTL_SECONDS = 86_400.0
"""Age after which the bucket drops a viewing-consent record: longer than the longest session."""

LOGIN_FAILURE_TTL_SECONDS = 86_400.0
"""Age after which the bucket drops an address's failed sign-ins: the longest failure window plus lockout."""

DRAIN_TIMEOUT_SECONDS = 10.0
"""Maximum time of `drain()` on shutdown, which Kubernetes' grace period includes (shutdown.natsDrainSeconds)."""


DEAD_LETTER_MAX_AGE_SECONDS = 14 * 86_400.0
"""How long the dead-letter stream keeps a message, for an operator to inspect or replay it."""

DEAD_LETTER_REASON_HEADER = "Tandem-Dead-Reason"
"""Header of a dead letter saying why the consumer gave up on the message."""

MAX_DEAD_LETTER_REASON_CHARS = 1000


async def connect(url: str, *, name: str) -> NatsClient:
    """Connect to NATS, retrying forever in the background after the first success."""

    async def on_disconnect() -> None:
        log.warning("nats.disconnected", client=name)

    async def on_reconnect() -> None:
        log.info("nats.reconnected", client=name)

    async def on_error(error: Exception) -> None:
        log.warning("nats.error", client=name, error=str(error))

    client = await nats.connect(
        servers=[server.strip() for server in url.split(",")],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=5,
        drain_timeout=DRAIN_TIMEOUT_SECONDS,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        error_cb=on_error,
    )
    log.info("nats.connected", client=name, server=str(client.connected_url.netloc if client.connected_url else ""))
    return client


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1, max_age_seconds: float = 86_400.0) -> None:
    """Create or update the events stream and the key-value buckets. Safe to call from every pod."""
    config = StreamConfig(
        name=subjects.EVENTS_STREAM,
        subjects=[subjects.events_all()],
        storage=StorageType.FILE,
        max_age=max_age_seconds,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        max_msg_size=MAX_BATCH_MESSAGE_BYTES,
        num_replicas=replicas,
    )
    dead_letters = StreamConfig(
        name=subjects.DEAD_LETTERS_STREAM,
        subjects=[subjects.dead_letters_all()],
        storage=StorageType.FILE,
        max_age=DEAD_LETTER_MAX_AGE_SECONDS,
        num_replicas=replicas,
    )
    for stream in (config, dead_letters):
        try:
            await js.add_stream(stream)
        except BadRequestError:
            await js.update_stream(stream)

    buckets = [
        KeyValueConfig(bucket=subjects.LIVE_BUCKET, ttl=LIVE_ENTRY_TTL_SECONDS, replicas=replicas),
        KeyValueConfig(bucket=subjects.SNAPSHOT_BUCKET, ttl=max_age_seconds, replicas=replicas),
        KeyValueConfig(bucket=subjects.PROJECTS_BUCKET, replicas=replicas),
        KeyValueConfig(bucket=subjects.AGENTS_BUCKET, replicas=replicas),
        KeyValueConfig(bucket=subjects.API_TOKENS_BUCKET, replicas=replicas),
        KeyValueConfig(bucket=subjects.CONSENT_BUCKET, ttl=CONSENT_ENTRY_TTL_SECONDS, replicas=replicas),
        KeyValueConfig(bucket=subjects.LOGIN_FAILURES_BUCKET, ttl=LOGIN_FAILURE_TTL_SECONDS, replicas=replicas),
    ]
    for bucket in buckets:
        await js.create_key_value(bucket)


async def publish_dead_letter(
    js: JetStreamContext,
    *,
    consumer: str,
    msg: Msg,
    reason: str,
    max_payload: int = MAX_BATCH_MESSAGE_BYTES,
    timeout: float = 5.0,
) -> None:
    """Copy a message that `consumer` gives up on to the dead-letter stream, with the reason and its origin.

    The copy keeps the original payload (cut to fit `max_payload`, the server's limit, with
    `Tandem-Original-Bytes` telling the full size), and its `Nats-Msg-Id` is the
    consumer and stream sequence, so that publishing it again stores it once.
    Raises a nats error when the stream does not acknowledge it.
    """
    original_id = (msg.headers or {}).get("Nats-Msg-Id", "")
    try:
        stream_seq = str(msg.metadata.sequence.stream)
    except Exception:  # nats-py raises NotJSMessageError for a message that JetStream did not deliver
        stream_seq = ""
    headers = {
        DEAD_LETTER_REASON_HEADER: _header_value(reason)[:MAX_DEAD_LETTER_REASON_CHARS],
        "Tandem-Dead-Consumer": consumer,
        "Tandem-Original-Subject": msg.subject,
        "Tandem-Original-Msg-Id": _header_value(original_id),
        "Tandem-Original-Stream-Seq": stream_seq,
        "Tandem-Original-Bytes": str(len(msg.data)),
    }
    if stream_seq:
        headers["Nats-Msg-Id"] = f"{consumer}:{stream_seq}"
    header_bytes = sum(len(name) + len(value.encode()) + 4 for name, value in headers.items()) + 16
    room = max(0, max_payload - header_bytes)
    await js.publish(subjects.dead_letter(consumer), msg.data[:room], timeout=timeout, headers=headers)


def _header_value(text: str) -> str:
    """A header value on one line: NATS headers end at CR or LF."""
    return " ".join(text.split())


async def drain_or_close(client: NatsClient, *, name: str) -> None:
    """Drain the connection on shutdown; when NATS is out of reach there is nothing to drain, so close it."""
    log.info("nats.draining", client=name)
    try:
        await client.drain()
    except (ConnectionClosedError, ConnectionReconnectingError) as error:
        log.warning("nats.drain_skipped", client=name, error=type(error).__name__)
        await client.close()
