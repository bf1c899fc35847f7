"""Helpers shared by the tracker's browser tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition") -> Any:
    """Polls `predicate` every 50 ms and returns its first truthy value. Fails after `timeout` seconds.

    `predicate` may be a coroutine function. The event loop runs between polls, so Playwright keeps
    receiving the page's console messages and requests.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"Timed out after {timeout} s waiting for {message}.")


def named_events(events: list[dict[str, Any]]) -> list[Any]:
    """Returns the payloads of the `tandem.event` events (see `Tracker.event`) in `events`, in order."""
    return [
        event["data"]["payload"]["payload"]
        for event in events
        if event["type"] == 5 and event["data"].get("tag") == "tandem.event"
    ]


class PageWithConsole:
    """A Playwright page plus the console messages and page errors it produced."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.console: list[tuple[str, str]] = []
        self.errors: list[str] = []
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def tandem_warnings(self) -> list[str]:
        return [text for kind, text in self.console if kind == "warning" and text.startswith("[tandem]")]
