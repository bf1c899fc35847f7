"""Routes of the sessions service, mounted under `/api`, and its background work.

At start-up the app opens the session store (applying migrations), then runs the
consumer that stores tracker batches and the pass that marks ended sessions.
When the store cannot be opened, login still works, the recorded-session routes
return 503, and the store is tried again every STORE_RETRY_SECONDS.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator

import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from tandem_runtime.access import authentication_middleware
from tandem_runtime.http import error_middleware
from tandem_runtime.ratelimit import retry_after_middleware
from tandem_runtime.tokens import TokenSigner

from tandem_sessions import access, api
from tandem_sessions.consumer import BatchConsumer, live_session_lookup
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store import StoreError, open_store
from tandem_sessions.store.reader import SessionReader
from tandem_sessions.store.writer import Lifecycle, SessionWriter

log = structlog.get_logger(__name__)

JS = web.AppKey("js", JetStreamContext)
STORE_RETRY_SECONDS = 5.0
FIRST_OPEN_TIMEOUT_SECONDS = 120.0
CONSUMER_STOP_SECONDS = 10.0


def lifecycle_of(settings: SessionsSettings) -> Lifecycle:
    return Lifecycle(
        inactivity_ms=int(settings.session_inactivity_seconds * 1000),
        max_duration_ms=int(settings.session_max_duration_seconds * 1000),
    )


async def end_sessions_forever(writer: SessionWriter, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await writer.end_idle_sessions()
        except StoreError as error:
            log.warning("sessions.end_pass_failed", error=error.message, code=error.code)


class BackgroundWork:
    """The store opener, the consumer and the lifecycle pass of one app."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.runtime = app[api.RUNTIME]
        self.consumer: BatchConsumer | None = None
        self.consumer_task: asyncio.Task | None = None
        self.lifecycle_task: asyncio.Task | None = None
        self.first_attempt_done = asyncio.Event()

    async def start(self) -> None:
        """Open the store, retrying until it opens, then start the lifecycle pass and the consumer."""
        runtime = self.runtime
        while True:
            try:
                runtime.store = await open_store(runtime.settings)
                break
            except StoreError as error:
                runtime.store_problem = f"The session store could not be opened: {error.message}."
                log.error("store.open_failed", error=error.message, code=error.code, retry_seconds=STORE_RETRY_SECONDS)
                self.first_attempt_done.set()
                await asyncio.sleep(STORE_RETRY_SECONDS)
        runtime.reader = SessionReader(store=runtime.store)
        runtime.store_problem = None
        settings = runtime.settings
        js = self.app[JS]
        writer = SessionWriter(
            store=runtime.store, lifecycle=lifecycle_of(settings), start_info=functools.partial(live_session_lookup, js)
        )
        self.lifecycle_task = asyncio.create_task(end_sessions_forever(writer, settings.lifecycle_interval_seconds))
        if settings.consumer_enabled:
            self.consumer = BatchConsumer(js=js, writer=writer, settings=settings)
            await self.consumer.start()
            self.consumer_task = asyncio.create_task(self.consumer.run())
        self.first_attempt_done.set()

    async def stop(self) -> None:
        """Let the consumer finish the fetch in hand, then close everything in reverse order."""
        if self.consumer is not None and self.consumer_task is not None:
            await self.consumer.stop()
            _, pending = await asyncio.wait([self.consumer_task], timeout=CONSUMER_STOP_SECONDS)
            for task in pending:
                log.warning("consumer.stop_timed_out", timeout_seconds=CONSUMER_STOP_SECONDS)
                task.cancel()
            await asyncio.gather(self.consumer_task, return_exceptions=True)
            await self.consumer.close()
        if self.lifecycle_task is not None:
            self.lifecycle_task.cancel()
            await asyncio.gather(self.lifecycle_task, return_exceptions=True)
        if self.runtime.store is not None:
            self.runtime.reader = None
            await self.runtime.store.close()
            self.runtime.store = None


async def run_background(app: web.Application) -> AsyncIterator[None]:
    work = BackgroundWork(app)
    opener = asyncio.create_task(work.start())
    # Wait for the first attempt to open the store, so that the first request finds it. When that
    # attempt fails (a ClickHouse server that is down), serve anyway and keep trying in the background.
    attempt = asyncio.create_task(work.first_attempt_done.wait())
    await asyncio.wait([opener, attempt], timeout=FIRST_OPEN_TIMEOUT_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    attempt.cancel()
    if opener.done() and opener.exception() is not None:
        raise opener.exception()
    yield
    opener.cancel()
    await asyncio.gather(opener, return_exceptions=True)
    await work.stop()


def create_app(*, settings: SessionsSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the sessions application; mount it under `/api`."""
    app = web.Application(
        middlewares=[
            error_middleware("sessions"),
            retry_after_middleware,
            authentication_middleware(),
            api.store_error_middleware,
        ]
    )
    app[JS] = nc.jetstream()
    app[api.RUNTIME] = api.SessionsRuntime(settings=settings, signer=signer)
    app.cleanup_ctx.append(run_background)
    # After run_background, so that the audit consumer stops before the store closes.
    access.mount(app, settings=settings, nc=nc, signer=signer)
    api.add_routes(app)
    return app
