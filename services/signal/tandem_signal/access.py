"""The Origin check of the Assist socket, once its auth frame identifies who connects.

The tracker's socket must come from one of its project's allowed origins; an
agent's socket from the server's own origin or TANDEM_AGENT_ORIGINS.
"""

from __future__ import annotations

from aiohttp import web
from nats.js import JetStreamContext
from tandem_protocol import ProtocolError
from tandem_runtime.access import check_agent_socket_origin, origin_allowed
from tandem_runtime.accounts import AccountGuard, follow_accounts
from tandem_runtime.directory import AgentDirectory, ProjectDirectory

PROJECTS = web.AppKey("signal_projects", ProjectDirectory)


def setup(app: web.Application, *, js: JetStreamContext) -> None:
    app[PROJECTS] = ProjectDirectory(js=js)
    follow_accounts(app, AccountGuard(AgentDirectory(js=js)))


async def check_origin(request: web.Request, *, project_id: str, is_tracker: bool, agent_origins: list[str]) -> None:
    """Raise a 403 ProtocolError when the socket's Origin is not allowed for who it authenticated as."""
    if not is_tracker:
        check_agent_socket_origin(request, agent_origins)
        return
    project = await request.app[PROJECTS].by_id(project_id)
    origin = request.headers.get("Origin")
    if project is None:
        raise ProtocolError(
            code="unknown_project",
            message=f"Project {project_id!r} of this session no longer exists.",
            status=404,
        )
    if not origin_allowed(origin, project.allowed_origins):
        raise ProtocolError(
            code="origin_not_allowed",
            message=f"Project {project.id!r} does not allow Assist from {origin[:200]!r}. "
            "Add the origin to the project's allowed origins.",
            status=403,
        )
