"""First-start set-up for local use: a secret key, the demo project and the first admin account."""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog
from nats.js import JetStreamContext
from tandem_protocol import Project
from tandem_runtime.directory import AgentDirectory, ProjectDirectory

log = structlog.get_logger(__name__)

DEMO_PROJECT_ID = "demo"
ADMIN_NAME = "admin"


def load_or_create_secret(data_dir: Path) -> str:
    """Return the secret key kept in `data_dir`, creating it (readable by the owner only) on first start."""
    path = data_dir / "secret-key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(key)
    return key


async def ensure_demo_project(js: JetStreamContext, *, key: str) -> Project:
    projects = ProjectDirectory(js=js)
    project = await projects.by_key(key)
    if project is None:
        project = Project(id=DEMO_PROJECT_ID, key=key, name="Demo shop")
        await projects.put(project)
        log.info("bootstrap.project_created", project_id=project.id)
    return project


async def ensure_admin(js: JetStreamContext, *, data_dir: Path) -> str | None:
    """Create the `admin` account on first start; return its one-time password, or None when it existed."""
    agents = AgentDirectory(js=js)
    if await agents.get(ADMIN_NAME) is not None:
        return None
    password = secrets.token_urlsafe(12)
    await agents.create(name=ADMIN_NAME, password=password, role="admin")
    path = data_dir / "admin-password"
    path.touch(mode=0o600)
    path.write_text(password + "\n")
    log.info("bootstrap.admin_created", agent_name=ADMIN_NAME, password_file=str(path))
    return password
