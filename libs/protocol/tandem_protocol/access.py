"""Wire models of access control: projects, agent accounts, API tokens, socket tokens and viewing consent."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from tandem_protocol.models import Identifier, VersionedModel, WireModel

Role = Literal["admin", "agent", "viewer"]
AgentName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
Password = Annotated[str, StringConstraints(min_length=12, max_length=1024)]
ProjectKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,128}$")]
ProjectList = Annotated[
    list[Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9_-]{1,128})$")]], Field(max_length=1000)
]

_ORIGIN = re.compile(r"^(\*|https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?)$")


def check_origins(origins: list[str]) -> list[str]:
    """Validate allowed-origin patterns: `*`, `scheme://host[:port]` or `scheme://*.domain[:port]`, without a path."""
    cleaned = []
    for origin in origins:
        value = origin.strip().rstrip("/").lower()
        if not _ORIGIN.match(value):
            raise ValueError(
                f"{origin[:100]!r} is not an origin: write https://shop.example.com, https://*.example.com or *"
            )
        cleaned.append(value)
    return cleaned


# Projects -----------------------------------------------------------------------------------


class ProjectCreate(WireModel):
    """Body of `POST /api/v1/projects`. Without `key`, the server picks a random one."""

    id: Identifier
    key: ProjectKey | None = None
    name: Annotated[str, StringConstraints(max_length=256)] = ""
    allowed_origins: Annotated[list[str], Field(max_length=100)] = Field(default_factory=list)
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    retention_days: Annotated[int, Field(ge=0, le=36_500)] = 0
    session_confirm: bool = False

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return check_origins(value)


class ProjectUpdate(WireModel):
    """Body of `PATCH /api/v1/projects/{id}`: only the fields present change."""

    name: Annotated[str, StringConstraints(max_length=256)] | None = None
    allowed_origins: Annotated[list[str], Field(max_length=100)] | None = None
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    retention_days: Annotated[int, Field(ge=0, le=36_500)] | None = None
    session_confirm: bool | None = None

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_origins(value)


# Agents -------------------------------------------------------------------------------------


class AgentCreate(WireModel):
    """Body of `POST /api/v1/agents`. `projects` lists project ids, or `*` for every project."""

    name: AgentName
    password: Password
    role: Role = "agent"
    projects: ProjectList = Field(default_factory=lambda: ["*"])


class AgentUpdate(WireModel):
    """Body of `PATCH /api/v1/agents/{name}`: only the fields present change."""

    password: Password | None = None
    role: Role | None = None
    projects: ProjectList | None = None
    disabled: bool | None = None


class AgentView(WireModel):
    """An agent account as the API shows it: never its password hash."""

    id: str
    name: str
    role: Role
    projects: list[str]
    disabled: bool = False
    created_at: int = 0


# Tokens -------------------------------------------------------------------------------------


class ApiTokenCreate(WireModel):
    """Body of `POST /api/v1/tokens`. `projects` narrows the owner's projects; empty keeps them all."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    projects: ProjectList = Field(default_factory=list)
    expires_in_days: Annotated[int, Field(ge=0, le=3650)] = 90
    """0 makes a token that never expires."""


class ApiTokenView(WireModel):
    """An API token as listed: its id and owner, never the secret or its hash."""

    id: str
    name: str
    agent_name: str
    projects: list[str]
    created_at: int
    expires_at: int
    """Milliseconds since the epoch; 0 for a token that never expires."""


class ApiTokenCreated(ApiTokenView):
    """Response of `POST /api/v1/tokens`: the only time the server returns the token itself."""

    token: str


class SocketTokenRequest(WireModel):
    """Body of `POST /api/v1/auth/socket-token`."""

    project_id: Identifier


class SocketTokenResponse(WireModel):
    token: str
    expires_at: int
    project_id: str


# Viewing consent ----------------------------------------------------------------------------

ConsentState = Literal["pending", "accepted", "declined", "expired"]


class ConsentRecord(VersionedModel):
    """A session's viewing consent, in `subjects.CONSENT_BUCKET`.

    `pending` waits for the user until `expires_at`; `accepted` lets every agent with
    access to the project watch the session until the user withdraws it (`declined`).
    """

    project_id: str
    session_id: str
    state: ConsentState
    request_id: str
    agent_id: str
    agent_name: str
    requested_at: int
    expires_at: int
    answered_at: int | None = None


class WatchRequest(WireModel):
    """An agent's request to watch, as the tracker shows it in its dialog."""

    request_id: str
    agent_name: str
    requested_at: int
    expires_at: int


class ConsentPollResponse(VersionedModel):
    """Response of `GET /ingest/v1/web/consent`.

    `request` is set while an agent waits for the user's answer; `state` is the
    session's consent (`none` before anyone asked).
    """

    session_confirm: bool
    state: ConsentState | Literal["none"]
    request: WatchRequest | None = None


class ConsentAnswer(VersionedModel):
    """Body of `POST /ingest/v1/web/consent`: the user's answer, or `accepted: false` alone to stop sharing."""

    request_id: Identifier | None = None
    accepted: bool
