"""Settings of the live service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from tandem_runtime.settings import ServiceSettings


class LiveSettings(ServiceSettings):
    port: int = Field(default=8082, ge=0, le=65535, description="Port the live HTTP server listens on.")
    live_session_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A session with no data for this long leaves the live list."
    )
    auth_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Time an agent's socket has to send its auth message."
    )
    max_outbound_frames: int = Field(
        default=10_000, gt=0, description="Frames queued for one agent before the socket is closed as too slow."
    )
