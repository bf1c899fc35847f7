"""Settings of the signal service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from tandem_runtime.settings import ServiceSettings


class SignalSettings(ServiceSettings):
    port: int = Field(default=8083, ge=0, le=65535, description="Port the signal HTTP server listens on.")
