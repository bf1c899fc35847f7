"""Helpers shared by the tracker's browser tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, message: str = "condition") -> Any:
    """Polls `predicate` every 50 ms and returns its first truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"Timed out after {timeout} s waiting for {message}.")


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
