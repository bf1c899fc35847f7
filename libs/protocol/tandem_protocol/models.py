"""Pydantic models of every message Tandem sends: HTTP bodies, bus messages and socket frames.

Wire names are camelCase (the browser's convention); Python attributes are snake_case.
Every top-level message carries `version`, so that a consumer can reject or
upgrade a message from a newer or older producer.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

from tandem_protocol.parts import PART_TAG, valid_payload

PROTOCOL_VERSION = 1

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
ShortText = Annotated[str, StringConstraints(max_length=2048)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MetadataValue = Annotated[str, StringConstraints(max_length=1024)]


class WireModel(BaseModel):
    """Base of every wire model: camelCase aliases, snake_case accepted too."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class VersionedModel(WireModel):
    version: Literal[1] = PROTOCOL_VERSION


class RrwebEventType(IntEnum):
    """rrweb's `EventType` numbers (rrweb 2.x, `@rrweb/types`)."""

    DOM_CONTENT_LOADED = 0
    LOAD = 1
    FULL_SNAPSHOT = 2
    INCREMENTAL_SNAPSHOT = 3
    META = 4
    CUSTOM = 5
    PLUGIN = 6


MAX_TIMESTAMP_MS = 7_258_118_400_000
"""2200-01-01 in milliseconds since the epoch: later timestamps are mistakes, and the store cannot keep them."""


class RrwebEvent(BaseModel):
    """One rrweb `eventWithTime`. `data` is kept as sent; only the envelope is checked."""

    model_config = ConfigDict(extra="allow")

    type: Annotated[int, Field(ge=0, le=6)]
    timestamp: Annotated[int, Field(ge=0, le=MAX_TIMESTAMP_MS)]
    data: Any = None

    def custom_tag(self) -> str | None:
        """Return the tag of a custom event (type 5), or None for other events."""
        if self.type == RrwebEventType.CUSTOM and isinstance(self.data, dict):
            tag = self.data.get("tag")
            return tag if isinstance(tag, str) else None
        return None


class Size(WireModel):
    width: Annotated[int, Field(ge=0, le=100_000)]
    height: Annotated[int, Field(ge=0, le=100_000)]


# Tracker HTTP API ---------------------------------------------------------------------------


class StartRequest(VersionedModel):
    """Body of `POST /ingest/v1/web/start`."""

    project_key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    tracker_version: ShortText = ""
    tab_id: Identifier
    token: str | None = None
    url: ShortText = ""
    title: ShortText = ""
    referrer: ShortText = ""
    user_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(default=None, alias="userID")
    user_anonymous_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, alias="userAnonymousID"
    )
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict)
    screen: Size | None = None
    viewport: Size | None = None
    timezone: Annotated[str, StringConstraints(max_length=64)] = ""
    language: Annotated[str, StringConstraints(max_length=64)] = ""
    timestamp: int = 0


class StartResponse(VersionedModel):
    session_id: str = Field(alias="sessionID")
    project_id: str = Field(alias="projectID")
    token: str
    timestamp: int
    resumed: bool
    max_batch_bytes: int
    record: bool = True
    """False when the project's sampling left this tab out: the tracker then records nothing and sends nothing."""
    session_confirm: bool = False
    """True when agents may watch only after the user accepts: the tracker then polls `/v1/web/consent`."""


class IngestBatchRequest(VersionedModel):
    """Body of `POST /ingest/v1/web/i`: one numbered batch of a tab's events."""

    tab_id: Identifier
    session_id: Identifier | None = Field(default=None, alias="sessionID")
    seq: Annotated[int, Field(ge=0)]
    events: Annotated[list[RrwebEvent], Field(max_length=100_000)]

    @field_validator("events")
    @classmethod
    def _check_parts(cls, events: list[RrwebEvent]) -> list[RrwebEvent]:
        """Reject a `tandem.part` event whose payload no joiner could use (docs/PROTOCOL.md)."""
        for index, event in enumerate(events):
            if event.custom_tag() == PART_TAG and not valid_payload(event.data.get("payload")):
                raise ValueError(
                    f"event {index} is a {PART_TAG} event with an invalid payload: it needs id and data "
                    "(strings) and index and count (integers, 0 <= index < count)"
                )
        return events


class IngestBatchResponse(VersionedModel):
    seq: int


# Bus --------------------------------------------------------------------------------------


class EventBatch(VersionedModel):
    """A tracker batch as published on `subjects.events(project_id, session_id)`."""

    project_id: str
    session_id: str
    tab_id: str
    seq: int
    received_at: int
    events: list[RrwebEvent]

    def has_meta(self) -> bool:
        """Tell whether the batch starts a page: a Meta event, followed by its full snapshot."""
        return any(event.type == RrwebEventType.META for event in self.events)


class SnapshotPointer(VersionedModel):
    """Position of a session's latest page snapshot in the events stream."""

    stream_seq: int
    batch_seq: int
    tab_id: str
    timestamp: int


class LiveSession(VersionedModel):
    """One entry of the live-session registry, and of the dashboard's live list."""

    session_id: str
    project_id: str
    tab_id: str
    user_id: str | None = None
    user_anonymous_id: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    started_at: int
    last_seen_at: int
    url: str = ""
    title: str = ""
    referrer: str = ""
    browser: str = ""
    browser_version: str = ""
    os: str = ""
    os_version: str = ""
    device: str = ""
    country: str = ""
    city: str = ""
    screen: Size | None = None
    timezone: str = ""
    language: str = ""
    utm_source: str = ""
    utm_medium: str = ""
    utm_campaign: str = ""
    utm_term: str = ""
    utm_content: str = ""
    active: bool = True
    closing_at: int | None = None
    """Server time (ms) of the tab's `tandem.pagehide`; cleared by any later batch or start.

    Live pods drop a session whose `closing_at` is older than their closing grace period.
    """


class Project(VersionedModel):
    """A site that sends sessions to Tandem. `key` is public: it is written in the site's pages."""

    id: Identifier
    key: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    name: str = ""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origins the tracker may send from: `https://shop.example.com`, `https://*.example.com` or `*`.

    An empty list allows any origin, for projects created before the setting existed.
    """
    sample_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    """Share of new tabs that record, from 0 (none) to 1 (all)."""
    retention_days: Annotated[int, Field(ge=0, le=36_500)] = 0
    """Days recorded sessions are kept before ClickHouse deletes them; 0 keeps them until the default retention."""
    session_confirm: bool = False
    """When true, no live data of a session reaches an agent before the user accepts in a dialog."""
    created_at: int = 0


# Agents -----------------------------------------------------------------------------------


class LoginRequest(WireModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class AgentInfo(WireModel):
    id: str
    name: str
    role: Literal["admin", "agent", "viewer"]


class LoginResponse(WireModel):
    token: str
    expires_at: int
    agent: AgentInfo


class AgentMessage(WireModel):
    """A frame an agent sends on the live WebSocket. Fields beyond `type` depend on it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    type: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    token: str | None = None
    project_id: str | None = None
    session_id: str | None = None
