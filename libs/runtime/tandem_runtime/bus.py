"""The NATS connection and the JetStream stream and buckets every service expects."""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client as NatsClient
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
"""Age after which the bucket drops a live-session entry nobody refreshed (garbage collection)."""


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
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)

    buckets = [
        KeyValueConfig(bucket=subjects.LIVE_BUCKET, ttl=LIVE_ENTRY_TTL_SECONDS, replicas=replicas),
        KeyValueConfig(bucket=subjects.SNAPSHOT_BUCKET, ttl=max_age_seconds, replicas=replicas),
        KeyValueConfig(bucket=subjects.PROJECTS_BUCKET, replicas=replicas),
        KeyValueConfig(bucket=subjects.AGENTS_BUCKET, replicas=replicas),
    ]
    for bucket in buckets:
        await js.create_key_value(bucket)
