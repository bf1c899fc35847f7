"""Events around pagehide reach the server once each, on reload and on a return from the back-forward cache.

Each test marks events with `tandem.event("mark", {"n": ...})` and counts them
in what the stub accepted (every copy sent) and in `stored_events` (what the
real server keeps: the first batch with each number).
"""

from __future__ import annotations

from typing import Any

import pytest
from ingest_stub import IngestStub, StubServer
from tracker_test_helpers import PageWithConsole, named_events, wait_until

pytestmark = pytest.mark.browser

META = 4

# Holds every message to the tracker's compression worker for 3 s, so that a batch is still being
# compressed when the page goes. The worker itself is real, and only its input waits.
SLOW_WORKER = """() => {
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (...args) {
        window.compressing = true;
        setTimeout(() => post.apply(this, args), 3000);
    };
}"""


async def open_quiet(tab: PageWithConsole, server: StubServer, query: str) -> None:
    await tab.page.goto(f"{server.url}/quiet.html?{query}")
    await tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")


async def wait_for_metas(stub: IngestStub, count: int) -> None:
    await wait_until(
        lambda: sum(1 for event in stub.accepted_events() if event["type"] == META) >= count,
        message=f"{count} Meta events",
    )


async def mark(tab: PageWithConsole, n: Any, **extra: Any) -> None:
    await tab.page.evaluate("(payload) => tandem.event('mark', payload)", {"n": n, **extra})


def marks(events: list[dict[str, Any]]) -> list[Any]:
    return [payload["n"] for payload in named_events(events)]


async def wait_for_mark(stub: IngestStub, n: Any) -> None:
    await wait_until(lambda: n in marks(stub.accepted_events()), message=f"mark {n}")


def hidden_events(events: list[dict[str, Any]]) -> list[str]:
    """Returns the tags of the tandem.pagehide and hidden tandem.visibility events, in order."""
    tags = []
    for event in events:
        tag = event["data"].get("tag") if event["type"] == 5 else None
        if tag == "tandem.pagehide" or (tag == "tandem.visibility" and event["data"]["payload"] == {"visible": False}):
            tags.append(tag)
    return tags


def assert_numbers_unique(stub: IngestStub) -> None:
    seqs = [batch.seq for batch in stub.accepted_batches()]
    assert len(seqs) == len(set(seqs)), f"batch numbers sent more than once: {seqs}"


async def go_back_to_cached_page(tab: PageWithConsole, stub: IngestStub) -> None:
    """Goes back to the first page, which must come from the back-forward cache and start a third time."""
    await tab.page.go_back(wait_until="commit")
    await wait_until(lambda: len(stub.start_requests) >= 3, message="a start request after the restore")
    assert await tab.page.evaluate("window.pageMarker") == "first", "the page was not restored from the cache"


async def test_reload_sends_inflight_batch_once(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    """Regression: Chromium rejects a keepalive fetch in flight at pagehide, yet sends it.

    The tracker retried the batch, so it reached sessionStorage and the next
    page sent it again: the stub saw batch numbers [0, 1, 1, 3].
    """
    await open_quiet(tab, server, "reload")
    await wait_for_metas(stub, 1)
    stub.delay_next_responses(2.0)
    await mark(tab, 1)
    await wait_for_mark(stub, 1)  # Its response is held: the request is in flight at reload.

    await tab.page.reload()
    await tab.page.wait_for_function("() => window.tandem.isActive && window.tandem.isActive()")
    await mark(tab, "end")
    await wait_for_mark(stub, "end")

    assert marks(stub.accepted_events()) == [1, "end"]
    assert marks(stub.stored_events()) == [1, "end"]
    assert_numbers_unique(stub)
    assert hidden_events(stub.accepted_events()) == ["tandem.pagehide", "tandem.visibility"]
    # The retry logged a warning, which the tracker records as a tandem.console event.
    assert stub.custom_events("tandem.console") == []


async def test_cache_return_keeps_hidden_page_events(
    tab: PageWithConsole, server: StubServer, stub: IngestStub
) -> None:
    """Regression: the page restored from the cache read sessionStorage before the page it replaced wrote to it.

    The second page's events that waited behind a request in flight at
    pagehide (mark 2, its pagehide and visibility events) were lost.
    """
    await open_quiet(tab, server, "first")
    await tab.page.evaluate("() => { window.pageMarker = 'first'; }")
    await wait_for_metas(stub, 1)
    await open_quiet(tab, server, "second")
    await wait_for_metas(stub, 2)
    stub.delay_next_responses(2.0)
    await mark(tab, 1)
    await wait_for_mark(stub, 1)
    await mark(tab, 2)  # Waits in the queue behind mark 1's request.

    await go_back_to_cached_page(tab, stub)
    await mark(tab, "end")
    await wait_for_mark(stub, "end")

    assert marks(stub.stored_events()) == [1, 2, "end"]
    assert marks(stub.accepted_events()) == [1, 2, "end"]
    assert_numbers_unique(stub)
    assert hidden_events(stub.stored_events()) == ["tandem.pagehide", "tandem.visibility"] * 2


async def test_cache_return_sends_compressing_batch(tab: PageWithConsole, server: StubServer, stub: IngestStub) -> None:
    """Regression: a batch still in the compression worker at pagehide was lost on a return from the cache."""
    await open_quiet(tab, server, "first")
    await tab.page.evaluate("() => { window.pageMarker = 'first'; }")
    await wait_for_metas(stub, 1)
    await open_quiet(tab, server, "second")
    await wait_for_metas(stub, 2)
    await tab.page.evaluate(SLOW_WORKER)
    await mark(tab, 1, text="x" * 5000)  # Over 2 KiB, so the batch is compressed.
    await tab.page.wait_for_function("() => window.compressing === true")

    await go_back_to_cached_page(tab, stub)
    await mark(tab, "end")
    await wait_for_mark(stub, "end")

    assert marks(stub.stored_events()) == [1, "end"]
    assert marks(stub.accepted_events()) == [1, "end"]
    assert_numbers_unique(stub)
    assert hidden_events(stub.stored_events()) == ["tandem.pagehide", "tandem.visibility"] * 2
