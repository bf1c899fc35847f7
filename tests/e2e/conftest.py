"""Browser fixtures: Debian's Chromium driven by Playwright, loopback only."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.signal.netns import pytest_runtest_protocol  # noqa: F401  (runs loopback_network tests in a namespace)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def open_dashboard(browser: Browser, tandem) -> Page:
    """Open the dashboard in a fresh context and sign in as the admin."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    await page.goto(f"{tandem.url}/")
    await page.get_by_test_id("login-username").fill("admin")
    await page.get_by_test_id("login-password").fill(tandem.admin_password)
    await page.get_by_test_id("login-submit").click()
    await page.get_by_test_id("live-list").wait_for()
    return page
