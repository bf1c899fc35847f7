"""Settings of the sessions service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from tandem_sessions.access_settings import AccessSettings


class SessionsSettings(AccessSettings):
    port: int = Field(default=8084, ge=0, le=65535, description="Port the sessions HTTP server listens on.")
    agent_token_ttl_seconds: int = Field(
        default=3600, gt=0, description="Lifetime of the agent token that login returns."
    )

    # Storage.
    data_dir: Path = Field(
        default=Path(".data"),
        description=(
            "Folder of the embedded ClickHouse (chdb) and the folder replay store; relative to the working directory."
        ),
    )
    clickhouse_dsn: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "ClickHouse server as clickhouse://user:password@host:8123/database (https://… for TLS). "
            "Empty uses the embedded chdb engine in <data_dir>/chdb, which one process at a time may open."
        ),
    )
    store_threads: int = Field(
        default=4, ge=1, le=64, description="Threads that run ClickHouse queries, each with its own connection."
    )
    replay_store: Literal["clickhouse", "folder"] = Field(
        default="clickhouse",
        description="Where rrweb chunks go: the replay_chunks table, or zstd files under replay_dir.",
    )
    replay_dir: Path | None = Field(
        default=None, description="Folder of the folder replay store; defaults to <data_dir>/replay."
    )
    replay_zstd_level: int = Field(default=3, ge=1, le=19, description="zstd level of the folder replay store's files.")

    # Session lifecycle.
    session_inactivity_seconds: float = Field(
        default=150.0, gt=0, description="A recorded session with no data for this long is marked ended."
    )
    session_max_duration_seconds: float = Field(
        default=7200.0, gt=0, description="A recorded session that started this long ago is marked ended."
    )
    lifecycle_interval_seconds: float = Field(
        default=10.0, gt=0, description="Time between two passes that mark ended sessions."
    )

    # The JetStream consumer that stores batches.
    consumer_enabled: bool = Field(default=True, description="Run the consumer that stores batches in this process.")
    consumer_durable: str = Field(
        default="tandem-sessions-store", description="Durable name of the pull consumer on the events stream."
    )
    consumer_batch_messages: int = Field(
        default=256, ge=1, le=10_000, description="Messages fetched, and written to the store, per bulk insert."
    )
    consumer_fetch_timeout_seconds: float = Field(
        default=1.0, gt=0, description="Maximum wait for a fetch to fill before writing what arrived."
    )
    consumer_ack_wait_seconds: float = Field(
        default=60.0, gt=0, description="Time JetStream waits for an acknowledgement before delivering a message again."
    )
    consumer_retry_delay_seconds: float = Field(
        default=2.0, gt=0, description="Delay before a batch is delivered again after the store failed to write it."
    )

    # API limits.
    search_max_limit: int = Field(default=200, ge=1, description="Largest page of search results.")
    events_page_events: int = Field(
        default=2000, ge=1, description="Events per page of /sessions/{id}/events when the request sets no limit."
    )
    events_page_max_events: int = Field(default=50_000, ge=1, description="Largest limit of /sessions/{id}/events.")
