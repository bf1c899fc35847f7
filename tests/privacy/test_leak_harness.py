"""The leak harness: a real visit through a corpus of pages, then a search for every seeded value everywhere.

`python -m tandem run` runs as a child process with debug logging, as it runs in production. Chromium
visits the corpus in `pages/corpus-*.html`, each page seeded with unique fake emails, phone and card
numbers, tokens and passwords: it types, pastes, lets scripts set values, toggles a password field
and moves between pages, including through GET forms. An agent watches the session live meanwhile.

The harness then searches for every seeded value, raw, JSON-escaped and URL-encoded, in these places:
each request body and URL the browser sent to Tandem, each message published on NATS, each message
kept in a JetStream stream or bucket, and each live-stream WebSocket frame. Also each log line, each
row of each ClickHouse table (replay chunks decompressed) and each file under the server's data folder.

A second visit with masking turned down (`defaultInputMode: 0`, the email options off) shows that
the tracker does not overreach: what the user types then reaches the server, while passwords and
hidden elements stay out, the ingest leak alarm counts what it sees, and its log lines name no value.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus

import aiohttp
import nats
import pytest
import pytest_asyncio
from nats.errors import Error as NatsError
from playwright.async_api import Browser, BrowserContext, Page, Request, async_playwright
from tandem_protocol import subjects
from tandem_runtime.embedded import free_port

from tests.conftest import SECRET_KEY
from tests.privacy.conftest import CHROMIUM, CHROMIUM_ARGS, PageServer, decode_body

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

REPOSITORY = Path(__file__).resolve().parents[2]
RELAXED_OPTIONS = "{defaultInputMode: 0, obscureInputEmails: false, obscureTextEmails: false}"
SESSIONS_CONSUMER = "tandem-sessions-store"
LEAK_KINDS = ("email", "card", "phone", "password")


# Seeds ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A fake value and its random core, which no other text shares by chance."""

    value: str
    core: str

    def forms(self) -> set[str]:
        """The value as it could appear once encoded, and its core."""
        value = self.value
        found = {value, json.dumps(value)[1:-1], quote(value, safe=""), quote(value), quote_plus(value), self.core}
        digits = re.sub(r"\D", "", value)
        if len(digits) >= 10:
            found.add(digits)
        return found


