"""Projects, agent accounts and API tokens, kept in NATS key-value buckets so that every pod sees the same."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from pydantic import BaseModel
from tandem_protocol import Project, ProtocolError, decode, encode, subjects
from tandem_protocol.access import Role

from tandem_runtime.tokens import AgentClaims

log = structlog.get_logger(__name__)

_hasher = PasswordHasher()

MISS_RELOAD_SECONDS = 1.0
"""Minimum time between two reloads of the project list caused by the same unknown project id."""

API_TOKEN_PREFIX = "tdm_"
API_TOKEN_CACHE_SECONDS = 5.0
"""How long a pod trusts an API token it checked: a revocation takes up to this long to reach every pod."""

__all__ = ["AgentAccount", "AgentDirectory", "ApiTokenDirectory", "ApiTokenRecord", "ProjectDirectory", "Role"]


def now_ms() -> int:
    return int(time.time() * 1000)


async def bucket_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """Return every key of a key-value bucket that has a message, deleted keys included (their get() fails).

    nats-py's `KeyValue.keys()` sometimes reports an empty bucket (about 2% of calls on
    a bucket of 300 keys here). Its watcher ends the listing when the consumer reports
    nothing pending, which can happen before the delivered messages are read. The
    stream's own list of subjects has no such race.
    The server lists up to 100,000 subjects in one response, far more than these buckets hold.
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return [subject[len(prefix) :] for subject in sorted(info.state.subjects or {})]


class ProjectDirectory:
    """Look up projects by their public key or their id, with a short cache in front of the bucket."""

    def __init__(self, *, js: JetStreamContext, cache_seconds: float = 10.0) -> None:
        self._js = js
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Project | None]] = {}
        self._by_id: tuple[float, dict[str, Project]] | None = None
        self._missed: dict[str, float] = {}
        self._reloading: asyncio.Future | None = None
        self._generation = 0
        """Counts forget() calls, so that a read which began before one does not fill the cache."""

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

    async def by_id(self, project_id: str) -> Project | None:
        """Return the project with this id, reading the whole bucket at most once per cache period.

        A miss reloads the bucket too, at most once per MISS_RELOAD_SECONDS for one id, so that
        a project created on another pod is found at once rather than after the cache period.
        """
        now = time.monotonic()
        loaded = self._by_id
        stale = loaded is None or now - loaded[0] >= self._cache_seconds
        if not stale and project_id not in loaded[1]:
            stale = now - self._missed.get(project_id, -math.inf) >= MISS_RELOAD_SECONDS
        if stale:
            loaded = await self._reload_by_id(since=-math.inf)
            if project_id not in loaded[1] and loaded[0] < now:
                # The read joined began before this call, maybe before the project was created.
                loaded = await self._reload_by_id(since=now)
        if project_id not in loaded[1]:
            if len(self._missed) > 10_000:
                self._missed.clear()
            self._missed[project_id] = now
        return loaded[1].get(project_id)

    async def _reload_by_id(self, *, since: float) -> tuple[float, dict[str, Project]]:
        """Read the whole bucket once for every caller waiting at the same time.

        Returns a read that began at `since` or later, starting one when the read under
        way began earlier. Each read requests the stream's subjects and then
        reads every key, so a reload per request would flood the server when the cache
        expires under load.
        """
        while True:
            if self._reloading is None:
                self._reloading = asyncio.ensure_future(self._read_by_id())
            reloading = self._reloading
            try:
                loaded = await asyncio.shield(reloading)
            finally:
                if reloading.done() and self._reloading is reloading:
                    self._reloading = None
            if loaded[0] >= since:
                return loaded

    async def _read_by_id(self) -> tuple[float, dict[str, Project]]:
        started, generation = time.monotonic(), self._generation
        projects: dict[str, Project] = {}
        ambiguous: set[str] = set()
        for project in await self.all():
            if project.id in projects:
                ambiguous.add(project.id)
            projects[project.id] = project
        for project_id in ambiguous:
            # Fail closed: which entry's settings (consent, origins) apply is unknown.
            log.error("projects.duplicate_id", project_id=project_id)
            del projects[project_id]
        loaded = (started, projects)
        if generation == self._generation:
            self._by_id = loaded
        return loaded

    async def put(self, project: Project) -> None:
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        await kv.put(_kv_safe(project.key), encode(project))
        self.forget(project.key)

    async def create(self, project: Project) -> None:
        """Store a new project; raise a 409 ProtocolError when its id or key is taken."""
        if await self.by_id_uncached(project.id) is not None:
            raise ProtocolError(
                code="project_exists", message=f"A project with id {project.id!r} exists. Pick another id.", status=409
            )
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        try:
            await kv.create(_kv_safe(project.key), encode(project))
        except KeyWrongLastSequenceError:
            raise ProtocolError(
                code="project_key_taken", message="Another project has this key. Pick another key.", status=409
            ) from None
        self.forget(project.key)
        if len([other for other in await self.all() if other.id == project.id]) > 1:
            # Another request created the same id in between: take this one back.
            await kv.delete(_kv_safe(project.key))
            self.forget(project.key)
            raise ProtocolError(
                code="project_exists", message=f"A project with id {project.id!r} exists. Pick another id.", status=409
            )

    async def by_id_uncached(self, project_id: str) -> Project | None:
        return next((project for project in await self.all() if project.id == project_id), None)

    def forget(self, key: str) -> None:
        """Drop cached lookups, so that this pod sees a change at once (other pods after `cache_seconds`)."""
        self._cache.pop(key, None)
        self._by_id = None
        self._generation += 1

    async def all(self) -> list[Project]:
        kv = await self._js.key_value(subjects.PROJECTS_BUCKET)
        keys = await bucket_keys(self._js, subjects.PROJECTS_BUCKET)
        projects = []
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:  # deleted between keys() and get()
                continue
            if entry.value:
                projects.append(decode(Project, entry.value))
        return sorted(projects, key=lambda project: project.id)


