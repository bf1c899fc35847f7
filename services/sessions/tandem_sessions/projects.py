"""Project administration, mounted under `/api`: create, list, read and change projects (admins only).

    POST  /v1/projects            ProjectCreate -> 201 Project
    GET   /v1/projects            -> {"projects": [Project, ...]}
    GET   /v1/projects/{id}       -> Project
    PATCH /v1/projects/{id}       ProjectUpdate -> Project

Other pods cache projects for up to ten seconds, so a change of allowed origins,
sampling or viewing consent reaches every ingest and live pod within that time.
A change of retention is applied to the store at once (or when it opens).
"""

from __future__ import annotations

import secrets
import time

import structlog
from aiohttp import web
from tandem_protocol import Project, ProtocolError, decode, subjects
from tandem_protocol.access import ProjectCreate, ProjectUpdate
from tandem_runtime.access import Permission, agent_of, requires
from tandem_runtime.directory import ProjectDirectory
from tandem_runtime.http import json_response

from tandem_sessions.api import RUNTIME
from tandem_sessions.retention import apply_retention

log = structlog.get_logger(__name__)

PROJECTS = web.AppKey("projects", ProjectDirectory)


async def project_or_404(request: web.Request) -> Project:
    project_id = subjects.token(request.match_info["project_id"], what="project id")
    project = await request.app[PROJECTS].by_id_uncached(project_id)
    if project is None:
        raise ProtocolError(code="project_not_found", message=f"No project {project_id!r}. Check the id.", status=404)
    return project


async def apply_retention_now(app: web.Application) -> None:
    """Apply every project's retention to the store; when the store is not open, its opening will."""
    runtime = app[RUNTIME]
    if runtime.store is None:
        log.info("retention.deferred", reason="store not open")
        return
    projects = await app[PROJECTS].all()
    await apply_retention(runtime.store.db, projects, default_days=runtime.settings.retention_days)


@requires(Permission.ADMIN)
async def create_project(request: web.Request) -> web.Response:
    body = decode(ProjectCreate, await request.read(), what="project")
    project = Project(
        id=body.id,
        key=body.key or secrets.token_urlsafe(18),
        name=body.name or body.id,
        allowed_origins=body.allowed_origins,
        sample_rate=body.sample_rate,
        retention_days=body.retention_days,
        session_confirm=body.session_confirm,
        created_at=int(time.time() * 1000),
    )
    await request.app[PROJECTS].create(project)
    log.info("project.created", project_id=project.id, agent_id=agent_of(request).agent_id)
    if project.retention_days:
        await apply_retention_now(request.app)
    return json_response(project, status=201)


@requires(Permission.ADMIN)
async def list_projects(request: web.Request) -> web.Response:
    projects = await request.app[PROJECTS].all()
    return json_response({"projects": [project.model_dump(by_alias=True) for project in projects]})


@requires(Permission.ADMIN)
async def get_project(request: web.Request) -> web.Response:
    return json_response(await project_or_404(request))


@requires(Permission.ADMIN)
async def update_project(request: web.Request) -> web.Response:
    project = await project_or_404(request)
    change = decode(ProjectUpdate, await request.read(), what="project change")
    fields = change.model_dump(exclude_none=True)
    updated = project.model_copy(update=fields)
    await request.app[PROJECTS].put(updated)
    log.info("project.updated", project_id=project.id, fields=sorted(fields), agent_id=agent_of(request).agent_id)
    if updated.retention_days != project.retention_days:
        await apply_retention_now(request.app)
    return json_response(updated)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/projects", create_project)
    app.router.add_get("/v1/projects", list_projects)
    app.router.add_get("/v1/projects/{project_id}", get_project)
    app.router.add_patch("/v1/projects/{project_id}", update_project)
