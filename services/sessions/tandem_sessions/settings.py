"""Settings of the sessions service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from tandem_runtime.settings import ServiceSettings


class SessionsSettings(ServiceSettings):
    port: int = Field(default=8084, ge=0, le=65535, description="Port the sessions HTTP server listens on.")
    agent_token_ttl_seconds: int = Field(
        default=3600, gt=0, description="Lifetime of the agent token that login returns."
    )
