"""Settings every service shares. Each service subclasses ServiceSettings with its own fields."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Read from environment variables named `TANDEM_<FIELD>`, validated at start-up."""

    model_config = SettingsConfigDict(env_prefix="TANDEM_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port the HTTP server listens on.")
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS server URL(s), comma-separated.")
    secret_key: SecretStr = Field(
        default=SecretStr(""),
        description="Key that signs session and agent tokens; the same on every service. Required.",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    shutdown_timeout_seconds: float = Field(
        default=20.0, gt=0, description="Time allowed to finish requests and drain NATS on SIGTERM."
    )
    stream_replicas: int = Field(default=1, ge=1, le=5, description="JetStream replicas of streams and buckets.")
    stream_max_age_seconds: float = Field(
        default=86_400.0, gt=0, description="How long the events stream keeps a batch."
    )
    agent_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated origins, besides the server's own, whose pages may open the live and signal "
            "agent sockets, such as https://support.example.com. Empty: the server's own origin only."
        ),
    )

    @field_validator("agent_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/").lower() for part in value.split(",") if part.strip()]
        return value
