"""Viewing consent in Chromium: the demo shop's tracker shows the dialog, and the agent's watch waits for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright, expect

from tests.access.conftest import LiveClient, Server
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def session_of_user(server: Server, user_id: str) -> str:
    """Return the live session id of the demo shop's visitor `user_id`, once it is listed."""
    for _ in range(100):
        status, body, _ = await server.call("GET", "/live/v1/sessions?projectId=demo", server.admin_token)
        assert status == 200, body
        for session in body["sessions"]:
            if session["userId"] == user_id:
                return session["sessionId"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no live session of {user_id!r}")


async def test_dialog_gates_watch(server: Server, browser: Browser):
    status, body, _ = await server.call(
        "PATCH", "/api/v1/projects/demo", server.admin_token, json={"sessionConfirm": True}
    )
    assert status == 200, body
    user_id = f"consent-{uuid.uuid4().hex[:8]}"
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    shop = await context.new_page()
    try:
        await shop.goto(f"{server.url}/demo/?user={user_id}")
        session_id = await session_of_user(server, user_id)

        live = await LiveClient.connect(server, server.agent("Robin"))
        await live.next("hello")
        await live.send({"type": "watch", "sessionId": session_id})
        await live.next("watch.pending")

        dialog = shop.locator("[data-tandem-consent][role=dialog]")
        await expect(dialog).to_be_visible(timeout=10_000)
        await expect(dialog).to_contain_text("Robin")
        assert not live.seen("events")
        await dialog.get_by_role("button", name="Allow").click()
        await expect(dialog).to_be_hidden()

        await live.next("watch.started")
        await live.next("events")
        banner = shop.locator("[data-tandem-consent][role=status]")
        await expect(banner).to_contain_text("Support can see this page")
        await banner.get_by_role("button", name="Stop sharing").click()
        stopped = await live.next("watch.stopped", timeout=10)
        assert stopped["reason"] == "consent_withdrawn"
        await expect(banner).to_be_hidden(timeout=10_000)
        await live.close()
    finally:
        await context.close()
        await server.call("PATCH", "/api/v1/projects/demo", server.admin_token, json={"sessionConfirm": False})


async def test_admin_and_audit_pages(server: Server, browser: Browser):
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    try:
        await page.goto(f"{server.url}/")
        await page.get_by_test_id("login-username").fill("admin")
        await page.get_by_test_id("login-password").fill(server.tandem.admin_password)
        await page.get_by_test_id("login-submit").click()
        await page.get_by_test_id("nav-admin").click()

        form = page.get_by_test_id("project-form")
        await form.locator("input[name=id]").fill("from-the-form")
        await form.locator("input[name=origins]").fill("https://form.example.com")
        await form.locator("input[name=confirm]").check()
        await form.get_by_role("button", name="Create project").click()
        row = page.locator("tr[data-project-id=from-the-form]")
        await expect(row).to_contain_text("https://form.example.com")
        status, body, _ = await server.call("GET", "/api/v1/projects/from-the-form", server.admin_token)
        assert body["sessionConfirm"] is True

        await page.get_by_test_id("nav-audit").click()
        filters = page.get_by_test_id("audit-filters")
        await filters.locator("input[name=project]").fill("demo")
        for _ in range(100):  # the audit consumer writes within a few seconds, later under load
            await filters.get_by_role("button", name="Show").click()
            if await page.locator("[data-testid=audit-events] tr[data-kind='watch.stopped']").count():
                break
            await asyncio.sleep(0.2)
        await expect(page.locator("[data-testid=audit-events] tr[data-kind='watch.stopped']")).to_contain_text(
            "consent_withdrawn"
        )
        await expect(page.get_by_test_id("audit-totals")).to_contain_text("Robin")

        await page.locator(".top-bar .nav-link", has_text="Live sessions").click()
        await expect(page.locator(".app > main.content").first).to_be_visible()
        await expect(page.get_by_test_id("audit-page")).to_be_hidden()
    finally:
        await context.close()
