"""The all-in-one server with short consent and lockout times, and helpers that act as admin, agents and trackers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from tandem_runtime.tokens import TokenSigner
from tandem_sessions.api import RUNTIME

from tests.conftest import SECRET_KEY, RunningTandem, start_tandem

LOGIN_MAX_FAILURES = 3
WATCH_CONSENT_TIMEOUT_SECONDS = 1.5
SHOP_ORIGIN = "https://shop.example.com"
META = {"type": 4, "timestamp": 1, "data": {"href": "https://shop.example.com/", "width": 800, "height": 600}}
SNAPSHOT = {
    "type": 2,
    "timestamp": 2,
    "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
}


@dataclass
class Server:
    """A running Tandem, its runner (for the app inside), and the admin's login token."""

    tandem: RunningTandem
    runner: web.AppRunner
    http: aiohttp.ClientSession
    admin_token: str
    names: int = 0

    @property
    def url(self) -> str:
        return self.tandem.url

    @property
    def live_ws(self) -> str:
        return self.tandem.ws_url

    @property
    def signal_ws(self) -> str:
        return self.url.replace("http://", "ws://") + "/signal/v1/ws"

    def sessions_app(self) -> web.Application:
        """The sessions service's application inside the all-in-one server."""
        for resource in self.runner.app.router.resources():
            if isinstance(resource, web.PrefixedSubAppResource) and resource.canonical == "/api":
                return resource._app
        raise AssertionError("no app is mounted under /api")

    async def call(
        self, method: str, path: str, token: str | None = None, *, json: Any = None, headers: dict | None = None
    ) -> tuple[int, Any, Any]:
        """Send a request; return the status, the JSON body (None when empty) and the headers."""
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, json=json, headers=all_headers) as response:
            text = await response.text()
            body = await response.json(content_type=None) if text else None
            return response.status, body, response.headers

    async def login(self, name: str, password: str) -> tuple[int, Any, Any]:
        return await self.call("POST", "/api/v1/auth/login", json={"username": name, "password": password})

    def unique(self, prefix: str) -> str:
        """Return `prefix` with a number this server has not handed out, as tests share the server."""
        self.names += 1
        return f"{prefix}-{self.names}"

    async def create_project(self, prefix: str, **fields: Any) -> dict:
        """Create a project whose id starts with `prefix`; return it (with its generated id and key)."""
        status, body, _ = await self.call(
            "POST", "/api/v1/projects", self.admin_token, json={"id": self.unique(prefix), **fields}
        )
        assert status == 201, body
        return body

    def agent(self, prefix: str, role: str = "agent", projects: list[str] | None = None) -> str:
        """Return a login token, signed with the server's key, of an agent whose name starts with `prefix`.

        The account does not exist: signing is what a login does after checking the password,
        and skips argon2, which takes about a second per hash here.
        """
        name = self.unique(prefix)
        token, _ = TokenSigner(secret_key=SECRET_KEY).sign_agent(
            agent_id=f"agent-{name}", name=name, role=role, projects=projects or ["*"], ttl_seconds=600
        )
        return token

    async def account(self, prefix: str, role: str = "agent", projects: list[str] | None = None) -> tuple[str, str]:
        """Create an agent account through the API and sign in; return its name and login token."""
        name = self.unique(prefix)
        password = f"password-of-{name}"
        status, body, _ = await self.call(
            "POST",
            "/api/v1/agents",
            self.admin_token,
            json={"name": name, "password": password, "role": role, "projects": projects or ["*"]},
        )
        assert status == 201, body
        status, body, _ = await self.login(name, password)
        assert status == 200, body
        return name, body["token"]

    async def start(self, project_key: str, *, tab_id: str = "tab-1", origin: str | None = SHOP_ORIGIN) -> dict:
        """Start a tracker session; return the start response."""
        status, body, _ = await self.start_raw(project_key, tab_id=tab_id, origin=origin)
        assert status == 200, body
        return body

    async def start_raw(
        self, project_key: str, *, tab_id: str = "tab-1", origin: str | None = SHOP_ORIGIN
    ) -> tuple[int, Any, Any]:
        body = {"projectKey": project_key, "tabId": tab_id, "url": "https://shop.example.com/"}
        headers = {"Origin": origin} if origin else {}
        return await self.call("POST", "/ingest/v1/web/start", json=body, headers=headers)

    async def batch(
        self,
        token: str,
        seq: int,
        events: list[dict],
        *,
        tab_id: str = "tab-1",
        origin: str | None = SHOP_ORIGIN,
        **extra,
    ) -> tuple[int, Any, Any]:
        headers = {"Origin": origin} if origin else {}
        body = {"tabId": tab_id, "seq": seq, "events": events, **extra}
        return await self.call("POST", "/ingest/v1/web/i", token, json=body, headers=headers)

    async def page(self, token: str, seq: int = 0, tab_id: str = "tab-1") -> None:
        """Send a batch that starts a page (Meta and FullSnapshot), so that watching shows something."""
        status, body, _ = await self.batch(token, seq, [META, SNAPSHOT], tab_id=tab_id)
        assert status == 200, body


