"""Settings of the signal service, from `TANDEM_*` environment variables."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode
from tandem_runtime.settings import ServiceSettings


class SignalSettings(ServiceSettings):
    port: int = Field(default=8083, ge=0, le=65535, description="Port the signal HTTP server listens on.")
    consent_timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Time the user has to answer a call or control request."
    )
    reconnect_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Time a call or control waits for the user's page to connect again (a reload) before it ends.",
    )
    auth_timeout_seconds: float = Field(default=10.0, gt=0, description="Time a socket has to send its auth frame.")
    stun_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="STUN URLs handed to browsers, e.g. stun:turn.example.com:3478. Empty by default.",
    )
    turn_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="TURN URLs handed to browsers, e.g. turn:turn.example.com:3478?transport=udp. Empty by default.",
    )
    turn_secret: SecretStr = Field(
        default=SecretStr(""),
        description="coturn's static-auth-secret, which signs time-limited TURN credentials (coturn's REST API).",
    )
    turn_credential_ttl_seconds: int = Field(
        default=3600, gt=0, le=86_400 * 7, description="Lifetime of a TURN credential handed to a browser."
    )
    assist_events_max_age_seconds: float = Field(
        default=30 * 86_400.0,
        gt=0,
        description="How long the assist events stream keeps consent, call and control events.",
    )
    room_ttl_seconds: float = Field(
        default=86_400.0, gt=0, description="Age after which a room nobody changed leaves the key-value bucket."
    )

    @field_validator("stun_urls", "turn_urls", mode="before")
    @classmethod
    def split_urls(cls, value: object) -> object:
        """Accept a comma-separated string as well as a JSON list."""
        if isinstance(value, str):
            if value.strip().startswith("["):
                return json.loads(value)
            return [url.strip() for url in value.split(",") if url.strip()]
        return value
