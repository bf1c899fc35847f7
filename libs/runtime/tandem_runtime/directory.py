"""Projects and agent accounts, kept in NATS key-value buckets so that every pod sees the same."""

from __future__ import annotations

import time
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from pydantic import BaseModel
from tandem_protocol import Project, decode, encode, subjects

_hasher = PasswordHasher()

Role = Literal["admin", "agent", "viewer"]


class ProjectDirectory:
    """Look up projects by their public key, with a short cache in front of the bucket."""

    def __init__(self, *, js: JetStreamContext, cache_seconds: float = 10.0) -> None:
        self._js = js
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Project | None]] = {}

    async def by_key(self, key: str) -> Project | None:
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached and now - cached[0] < self._cache_seconds:
            return cached[1]
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        try:
            entry = await kv.get(_kv_safe(key))
            project = decode(Project, entry.value) if entry.value else None
        except KeyNotFoundError:
            project = None
        self._cache[key] = (now, project)
        return project

    async def put(self, project: Project) -> None:
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        await kv.put(_kv_safe(project.key), encode(project))
        self._cache.pop(project.key, None)

    async def all(self) -> list[Project]:
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        try:
            keys = await kv.keys()
        except Exception:  # nats-py raises NoKeysError on an empty bucket
            return []
        projects = []
        for key in keys:
            entry = await kv.get(key)
            if entry.value:
                projects.append(decode(Project, entry.value))
        return projects


class AgentAccount(BaseModel):
    id: str
    name: str
    role: Role
    password_hash: str
    projects: list[str] = ["*"]
    created_at: int = 0


class AgentDirectory:
    """Agent accounts with argon2id password hashes."""

    def __init__(self, *, js: JetStreamContext) -> None:
        self._js = js

    async def get(self, name: str) -> AgentAccount | None:
        kv = await self._js.key_value(subjects.AGENTS_BUCKET)
        try:
            entry = await kv.get(_kv_safe(name))
        except KeyNotFoundError:
            return None
        return AgentAccount.model_validate_json(entry.value) if entry.value else None

    async def create(self, *, name: str, password: str, role: Role, projects: list[str] | None = None) -> AgentAccount:
        account = AgentAccount(
            id=f"agent-{_kv_safe(name)}",
            name=name,
            role=role,
            password_hash=_hasher.hash(password),
            projects=projects or ["*"],
            created_at=int(time.time() * 1000),
        )
        kv = await self._js.key_value(subjects.AGENTS_BUCKET)
        await kv.put(_kv_safe(name), account.model_dump_json().encode())
        return account

    async def authenticate(self, name: str, password: str) -> AgentAccount | None:
        """Return the account when the password matches, else None. Unknown names cost the same time."""
        account = await self.get(name)
        if account is None:
            _hasher.hash(password)
            return None
        try:
            _hasher.verify(account.password_hash, password)
        except VerificationError:
            return None
        return account


def _kv_safe(value: str) -> str:
    """Map a name onto the characters NATS allows in keys, keeping it readable and unique."""
    return "".join(ch if ch.isalnum() or ch in "-_" else f"={ord(ch):x}=" for ch in value)