async def make_server(data_dir: Path, http: aiohttp.ClientSession) -> tuple[web.AppRunner, Server]:
    runner, tandem = await start_tandem(data_dir)
    server = Server(tandem=tandem, runner=runner, http=http, admin_token="")
    status, body, _ = await server.login("admin", tandem.admin_password)
    assert status == 200, body
    server.admin_token = body["token"]
    runtime = server.sessions_app()[RUNTIME]
    for _ in range(600):  # the store opens in the background, slower on a busy machine
        if runtime.store is not None:
            break
        await asyncio.sleep(0.1)
    assert runtime.store is not None, runtime.store_problem
    return runner, server


SERVER_ENVIRONMENT = {
    "TANDEM_LOGIN_MAX_FAILURES": str(LOGIN_MAX_FAILURES),
    "TANDEM_WATCH_CONSENT_TIMEOUT_SECONDS": str(WATCH_CONSENT_TIMEOUT_SECONDS),
    "TANDEM_CONSENT_TIMEOUT_SECONDS": "5",
    "TANDEM_CONSUMER_FETCH_TIMEOUT_SECONDS": "0.2",
    # Tests pick the client address of a sign-in with X-Forwarded-For, so that a lockout stays in its test.
    "TANDEM_TRUSTED_PROXIES": "127.0.0.1/32",
    "TANDEM_PROJECT_RATE_OVERRIDES": '{"throttled": 1}',
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One Tandem per test module (tests use their own project and agent names), with short timeouts.

    Sign-ins lock out after 3 failures, a watch request expires after 1.5 s, and the
    project named "throttled" may send one tracker request per second.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SERVER_ENVIRONMENT.items():
            patch.setenv(name, value)
        async with aiohttp.ClientSession() as http:
            runner, running = await make_server(tmp_path_factory.mktemp("tandem") / "data", http)
            yield running
            await runner.cleanup()


class LiveClient:
    """One agent socket to `/live/v1/ws`, with its frames kept so that tests wait for one kind."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, server: Server, token: str, **options: Any) -> LiveClient:
        ws = await server.http.ws_connect(server.live_ws, **options)
        await ws.send_json({"type": "auth", "token": token})
        return cls(ws)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(message.json())
                self._arrived.set()
        self._arrived.set()

    async def send(self, frame: dict) -> None:
        await self.ws.send_json(frame)

    async def next(self, kind: str, timeout: float = 5.0) -> dict:
        """Remove and return the first frame of `kind`, waiting for it if needed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index, frame in enumerate(self.frames):
                if frame["type"] == kind:
                    return self.frames.pop(index)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or (self.ws.closed and not self.frames):
                raise AssertionError(f"no {kind!r} frame within {timeout} s; frames: {self.frames[-5:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    def seen(self, kind: str) -> list[dict]:
        return [frame for frame in self.frames if frame["type"] == kind]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
