"""Disabling an agent's account ends its signed tokens and closes its open sockets within seconds.

A login or socket token is signed, so it stays valid on its own until it expires.
`AccountGuard` checks the account the token names. The token is rejected when the
account is disabled, when its id is not the token's, or when the token was issued
before the account's `tokens_issued_after` (a password change, a disable, a reset).
The next check closes the sockets opened with it. A token whose name has no account
is accepted: sign-in maps every identity onto an account, so only a holder of the
signing key can make one.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import WSCloseCode, web
from tandem_protocol import ProtocolError

from tandem_runtime.directory import AgentAccount, AgentDirectory
from tandem_runtime.tokens import AgentClaims

log = structlog.get_logger(__name__)

ACCOUNT_CACHE_SECONDS = 5.0
"""How long a pod trusts an account it read: a disabled account stops working on every pod within this time."""

RECHECK_SECONDS = 5.0
"""Time between two checks of the accounts whose sockets are open."""

CLOSE_TIMEOUT_SECONDS = 5.0
"""Time a socket of a disabled account has to close; past it, `on_disabled` should drop the connection."""

OnDisabled = Callable[[], Awaitable[None]]


def _active(account: AgentAccount | None, claims: AgentClaims) -> bool:
    if account is None:
        return True
    return not account.disabled and account.id == claims.agent_id and claims.issued_at >= account.tokens_issued_after


class AccountGuard:
    """Rejects signed tokens of disabled accounts, and closes the sockets they opened."""

    def __init__(self, agents: AgentDirectory, *, cache_seconds: float = ACCOUNT_CACHE_SECONDS) -> None:
        self._agents = agents
        self._cache_seconds = cache_seconds
        self._read: dict[str, tuple[float, AgentAccount | None]] = {}
        self._followed: dict[int, tuple[AgentClaims, OnDisabled]] = {}
        self._keys = itertools.count()
        self._closing: set[asyncio.Task] = set()

    async def require_active(self, claims: AgentClaims) -> None:
        """Raise a 401 ProtocolError when the account of the token is disabled, or has another id than the token."""
        if claims.kind == "api":
            return  # ApiTokenDirectory.verify reads the account of every API token itself.
        if not _active(await self._account(claims.name), claims):
            raise ProtocolError(
                code="invalid_token",
                message=f"Agent {claims.name!r} is disabled, so this token no longer works. "
                "Sign in with an active account.",
                status=401,
            )

    def forget(self, name: str) -> None:
        """Drop this pod's copy of an account that changed; other pods read it again within the cache time."""
        self._read.pop(name, None)

    def follow(self, claims: AgentClaims, on_disabled: OnDisabled) -> Callable[[], None]:
        """Call `on_disabled` once the token's account is disabled; return the function that stops following."""
        key = next(self._keys)
        self._followed[key] = (claims, on_disabled)
        return lambda: self._followed.pop(key, None)

    async def run(self, interval_seconds: float = RECHECK_SECONDS) -> None:
        """Check the followed accounts every `interval_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                await self.check_followed()
            except Exception as exc:
                log.warning("accounts.check_failed", error=repr(exc))

    async def check_followed(self) -> None:
        """Read each followed account once, and call `on_disabled` of every follower whose account is disabled."""
        accounts: dict[str, AgentAccount | None] = {}
        for key, (claims, on_disabled) in list(self._followed.items()):
            if claims.name not in accounts:
                accounts[claims.name] = await self._account(claims.name)
            if _active(accounts[claims.name], claims):
                continue
            agent_id = claims.agent_id
            self._followed.pop(key, None)
            log.info("accounts.socket_closed", agent_id=agent_id, reason="account disabled")
            # Each close in its own task: a client that stops reading must not hold up the others.
            closing = asyncio.create_task(self._close(agent_id, on_disabled))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _close(self, agent_id: str, on_disabled: OnDisabled) -> None:
        try:
            await asyncio.wait_for(on_disabled(), timeout=CLOSE_TIMEOUT_SECONDS)
        except (Exception, asyncio.CancelledError) as exc:
            # Cancelled too: aiohttp cancels a close that waits when the socket's handler ends.
            log.warning("accounts.close_failed", agent_id=agent_id, error=repr(exc))

    async def _account(self, name: str) -> AgentAccount | None:
        cached = self._read.get(name)
        if cached is not None and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1]
        account = await self._agents.get(name)
        if len(self._read) > 10_000:
            self._read.clear()
        self._read[name] = (time.monotonic(), account)
        return account


ACCOUNT_GUARD = web.AppKey("tandem_account_guard", AccountGuard)


def follow_accounts(app: web.Application, guard: AccountGuard) -> None:
    """Keep `guard` in the app and check its followed accounts while the app runs."""
    app[ACCOUNT_GUARD] = guard

    async def checking(app: web.Application):
        task = asyncio.create_task(guard.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(checking)


async def close_disabled_socket(request: web.Request, ws: web.WebSocketResponse) -> None:
    """Close an agent's socket with 1008 `agent_disabled`; drop the connection of a client that stops reading."""
    try:
        await asyncio.wait_for(
            ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"agent_disabled"), timeout=CLOSE_TIMEOUT_SECONDS / 2
        )
    except TimeoutError:
        log.info("accounts.socket_dropped", reason="close handshake timed out")
        if request.transport is not None:
            request.transport.abort()