def hex_core(length: int = 10) -> str:
    return secrets.token_hex(length // 2)


def digit_core(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def email(label: str) -> Seed:
    core = hex_core()
    return Seed(f"{label}.{core}@example.test", core)


def phone() -> Seed:
    core = digit_core(10)
    return Seed(f"+49 {core[:4]} {core[4:7]} {core[7:]}", core)


def card() -> Seed:
    body = "4" + digit_core(14)
    total = 0
    for index, char in enumerate(reversed(body)):
        value = int(char) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    number = body + str((10 - total % 10) % 10)
    return Seed(" ".join(number[i : i + 4] for i in range(0, 16, 4)), number)


def text(label: str) -> Seed:
    core = hex_core()
    return Seed(f"{label}-{core}", core)


def password() -> Seed:
    core = hex_core(12)
    return Seed(f"Pw!{core}", core)


def make_seeds() -> dict[str, Seed]:
    """Every value of one visit: the pages' `{{name}}` fields and what the browser types."""
    return {
        # In the pages.
        "prefilled_email": email("prefilled"),
        "text_email": email("invited"),
        "link_email": email("reply"),
        "comment_email": email("comment"),
        "meta_token": text("meta"),
        "csrf_token": text("csrf"),
        "hidden_phone": phone(),
        "hidden_card": card(),
        "obscured_card": card(),
        "attr_token": text("tok"),
        "frame_email": email("billing"),
        "shadow_email": email("ship"),
        "console_email": email("declined"),
        "script_card": card(),
        "script_note": text("saved-note"),
        # Typed, pasted or toggled by the browser.
        "typed_query": text("query"),
        "typed_email": email("signup"),
        "typed_phone": phone(),
        "typed_password": password(),
        "typed_password_more": text("shown"),
        "pasted_card": card(),
        "typed_name": text("Zed"),
        "typed_coupon": text("coupon"),
        "typed_note": text("leave-at-door"),
        "typed_gift": text("happy-birthday"),
        "typed_address": text("street"),
        "frame_postcode": text("post"),
    }


# The server and what it emits ------------------------------------------------------------------


@dataclass
class Captured:
    """Everything Tandem received, published, streamed, logged and stored during the harness run."""

    requests: list[tuple[str, bytes]] = field(default_factory=list)
    bus: list[tuple[str, bytes]] = field(default_factory=list)
    streams: list[tuple[str, bytes]] = field(default_factory=list)
    frames: list[tuple[str, bytes]] = field(default_factory=list)
    logs: list[tuple[str, bytes]] = field(default_factory=list)
    store: list[tuple[str, bytes]] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    leaks_after_masked_visit: dict[str, float] = field(default_factory=dict)
    leaks_after_relaxed_visit: dict[str, float] = field(default_factory=dict)
    masked: dict[str, Seed] = field(default_factory=dict)
    relaxed: dict[str, Seed] = field(default_factory=dict)

    def everywhere(self) -> list[tuple[str, bytes]]:
        return self.requests + self.bus + self.streams + self.frames + self.logs + self.store + self.files


class TandemProcess:
    """`python -m tandem run` on free ports, logging at debug level into `lines`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.nats_port = free_port()
        self.lines: list[bytes] = []
        self.process: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {
            **os.environ,
            "TANDEM_PORT": str(self.port),
            "TANDEM_NATS_PORT": str(self.nats_port),
            "TANDEM_DATA_DIR": str(self.data_dir),
            "TANDEM_SECRET_KEY": SECRET_KEY,
            "TANDEM_LOG_LEVEL": "debug",
            "TANDEM_GEOIP_ENABLED": "false",
            "TANDEM_CONSUMER_FETCH_TIMEOUT_SECONDS": "0.2",
            "TANDEM_SHUTDOWN_TIMEOUT_SECONDS": "3",
        }
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tandem", "run", cwd=REPOSITORY, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._readers = [
            asyncio.create_task(self._read(stream)) for stream in (self.process.stdout, self.process.stderr)
        ]
        await self._wait_ready()

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line)

    async def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    break
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        log = b"".join(self.lines[-40:]).decode(errors="replace")
        raise AssertionError(f"python -m tandem run did not become ready; its last output:\n{log}")

    async def stop(self) -> None:
        if self.process and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


async def agent_token(http: aiohttp.ClientSession, server: TandemProcess) -> str:
    admin_password = (server.data_dir / "admin-password").read_text().strip()
    async with http.post(
        f"{server.url}/api/v1/auth/login", json={"username": "admin", "password": admin_password}
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["token"]


async def watch_every_session(http: aiohttp.ClientSession, server: TandemProcess, token: str, frames: list) -> None:
    """Act as an agent: watch each live session of the demo project and keep every frame received."""
    ws_url = server.url.replace("http://", "ws://") + "/live/v1/ws"
    async with http.ws_connect(ws_url) as ws:
        await ws.send_json({"type": "auth", "token": token})
        await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
        watched: set[str] = set()
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            frames.append(("live frame", message.data.encode()))
            frame = json.loads(message.data)
            sessions = frame.get("sessions", []) + ([frame["session"]] if "session" in frame else [])
            for session in sessions:
                if session["sessionId"] not in watched:
                    watched.add(session["sessionId"])
                    await ws.send_json({"type": "watch", "sessionId": session["sessionId"]})


async def leak_counts(http: aiohttp.ClientSession, server: TandemProcess) -> dict[str, float]:
    async with http.get(f"{server.url}/metrics") as response:
        exposition = await response.text()
    counts = {}
    for kind in LEAK_KINDS:
        found = re.search(rf'^tandem_ingest_suspected_leaks_total{{kind="{kind}"}} (\S+)$', exposition, re.M)
        counts[kind] = float(found.group(1)) if found else 0.0
    return counts


async def wait_until_stored(nc, timeout: float = 20.0) -> None:
    """Wait until the sessions service has stored and acknowledged every batch on the stream."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = await js.consumer_info(subjects.EVENTS_STREAM, SESSIONS_CONSUMER)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
        except NatsError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("The sessions service did not store every batch in time.")


async def read_streams(nc) -> list[tuple[str, bytes]]:
    """Every message still kept in every JetStream stream, key-value buckets included."""
    js = nc.jetstream()
    kept = []
    for info in await js.streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                message = await js.get_msg(info.config.name, seq)
            except NatsError:
                continue  # Deleted or replaced by a newer value of the same key.
            headers = json.dumps(message.headers or {}).encode()
            kept.append(
                (f"stream {info.config.name} #{seq} {message.subject}", (message.data or b"") + b"\n" + headers)
            )
    return kept


async def dump_store(data_dir: Path) -> list[tuple[str, bytes]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.privacy.store_dump", str(data_dir), cwd=REPOSITORY,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode(errors="replace")[-3000:]
    rows = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return [(f"table {row['table']}", json.dumps(row["row"], ensure_ascii=False).encode()) for row in rows]


def read_files(data_dir: Path) -> list[tuple[str, bytes]]:
    from tests.privacy.store_dump import readable

    return [
        (f"file {path.relative_to(data_dir)}", readable(path.read_bytes()).encode())
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    ]


# The visits ------------------------------------------------------------------------------------


async def new_context(browser: Browser, tandem_url: str, options: str, requests: list) -> BrowserContext:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})

    def keep(request: Request) -> None:
        if request.url.startswith(tandem_url):
            body = decode_body(request.post_data_buffer)
            requests.append((f"request {request.method} {request.url}", request.url.encode() + b"\n" + body))

    context.on("request", keep)
    config = f"window.__privacyTest = {{ingestPoint: {json.dumps(tandem_url + '/ingest')}, options: {options}}};"
    await context.add_init_script(script=config)
    return context


async def tracker_started(page: Page) -> None:
    await page.wait_for_function("window.__started && window.__started.success")


async def visit_masked(page: Page, pages: PageServer, seeds: dict[str, Seed]) -> None:
    """Search through a GET form, check out, sign up through a GET form: every way in, with masking on."""
    value = {name: seed.value for name, seed in seeds.items()}
    await page.goto(f"{pages.url}/pages/corpus-search.html")
    await tracker_started(page)
    await page.type("#search-query", value["typed_query"])
    await page.click("#search-submit")
    await page.wait_for_url("**/corpus-results.html?*")
    await tracker_started(page)

    await page.click("#to-checkout")
    await page.wait_for_url("**/corpus-checkout.html")
    await tracker_started(page)
    await page.type("#card-name", value["typed_name"])
    await page.focus("#card-number")
    await page.keyboard.insert_text(value["pasted_card"])  # A paste: one input event with the whole value.
    await page.type("#card-expiry", "12/29")
    await page.type("#card-cvc", "4821")
    await page.type("#coupon", value["typed_coupon"])
    await page.type("#notes", value["typed_note"])
    await page.click("#gift-message")
    await page.keyboard.press("End")
    await page.keyboard.type(value["typed_gift"])
    await page.locator("#address-widget #street").type(value["typed_address"])
    await page.frame_locator("#address-frame").locator("#frame-postcode").type(value["frame_postcode"])
    await page.wait_for_function("document.getElementById('saved-card').value !== ''")

    await page.goto(f"{pages.url}/pages/corpus-signup.html")
    await tracker_started(page)
    await page.fill("#email", "")
    await page.type("#email", value["typed_email"])
    await page.type("#phone", value["typed_phone"])
    await page.type("#password", value["typed_password"])
    await page.click("#show-password")
    await page.type("#password", value["typed_password_more"])
    await page.click("#show-password")
    await page.click("#submit")
    await page.wait_for_url("**/corpus-welcome.html?*")
    await tracker_started(page)


async def visit_relaxed(page: Page, pages: PageServer, seeds: dict[str, Seed]) -> None:
    """Sign up with masking turned down."""
    await page.goto(f"{pages.url}/pages/corpus-signup.html")
    await tracker_started(page)
    await page.fill("#email", "")
    await page.type("#email", seeds["typed_email"].value)
    await page.type("#phone", seeds["typed_phone"].value)
    await page.type("#password", seeds["typed_password"].value)


async def finish_visit(page: Page, frames: list, name: str) -> None:
    """Send a marker event and wait until it reaches the agent: everything before it went through Tandem."""
    await page.evaluate("name => window.__tracker.event(name)", name)
    deadline = time.monotonic() + 15
    while not any(name.encode() in frame for _, frame in frames):
        assert time.monotonic() < deadline, f"the marker {name} did not reach the live stream"
        await asyncio.sleep(0.1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def captured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Captured]:
    result = Captured(masked=make_seeds(), relaxed=make_seeds())
    server = TandemProcess(tmp_path_factory.mktemp("harness") / "data")
    pages = PageServer()
    await server.start()
    await pages.start()
    nc = await nats.connect(f"nats://127.0.0.1:{server.nats_port}", name="leak-harness")

    async def keep_message(message) -> None:
        result.bus.append((f"nats {message.subject}", message.data + json.dumps(message.headers or {}).encode()))

    subscription = await nc.subscribe(">", cb=keep_message, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
    try:
        async with aiohttp.ClientSession() as http, async_playwright() as playwright:
            token = await agent_token(http, server)
            watcher = asyncio.create_task(watch_every_session(http, server, token, result.frames))
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

            pages.seeds = {name: seed.value for name, seed in result.masked.items()}
            context = await new_context(browser, server.url, "{}", result.requests)
            page = await context.new_page()
            await visit_masked(page, pages, result.masked)
            await finish_visit(page, result.frames, "masked-visit-done")
            await context.close()
            result.leaks_after_masked_visit = await leak_counts(http, server)

            pages.seeds = {name: seed.value for name, seed in result.relaxed.items()}
            context = await new_context(browser, server.url, RELAXED_OPTIONS, result.requests)
            page = await context.new_page()
            await visit_relaxed(page, pages, result.relaxed)
            await finish_visit(page, result.frames, "relaxed-visit-done")
            await context.close()
            result.leaks_after_relaxed_visit = await leak_counts(http, server)

            await browser.close()
            await wait_until_stored(nc)
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await subscription.unsubscribe()
        result.streams = await read_streams(nc)
    finally:
        await nc.close()
        await pages.stop()
        await server.stop()
    result.logs = [(f"log line {index}", line) for index, line in enumerate(server.lines)]
    result.store = await dump_store(server.data_dir)
    result.files = read_files(server.data_dir)
    yield result


def find(haystack: list[tuple[str, bytes]], seeds: dict[str, Seed]) -> list[str]:
    """Return where any form of any seed occurs, as "seed in source"."""
    hits = []
    for name, seed in seeds.items():
        for form in seed.forms():
            needle = form.encode()
            hits.extend(f"{name} ({form!r}) in {label}" for label, data in haystack if needle in data)
    return hits


# What must hold --------------------------------------------------------------------------------

RELAXED_SECRETS = ("typed_password", "hidden_phone", "hidden_card", "obscured_card", "attr_token", "csrf_token")


async def test_visit_reached_every_part(captured):
    """The search means something only if each place it looks in contains the visit: here, its last event."""
    marker = b"masked-visit-done"
    assert any(marker in data for _, data in captured.requests)
    assert any(marker in data for _, data in captured.bus)
    assert any(marker in data for _, data in captured.streams)
    assert any(marker in data for _, data in captured.frames)
    assert any(marker in data for _, data in captured.store)
    assert any(marker in data for _, data in captured.files)
    assert any(b'"session.started"' in line for _, line in captured.logs)


async def test_masked_values_absent_from_requests(captured):
    assert find(captured.requests, captured.masked) == []


async def test_masked_values_absent_from_bus(captured):
    assert find(captured.bus + captured.streams, captured.masked) == []


async def test_masked_values_absent_from_live_stream(captured):
    assert find(captured.frames, captured.masked) == []


async def test_masked_values_absent_from_logs(captured):
    assert find(captured.logs, captured.masked) == []


async def test_masked_values_absent_from_store(captured):
    assert find(captured.store + captured.files, captured.masked) == []


async def test_relaxed_visit_records_typed_values(captured):
    """With defaultInputMode 0 and the email options off, what the user typed and the page's emails go through."""
    for name in ("typed_email", "typed_phone", "text_email"):
        value = captured.relaxed[name].value.encode()
        assert any(value in data for _, data in captured.requests), name
        assert any(value in data for _, data in captured.streams), name
        assert any(value in data for _, data in captured.frames), name


async def test_relaxed_visit_keeps_secrets_out(captured):
    secrets_only = {name: captured.relaxed[name] for name in RELAXED_SECRETS}
    assert find(captured.everywhere(), secrets_only) == []


async def test_relaxed_values_absent_from_logs(captured):
    assert find(captured.logs, captured.relaxed) == []


async def test_leak_alarm_quiet_for_masked_visit(captured):
    assert captured.leaks_after_masked_visit == dict.fromkeys(LEAK_KINDS, 0.0)


async def test_leak_alarm_counts_relaxed_visit(captured):
    after = captured.leaks_after_relaxed_visit
    assert after["email"] > 0
    assert after["phone"] > 0
    assert after["password"] == 0
    warnings = [json.loads(line) for _, line in captured.logs if b'"batch.suspected_leak"' in line]
    assert warnings, "the alarm logs a warning"
    assert all(warning["session_id"] and warning["fields"] for warning in warnings)
