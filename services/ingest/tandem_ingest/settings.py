"""Settings of the ingest service, from `TANDEM_*` environment variables."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from tandem_ingest.access import IngestAccessSettings


class IngestSettings(IngestAccessSettings):
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
        default=150.0,
        gt=0,
        description="A session with no data for this long has ended; a reload then starts a new one.",
    )
    session_max_duration_seconds: float = Field(
        default=7200.0, gt=0, description="A session longer than this ends, and the tab starts a new one."
    )
    registry_refresh_seconds: float = Field(
        default=15.0,
        gt=0,
        description=(
            "Least time between two writes of an unchanged live-session entry; presence messages keep the "
            "live pods up to date in between. Keep it under the live pods' live_session_timeout_seconds "
            "minus 15 s, so that a starting live pod lists every open session from the bucket."
        ),
    )
    presence_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Time between two presence messages, which tell the live pods which sessions still send.",
    )
    heartbeat_store_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Least time between two empty batches (heartbeats) of one session put on the events stream; the others "
            "only keep the session listed. Keep it under the sessions service's session_inactivity_seconds."
        ),
    )
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Time to wait for JetStream to acknowledge a batch before answering 503."
    )
    geoip_enabled: bool = Field(
        default=True, description="Look up the country (and city) of each new session's client address."
    )
    geoip_database: Path | None = Field(
        default=None,
        description=(
            "MaxMind-format (.mmdb) country or city database file. Unset uses the country database "
            "shipped with the geoip2fast package (GeoLite2 data, no city)."
        ),
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated CIDR ranges of reverse proxies whose X-Forwarded-For header is honoured, "
            "such as 10.0.0.0/8,127.0.0.1/32. Empty: the client address is the TCP peer."
        ),
    )
    max_metadata_keys: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="Metadata keys one session may carry; further keys are dropped and counted.",
    )
    project_max_metadata_keys: dict[str, int] = Field(
        default_factory=dict,
        description='Per-project override of max_metadata_keys, as JSON: {"shop": 20}.',
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        """Accept a comma-separated string from the environment; host bits may be set (10.0.0.1/8)."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [ip_network(part, strict=False) if isinstance(part, str) else part for part in value]
        return value

    def metadata_key_limit(self, project_id: str) -> int:
        """Return the number of metadata keys a session of `project_id` may carry."""
        return self.project_max_metadata_keys.get(project_id, self.max_metadata_keys)
