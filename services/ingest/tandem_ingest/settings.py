"""Settings of the ingest service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from tandem_runtime.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    port: int = Field(default=8081, ge=0, le=65535, description="Port the ingest HTTP server listens on.")
    max_body_bytes: int = Field(
        default=960 * 1024,
        gt=0,
        description="Largest request body accepted, in bytes; larger gets 413. Keep under NATS max_payload.",
    )
    max_batch_bytes: int = Field(
        default=768 * 1024, gt=0, description="Batch size the tracker is told to stay under, in bytes."
    )
    session_inactivity_seconds: float = Field(
        default=150.0, gt=0, description="A session with no data for this long has ended; a reload then starts a new one."
    )
    session_max_duration_seconds: float = Field(
        default=7200.0, gt=0, description="A session longer than this ends, and the tab starts a new one."
    )
    registry_refresh_seconds: float = Field(
        default=5.0, gt=0, description="Least time between two writes of an unchanged live-session entry."
    )
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time to wait for JetStream to acknowledge a batch before answering 503."
    )
