"""What the ingest service checks before it takes a tracker's data, and the tracker's viewing-consent routes.

- The request's Origin must be one of the project's allowed origins (403 otherwise).
- Each project has a token bucket per pod: past it, 429 with Retry-After.
- A new tab of a project that samples records only if its tab id falls in the sample.

    GET  /ingest/v1/web/consent?wait=<seconds>   the open watch request, waiting up to `wait` for one
    POST /ingest/v1/web/consent                  the user's answer: {"requestId", "accepted"}
"""

from __future__ import annotations

import hashlib
import json

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from pydantic import Field, field_validator
from tandem_protocol import Project, ProtocolError, decode
from tandem_protocol.access import ConsentAnswer, ConsentPollResponse, ConsentRecord, WatchRequest
from tandem_runtime.access import check_tracker_origin
from tandem_runtime.consent import ConsentStore, consent_event, now_ms
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.http import json_response
from tandem_runtime.ratelimit import RateLimited, TokenBuckets
from tandem_runtime.settings import ServiceSettings
from tandem_runtime.tokens import SessionClaims, TokenSigner, bearer_token

log = structlog.get_logger(__name__)

MAX_POLL_SECONDS = 25.0
"""Maximum wait of one consent poll, in seconds: under 30 s, so that a proxy with a 30 s idle timeout keeps it open."""


class IngestAccessSettings(ServiceSettings):
    project_rate_per_second: float = Field(
        default=500.0,
        gt=0,
        description="Tracker requests (starts and batches) one project may make per second on one pod; more get 429.",
    )
    project_rate_burst: float = Field(
        default=1000.0, ge=1, description="Tracker requests one project may make at once before the rate applies."
    )
    project_rate_overrides: dict[str, float] = Field(
        default_factory=dict,
        description='Per-project requests per second, as JSON: {"shop": 2000}. The burst is twice the rate.',
    )

    @field_validator("project_rate_overrides", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value


class TrackerGuard:
    """The origin check, the per-project rate limit and the sampling decision, shared by the tracker routes."""

    def __init__(self, *, settings: IngestAccessSettings, projects: ProjectDirectory) -> None:
        self.settings = settings
        self.projects = projects
        self.buckets = TokenBuckets(rate=settings.project_rate_per_second, burst=settings.project_rate_burst)

    def admit(self, request: web.Request, project: Project) -> None:
        """Raise 403 for an origin the project does not allow, 429 over the project's rate."""
        check_tracker_origin(request, project)
        override = self.settings.project_rate_overrides.get(project.id)
        wait = self.buckets.take(project.id, rate=override, burst=override * 2 if override else None)
        if wait > 0:
            raise RateLimited(
                code="rate_limited",
                message=f"Project {project.id!r} sends more than its rate limit. Retry after the Retry-After delay.",
                retry_after_seconds=wait,
            )

    async def project_of(self, project_id: str) -> Project:
        """Return the project a session token names; 404 when it was deleted since."""
        project = await self.projects.by_id(project_id)
        if project is None:
            raise ProtocolError(
                code="unknown_project",
                message=f"Project {project_id!r} of this session no longer exists. Check projectKey.",
                status=404,
            )
        return project


GUARD = web.AppKey("tracker_guard", TrackerGuard)
CONSENT = web.AppKey("consent_store", ConsentStore)
SESSION_SIGNER = web.AppKey("consent_signer", TokenSigner)


def sampled_in(project: Project, tab_id: str) -> bool:
    """Tell whether a new tab records: the same tab gets the same answer on every page load."""
    if project.sample_rate >= 1.0:
        return True
    digest = hashlib.sha256(f"{project.id}:{tab_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < project.sample_rate


# Viewing consent ---------------------------------------------------------------------------------


async def tracker_session(request: web.Request) -> tuple[SessionClaims, Project]:
    claims = request.app[SESSION_SIGNER].verify_session(bearer_token(request.headers.get("Authorization")))
    guard = request.app[GUARD]
    project = await guard.project_of(claims.project_id)
    guard.admit(request, project)
    return claims, project


def poll_response(project: Project, record: ConsentRecord | None) -> ConsentPollResponse:
    if record is None:
        return ConsentPollResponse(session_confirm=project.session_confirm, state="none")
    request = None
    if record.state == "pending" and record.expires_at > now_ms():
        request = WatchRequest(
            request_id=record.request_id,
            agent_name=record.agent_name,
            requested_at=record.requested_at,
            expires_at=record.expires_at,
        )
    state = "expired" if record.state == "pending" and request is None else record.state
    return ConsentPollResponse(session_confirm=project.session_confirm, state=state, request=request)


async def poll_consent(request: web.Request) -> web.Response:
    """Return the session's consent, waiting up to `wait` seconds for a watch request when none is open."""
    claims, project = await tracker_session(request)
    store = request.app[CONSENT]
    record, revision = await store.get(claims.project_id, claims.session_id)
    answer = poll_response(project, record)
    wait = wait_parameter(request)
    if project.session_confirm and answer.request is None and wait > 0:
        await store.wait_for_change(claims.project_id, claims.session_id, revision=revision, timeout_seconds=wait)
        record, _ = await store.get(claims.project_id, claims.session_id)
        answer = poll_response(project, record)
    return json_response(answer)


def wait_parameter(request: web.Request) -> float:
    raw = request.query.get("wait", "0")
    try:
        value = float(raw)
    except ValueError:
        raise ProtocolError(
            code="invalid_parameter", message=f"wait={raw[:16]!r} is not a number of seconds. Send 0 to 25."
        ) from None
    return min(max(value, 0.0), MAX_POLL_SECONDS)


async def answer_consent(request: web.Request) -> web.Response:
    """Store the user's answer to a watch request, or the withdrawal of a consent given before."""
    claims, project = await tracker_session(request)
    answer = decode(ConsentAnswer, await request.read(), what="consent answer")
    before, after = await request.app[CONSENT].answer(
        claims.project_id, claims.session_id, request_id=answer.request_id, accepted=answer.accepted
    )
    outcome = "accepted" if answer.accepted else "declined"
    reason = "withdrawn" if answer.request_id is None else None
    await request.app[CONSENT].publish(consent_event(after, "consent.answered", outcome=outcome, reason=reason))
    log.info(
        "consent.answered",
        project_id=claims.project_id,
        session_id=claims.session_id,
        outcome=outcome,
        withdrawn=reason is not None,
        waited_ms=(after.answered_at or 0) - before.requested_at,
    )
    return json_response(poll_response(project, after))


def add_routes(
    app: web.Application,
    *,
    settings: IngestAccessSettings,
    projects: ProjectDirectory,
    nc: NatsClient,
    signer: TokenSigner,
) -> None:
    """Set up the guard that the start and batch routes call, and add the consent routes."""
    app[GUARD] = TrackerGuard(settings=settings, projects=projects)
    app[CONSENT] = ConsentStore(nc=nc)
    app[SESSION_SIGNER] = signer
    app.router.add_get("/v1/web/consent", poll_consent)
    app.router.add_post("/v1/web/consent", answer_consent)
