"""Fixtures of the privacy tests: the test pages on their own origin, Chromium, and what the tracker sent.

The pages in `pages/` are served by a small aiohttp app on 127.0.0.1, on another port than
Tandem, so that the tracker posts across origins as it does on a customer's site. `{{name}}` in
a page is replaced by the seeded value `name` of the test.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright

from tests.conftest import RunningTandem, listen, start_tandem
from tests.privacy.recorded import all_events, custom_events

PAGES = Path(__file__).resolve().parent / "pages"
DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class PageServer:
    """Serves `pages/` and the built tracker on 127.0.0.1, filling `{{name}}` with `seeds[name]`."""

    def __init__(self) -> None:
        self.seeds: dict[str, str] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        if not (DIST / "tracker.js").is_file():
            pytest.fail(f"{DIST / 'tracker.js'} is missing; run `make web` first.")
        app = web.Application()
        app.router.add_get("/tracker.js", self._tracker)
        app.router.add_get("/pages/{name}", self._page)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = await listen(self._runner)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _tracker(self, _: web.Request) -> web.FileResponse:
        return web.FileResponse(DIST / "tracker.js")

    async def _page(self, request: web.Request) -> web.StreamResponse:
        path = (PAGES / request.match_info["name"]).resolve()
        if path.parent != PAGES or not path.is_file():
            raise web.HTTPNotFound()
        if path.suffix == ".js":
            return web.FileResponse(path)
        text = path.read_text()
        for name, value in self.seeds.items():
            text = text.replace("{{" + name + "}}", value)
        return web.Response(text=text, content_type="text/html")


def decode_body(body: bytes | None) -> bytes:
    """Return a request body, decompressed when the tracker gzip- or deflate-compressed it."""
    if not body:
        return b""
    if body[:2] == b"\x1f\x8b":
        return gzip.decompress(body)
    if body[:1] == b"\x78":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return body
    return body


@dataclass
class Recording:
    """Every request body a browser context sent to the ingest API, decoded."""

    bodies: list[tuple[str, bytes]] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._on_request)

    def _on_request(self, request: Request) -> None:
        if "/ingest/" in request.url and request.method == "POST":
            self.bodies.append((request.url, decode_body(request.post_data_buffer)))

    def batches(self) -> list[dict[str, Any]]:
        return [json.loads(body) for url, body in self.bodies if url.endswith("/v1/web/i") and body]

    def start_requests(self) -> list[dict[str, Any]]:
        return [json.loads(body) for url, body in self.bodies if url.endswith("/v1/web/start") and body]

    def events(self) -> list[dict[str, Any]]:
        return all_events(self.batches())

    def text(self) -> str:
        """Every body as one string, for searching."""
        return "\n".join(body.decode(errors="replace") for _, body in self.bodies)

    async def wait_for(self, accept: Callable[[list[dict[str, Any]]], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            found = accept(self.events())
            if found:
                return found
            if time.monotonic() > deadline:
                kinds = [(event["type"], (event.get("data") or {}).get("tag")) for event in self.events()]
                raise AssertionError(f"The recording did not reach the expected state in {timeout} s; events: {kinds}")
            await asyncio.sleep(0.05)

    async def wait_for_marker(self, page: Page, name: str) -> None:
        """Send a `tandem.event` named `name` and wait for it: everything recorded before it has been sent."""
        await page.evaluate("name => window.__tracker.event(name)", name)
        await self.wait_for(
            lambda events: any(e["payload"].get("name") == name for e in custom_events(events, "tandem.event"))
        )


@dataclass
class TrackedPage:
    context: BrowserContext
    page: Page
    recording: Recording

    async def close(self) -> None:
        await self.context.close()


async def open_tracked_page(
    browser: Browser,
    pages: PageServer,
    ingest_url: str,
    name: str,
    *,
    options: str = "{}",
    init_script: str = "",
    query: str = "",
) -> TrackedPage:
    """Open `pages/<name><query>` in a new context with the tracker started with `options` (a JS object literal)."""
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    recording = Recording()
    recording.attach(context)
    config = f"window.__privacyTest = {{ingestPoint: {json.dumps(ingest_url + '/ingest')}, options: {options}}};"
    await context.add_init_script(script=init_script + "\n" + config)
    page = await context.new_page()
    page.set_default_timeout(10_000)
    await page.goto(f"{pages.url}/pages/{name}{query}")
    await page.wait_for_function("window.__started !== undefined")
    return TrackedPage(context=context, page=page, recording=recording)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pages() -> AsyncIterator[PageServer]:
    server = PageServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ingest(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningTandem]:
    """The all-in-one server the tracker posts to, shared by a module's tests."""
    runner, running = await start_tandem(tmp_path_factory.mktemp("tandem") / "data")
    yield running
    await runner.cleanup()
