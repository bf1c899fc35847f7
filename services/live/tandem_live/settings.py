"""Settings of the live service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pydantic import Field

from tandem_live.access import LiveAccessSettings


class LiveSettings(LiveAccessSettings):
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
    inactive_session_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A session whose tab is hidden leaves the live list after this long without data. Longer than "
            "live_session_timeout_seconds because Chrome runs the timers of a tab hidden for 5 minutes once a minute."
        ),
    )
    closing_grace_seconds: float = Field(
        default=3.0,
        gt=0,
        description="Time after a tab's pagehide for a reload to send data before the session leaves the live list.",
    )
    list_push_interval_seconds: float = Field(
        default=0.25,
        gt=0,
        description="Minimum time between two updates of one agent's live list page; changes in between are merged.",
    )
    list_max_limit: int = Field(default=500, ge=1, description="Largest page of the live list, in sessions.")
    registry_ready_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Time a list request waits for a starting pod to load the registry before it responds with what it has."
        ),
    )
