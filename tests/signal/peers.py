"""A test client of the Assist WebSocket: one socket, its frames kept in order so that tests wait for one kind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY

Frame = dict[str, Any]


def signal_url(tandem) -> str:
    return tandem.url.replace("http://", "ws://") + "/signal/v1/ws"


def session_token(session_id: str, *, project_id: str = "demo", tab_id: str = "tab-1") -> str:
    """A tracker's session token, signed with the test server's key, as the ingest service hands it out."""
    signer = TokenSigner(secret_key=SECRET_KEY)
    return signer.sign_session(
        session_id=session_id, project_id=project_id, tab_id=tab_id, started_at=0, ttl_seconds=600
    )


class SignalClient:
    """One socket to `/signal/v1/ws`. `hello` is the first frame after a successful auth."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[Frame] = []
        self.hello: Frame = {}
        self._arrived = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, http: aiohttp.ClientSession, tandem, auth: Frame) -> SignalClient:
        ws = await http.ws_connect(signal_url(tandem))
        await ws.send_json({"type": "auth", **auth})
        client = cls(ws)
        first = await client.next()
        if first["type"] == "hello":
            client.hello = first
        else:
            client.frames.insert(0, first)
        return client

    @classmethod
    async def user(cls, http, tandem, session_id: str) -> SignalClient:
        client = await cls.connect(http, tandem, {"token": session_token(session_id)})
        assert client.hello, client.frames
        return client

    @classmethod
    async def agent(cls, http, tandem, session_id: str, token: str, *, project_id: str = "demo") -> SignalClient:
        client = await cls.connect(http, tandem, {"token": token, "projectId": project_id, "sessionId": session_id})
        assert client.hello, client.frames
        return client

    @property
    def peer_id(self) -> str:
        return self.hello["peerId"]

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(message.json())
                self._arrived.set()
        self._arrived.set()

    async def send(self, frame: Frame) -> None:
        await self.ws.send_json(frame)

    async def next(
        self, kind: str | None = None, where: Callable[[Frame], bool] = lambda _: True, timeout: float = 5.0
    ) -> Frame:
        """Remove and return the first frame of `kind` matching `where`, waiting for it if needed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for index, frame in enumerate(self.frames):
                if (kind is None or frame["type"] == kind) and where(frame):
                    return self.frames.pop(index)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self.ws.closed and not self.frames:
                raise AssertionError(f"no {kind or 'frame'} within {timeout} s; frames: {self.frames[-5:]}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass

    async def state(self, where: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """Wait for a `room.state` whose state matches `where` and return that state."""
        frame = await self.next("room.state", lambda f: where(f["state"]), timeout=timeout)
        return frame["state"]

    async def error(self, code: str, timeout: float = 5.0) -> Frame:
        return await self.next("error", lambda f: f["code"] == code, timeout=timeout)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


async def grant(user: SignalClient, agent: SignalClient, kind: str) -> Frame:
    """Have `agent` request `kind` (call or control) and `user` accept it; return the room state after."""
    await agent.send({"type": f"{kind}.request"})
    state = await user.state(lambda s: any(r["kind"] == kind and r["peerId"] == agent.peer_id for r in s["requests"]))
    request = next(r for r in state["requests"] if r["kind"] == kind and r["peerId"] == agent.peer_id)
    await user.send({"type": "consent.answer", "requestId": request["requestId"], "accepted": True})
    result = await agent.next("consent.result", lambda f: f["requestId"] == request["requestId"])
    assert result["outcome"] == "accepted"
    if kind == "call":
        return await agent.state(lambda s: s["call"] is not None and agent.peer_id in s["call"]["legs"])
    return await agent.state(lambda s: s["control"] is not None and s["control"]["peerId"] == agent.peer_id)
