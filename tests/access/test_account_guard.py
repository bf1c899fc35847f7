"""The account guard on a real nats-server: a stalled or cancelled close never stops the other closes."""

from __future__ import annotations

import asyncio
import time

import pytest
from tandem_runtime.accounts import AccountGuard
from tandem_runtime.directory import AgentDirectory
from tandem_runtime.tokens import AgentClaims

pytestmark = pytest.mark.asyncio


async def test_stalled_close_blocks_nothing(nats_client):
    agents = AgentDirectory(js=nats_client.jetstream())
    account = await agents.create(name="nina", password="password-of-nina", role="agent")
    guard = AccountGuard(agents, cache_seconds=0)
    never = asyncio.Event()
    closed: list[str] = []

    async def stalled() -> None:
        await never.wait()  # A client that stops reading: the close handshake never ends.

    async def cancelled() -> None:
        raise asyncio.CancelledError  # What aiohttp does to a close when the socket's handler ends.

    async def closes(label: str) -> None:
        closed.append(label)

    claims = AgentClaims(agent_id=account.id, name=account.name, role="agent", issued_at=int(time.time()) + 1)
    guard.follow(claims, stalled)
    guard.follow(claims, cancelled)
    guard.follow(claims, lambda: closes("first"))
    checking = asyncio.create_task(guard.run(interval_seconds=0.05))
    try:
        await agents.update(account.name, disabled=True)
        async with asyncio.timeout(5):
            while not closed:
                await asyncio.sleep(0.05)
        assert closed == ["first"]

        # The checks go on after a stalled and a cancelled close: a later socket is closed too.
        guard.follow(claims, lambda: closes("second"))
        async with asyncio.timeout(5):
            while len(closed) < 2:
                await asyncio.sleep(0.05)
        assert closed == ["first", "second"]
        assert not checking.done()
    finally:
        checking.cancel()
        await asyncio.gather(checking, return_exceptions=True)
