"""Settings of sign-in, tokens, the audit trail and retention, which SessionsSettings inherits."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode
from tandem_runtime.settings import ServiceSettings


class AccessSettings(ServiceSettings):
    socket_token_ttl_seconds: int = Field(
        default=120,
        gt=0,
        le=3600,
        description="Lifetime of a socket token (/api/v1/auth/socket-token): the time a script has to open a socket.",
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins from one address, within the failure window, before it is locked out.",
    )
    login_failure_window_seconds: float = Field(
        default=300.0,
        gt=0,
        le=43_200,
        description="Window in which failed sign-ins from one address are counted, on every pod together.",
    )
    login_lockout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=43_200,
        description="Time an address that failed too often must wait (429) before signing in again.",
    )
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated CIDR ranges of reverse proxies whose X-Forwarded-For header names the client "
            "of a sign-in, for its lockout. Empty: the client address is the TCP peer."
        ),
    )
    audit_consumer_enabled: bool = Field(
        default=True, description="Run the consumer that writes assist events to the audit table in this process."
    )
    audit_consumer_durable: str = Field(
        default="tandem-sessions-audit", description="Durable name of the pull consumer on the assist events stream."
    )
    retention_days: int = Field(
        default=0,
        ge=0,
        le=36_500,
        description="Days recorded sessions are kept when their project sets no retention; 0 keeps them.",
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