class AgentAccount(BaseModel):
    id: str
    name: str
    role: Role
    password_hash: str
    projects: list[str] = ["*"]
    created_at: int = 0
    disabled: bool = False
    """A disabled account cannot sign in, and its API tokens stop working."""
    tokens_issued_after: int = 0
    """Login and socket tokens issued before this time (seconds since the epoch) are rejected.

    Moved forward when the account is disabled, its password changes or the CLI resets it,
    so that enabling the account again does not bring its old tokens back.
    """


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

    async def all(self) -> list[AgentAccount]:
        kv = await self._js.key_value(subjects.AGENTS_BUCKET)
        keys = await bucket_keys(self._js, subjects.AGENTS_BUCKET)
        accounts = []
        for key in keys:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            if entry.value:
                accounts.append(AgentAccount.model_validate_json(entry.value))
        return sorted(accounts, key=lambda account: account.name)

    async def create(
        self, *, name: str, password: str, role: Role, projects: list[str] | None = None, exist_ok: bool = True
    ) -> AgentAccount:
        """Store a new account. With `exist_ok`, an existing account of that name is replaced (the CLI's reset)."""
        account = AgentAccount(
            id=f"agent-{_kv_safe(name)}",
            name=name,
            role=role,
            password_hash=_hasher.hash(password),
            projects=projects or ["*"],
            created_at=now_ms(),
            tokens_issued_after=_this_second(),
        )
        kv = await self._js.key_value(subjects.AGENTS_BUCKET)
        if exist_ok:
            await kv.put(_kv_safe(name), account.model_dump_json().encode())
            return account
        try:
            await kv.create(_kv_safe(name), account.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            raise ProtocolError(
                code="agent_exists", message=f"An agent named {name!r} exists. Pick another name.", status=409
            ) from None
        return account

    async def update(
        self,
        name: str,
        *,
        password: str | None = None,
        role: Role | None = None,
        projects: list[str] | None = None,
        disabled: bool | None = None,
    ) -> AgentAccount:
        """Change the given fields of an account; raise a 404 ProtocolError when it does not exist."""
        account = await self.get(name)
        if account is None:
            raise ProtocolError(code="agent_not_found", message=f"No agent named {name!r}. Check the name.", status=404)
        if password is not None:
            account.password_hash = _hasher.hash(password)
        if role is not None:
            account.role = role
        if projects is not None:
            account.projects = projects
        if disabled is not None:
            account.disabled = disabled
        if password is not None or disabled:
            account.tokens_issued_after = _this_second()
        kv = await self._js.key_value(subjects.AGENTS_BUCKET)
        await kv.put(_kv_safe(name), account.model_dump_json().encode())
        return account

    async def authenticate(self, name: str, password: str) -> AgentAccount | None:
        """Return the account when the password matches and it is enabled, else None.

        An unknown name costs one argon2 hash too, so that timing does not tell which names exist.
        """
        account = await self.get(name)
        if account is None:
            _hasher.hash(password)
            return None
        try:
            _hasher.verify(account.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        return None if account.disabled else account


# API tokens ---------------------------------------------------------------------------------


class ApiTokenRecord(BaseModel):
    """An API token as stored: the SHA-256 of its secret part, never the token itself."""

    id: str
    name: str
    agent_name: str
    projects: list[str]
    """Projects the token is limited to; empty means every project of its agent."""
    secret_sha256: str
    created_at: int
    expires_at: int = 0


class ApiTokenDirectory:
    """Create, list, revoke and check API tokens: `tdm_<id>_<secret>` bearer tokens for the HTTP APIs.

    The secret is 32 random bytes, so a fast hash (SHA-256) is enough to store it:
    unlike a password, it cannot be guessed from a list. A token acts for its agent with
    the agent's current role, limited to the projects both the token and the agent have;
    disabling or deleting the agent disables its tokens.
    """

    def __init__(self, *, js: JetStreamContext, agents: AgentDirectory) -> None:
        self._js = js
        self._agents = agents
        self._checked: dict[str, tuple[float, AgentClaims]] = {}

    async def create(
        self, *, owner: AgentAccount, name: str, projects: list[str], expires_in_days: int
    ) -> tuple[str, ApiTokenRecord]:
        """Store a new token for `owner` and return the token (shown once) and its record."""
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        record = ApiTokenRecord(
            id=token_id,
            name=name,
            agent_name=owner.name,
            projects=projects,
            secret_sha256=_sha256(secret),
            created_at=now_ms(),
            expires_at=now_ms() + expires_in_days * 86_400_000 if expires_in_days else 0,
        )
        kv = await self._js.key_value(subjects.API_TOKENS_BUCKET)
        await kv.create(token_id, record.model_dump_json().encode())
        return f"{API_TOKEN_PREFIX}{token_id}_{secret}", record

    async def all(self) -> list[ApiTokenRecord]:
        keys = await bucket_keys(self._js, subjects.API_TOKENS_BUCKET)
        records = []
        for key in keys:
            record = await self.get(key)
            if record is not None:
                records.append(record)
        return sorted(records, key=lambda record: record.created_at)

    async def get(self, token_id: str) -> ApiTokenRecord | None:
        kv = await self._js.key_value(subjects.API_TOKENS_BUCKET)
        try:
            entry = await kv.get(_kv_safe(token_id))
        except KeyNotFoundError:
            return None
        return ApiTokenRecord.model_validate_json(entry.value) if entry.value else None

    async def revoke(self, token_id: str) -> None:
        kv = await self._js.key_value(subjects.API_TOKENS_BUCKET)
        await kv.purge(_kv_safe(token_id))
        self._checked = {key: value for key, value in self._checked.items() if value[1].token_id != token_id}

    def forget_agent(self, name: str) -> None:
        """Drop this pod's checked tokens of an agent whose account changed; other pods follow within the cache time."""
        self._checked = {key: value for key, value in self._checked.items() if value[1].name != name}

    async def verify(self, token: str) -> AgentClaims:
        """Return the claims of a valid API token, or raise a 401 ProtocolError."""
        cached = self._checked.get(token)
        if cached is not None and time.monotonic() - cached[0] < API_TOKEN_CACHE_SECONDS:
            return cached[1]
        claims = await self._verify_uncached(token)
        if len(self._checked) > 10_000:
            self._checked.clear()
        self._checked[token] = (time.monotonic(), claims)
        return claims

    async def _verify_uncached(self, token: str) -> AgentClaims:
        token_id, _, secret = token.removeprefix(API_TOKEN_PREFIX).partition("_")
        record = await self.get(token_id) if token_id and secret else None
        if record is None or not hmac.compare_digest(record.secret_sha256, _sha256(secret)):
            raise _invalid_api_token("it is unknown or was revoked")
        if record.expires_at and record.expires_at <= now_ms():
            raise _invalid_api_token("it has expired")
        account = await self._agents.get(record.agent_name)
        if account is None or account.disabled:
            raise _invalid_api_token(f"its agent {record.agent_name!r} is disabled or deleted")
        return AgentClaims(
            agent_id=account.id,
            name=account.name,
            role=account.role,
            projects=narrow_projects(account.projects, record.projects),
            expires_at=record.expires_at // 1000,
            kind="api",
            token_id=record.id,
        )


def narrow_projects(granted: list[str], requested: list[str]) -> list[str]:
    """Return the projects in both lists, where `*` in either, or an empty `requested`, means every project."""
    if not requested or "*" in requested:
        return list(granted)
    if "*" in granted:
        return list(requested)
    return [project for project in requested if project in granted]


def _invalid_api_token(reason: str) -> ProtocolError:
    return ProtocolError(
        code="invalid_token", message=f"The API token is invalid: {reason}. Create a new one.", status=401
    )


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _this_second() -> int:
    """Return the current second: tokens carry whole seconds, so one issued earlier in this second stays valid."""
    return int(time.time())


def _kv_safe(value: str) -> str:
    """Map a name onto the characters NATS allows in keys, keeping it readable and unique."""
    return "".join(ch if ch.isalnum() or ch in "-_" else f"={ord(ch):x}=" for ch in value)
