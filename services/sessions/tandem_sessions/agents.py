"""Agent accounts (admins only) and API tokens, mounted under `/api`.

GET    /v1/agents             -> {"agents": [AgentView, ...]}
POST   /v1/agents             AgentCreate -> 201 AgentView
PATCH  /v1/agents/{name}      AgentUpdate -> AgentView
GET    /v1/tokens             -> {"tokens": [ApiTokenView, ...]}: the caller's, or everyone's for an admin
POST   /v1/tokens             ApiTokenCreate -> 201 ApiTokenCreated (the token is shown once)
DELETE /v1/tokens/{id}        -> 204: the owner or an admin revokes a token
"""

from __future__ import annotations

import structlog
from aiohttp import web
from tandem_protocol import ProtocolError, decode
from tandem_protocol.access import AgentCreate, AgentUpdate, AgentView, ApiTokenCreate, ApiTokenCreated, ApiTokenView
from tandem_runtime.access import Permission, authenticate, has_permission, requires
from tandem_runtime.accounts import ACCOUNT_GUARD
from tandem_runtime.directory import AgentAccount, AgentDirectory, ApiTokenDirectory, ApiTokenRecord
from tandem_runtime.http import json_response

log = structlog.get_logger(__name__)

AGENT_DIRECTORY = web.AppKey("agent_directory", AgentDirectory)
API_TOKENS = web.AppKey("api_tokens", ApiTokenDirectory)


def view_of(account: AgentAccount) -> AgentView:
    return AgentView(
        id=account.id,
        name=account.name,
        role=account.role,
        projects=account.projects,
        disabled=account.disabled,
        created_at=account.created_at,
    )


@requires(Permission.ADMIN)
async def list_agents(request: web.Request) -> web.Response:
    accounts = await request.app[AGENT_DIRECTORY].all()
    return json_response({"agents": [view_of(account).model_dump(by_alias=True) for account in accounts]})


@requires(Permission.ADMIN)
async def create_agent(request: web.Request) -> web.Response:
    body = decode(AgentCreate, await request.read(), what="agent")
    account = await request.app[AGENT_DIRECTORY].create(
        name=body.name, password=body.password, role=body.role, projects=body.projects, exist_ok=False
    )
    log.info("agent.created", agent_id=account.id, role=account.role, by=(await authenticate(request)).agent_id)
    return json_response(view_of(account), status=201)


@requires(Permission.ADMIN)
async def update_agent(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    change = decode(AgentUpdate, await request.read(), what="agent change")
    directory = request.app[AGENT_DIRECTORY]
    demotes = change.role not in (None, "admin") or change.disabled is True
    if demotes:
        await check_other_admin(directory, name)
    account = await directory.update(
        name, password=change.password, role=change.role, projects=change.projects, disabled=change.disabled
    )
    request.app[API_TOKENS].forget_agent(name)
    request.app[ACCOUNT_GUARD].forget(name)
    log.info(
        "agent.updated",
        agent_id=account.id,
        fields=sorted(change.model_dump(exclude_none=True, exclude={"password"}))
        + (["password"] if change.password else []),
        by=(await authenticate(request)).agent_id,
    )
    return json_response(view_of(account))


async def check_other_admin(directory: AgentDirectory, name: str) -> None:
    """Raise a 409 ProtocolError when demoting or disabling `name` would leave no enabled admin."""
    others = [a for a in await directory.all() if a.role == "admin" and not a.disabled and a.name != name]
    target = await directory.get(name)
    if target is not None and target.role == "admin" and not target.disabled and not others:
        raise ProtocolError(
            code="last_admin",
            message=f"{name!r} is the only enabled admin. Make another agent admin first.",
            status=409,
        )


# API tokens -------------------------------------------------------------------------------------


def token_view(record: ApiTokenRecord) -> ApiTokenView:
    return ApiTokenView(
        id=record.id,
        name=record.name,
        agent_name=record.agent_name,
        projects=record.projects,
        created_at=record.created_at,
        expires_at=record.expires_at,
    )


async def list_tokens(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    records = await request.app[API_TOKENS].all()
    if not has_permission(claims, Permission.ADMIN):
        records = [record for record in records if record.agent_name == claims.name]
    return json_response({"tokens": [token_view(record).model_dump(by_alias=True) for record in records]})


async def create_token(request: web.Request) -> web.Response:
    """Create an API token for the signed-in agent. An API token cannot create another one."""
    claims = await authenticate(request)
    if claims.kind != "login":
        raise ProtocolError(
            code="forbidden",
            message="API tokens are created with a login token: sign in to the dashboard or POST /api/v1/auth/login.",
            status=403,
        )
    body = decode(ApiTokenCreate, await request.read(), what="token request")
    outside = [project for project in body.projects if project != "*" and not claims.can_access(project)]
    if outside or ("*" in body.projects and "*" not in claims.projects):
        raise ProtocolError(
            code="forbidden",
            message=f"Agent {claims.name!r} has no access to {', '.join(outside) or 'every project'}: "
            "a token can only narrow the agent's projects.",
            status=403,
        )
    owner = await request.app[AGENT_DIRECTORY].get(claims.name)
    if owner is None or owner.disabled:
        raise ProtocolError(code="agent_disabled", message=f"Agent {claims.name!r} is disabled or deleted.", status=403)
    token, record = await request.app[API_TOKENS].create(
        owner=owner, name=body.name, projects=body.projects, expires_in_days=body.expires_in_days
    )
    log.info("api_token.created", token_id=record.id, agent_id=owner.id)
    created = ApiTokenCreated(**token_view(record).model_dump(), token=token)
    return json_response(created, status=201)


async def revoke_token(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    token_id = request.match_info["token_id"]
    tokens = request.app[API_TOKENS]
    record = await tokens.get(token_id)
    may_revoke = record is not None and (record.agent_name == claims.name or has_permission(claims, Permission.ADMIN))
    if record is None or not may_revoke:
        # The same answer for someone else's token as for a missing one, so that ids cannot be probed.
        raise ProtocolError(code="token_not_found", message=f"No API token {token_id[:32]!r} of yours.", status=404)
    await tokens.revoke(token_id)
    log.info("api_token.revoked", token_id=token_id, by=claims.agent_id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_post("/v1/agents", create_agent)
    app.router.add_patch("/v1/agents/{name}", update_agent)
    app.router.add_get("/v1/tokens", list_tokens)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_delete("/v1/tokens/{token_id}", revoke_token)
