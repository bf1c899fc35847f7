"""A page whose full snapshot is over 1 MiB of JSON: recorded, watched live and replayed, through every service.

The snapshot is larger than the ingest's body limit (960 KiB) and NATS's 1 MiB message limit,
so the tracker sends it as `tandem.part` events over several batches (docs/PROTOCOL.md).
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from playwright.async_api import Browser, Page, Response, expect

from tests.conftest import RunningTandem
from tests.e2e.conftest import open_dashboard
from tests.sessions.conftest import wait_for

pytestmark = pytest.mark.browser

REPLAY_BUNDLE = (
    Path(__file__).resolve().parents[2] / "web" / "node_modules" / "@rrweb" / "replay" / "dist" / "replay.umd.cjs"
)
ROWS = 2000
MAX_BODY_BYTES = 960 * 1024
"""The ingest's default TANDEM_MAX_BODY_BYTES."""
CUSTOM, FULL_SNAPSHOT = 5, 2

# Quotes, an accented letter and an emoji grow once escaped or encoded, so the parts' byte counts are tested too.
PAGE = """<!doctype html>
<html lang="en">
  <head><meta charset="utf-8" /><title>Orders</title></head>
  <body>
    <h1>Orders</h1>
    <table><tbody id="rows"></tbody></table>
    <script>
      var rows = document.getElementById("rows");
      for (var r = 0; r < %(rows)d; r++) {
        var row = document.createElement("tr");
        for (var c = 0; c < 6; c++) {
          var cell = document.createElement("td");
          cell.textContent = "Order " + r + "-" + c + ": \\"boxed\\" café 😀 " + "handle with care, ".repeat(4);
          row.appendChild(cell);
        }
        rows.appendChild(row);
      }
    </script>
    <script src="/static/tracker.js"></script>
    <script>
      window.tracker = new TandemTracker({ projectKey: "demo-key", ingestPoint: "/ingest" });
      window.started = window.tracker.start({ userID: "%(user)s" });
    </script>
  </body>
</html>
"""

TABLE_TEXT = """
(root) => Array.from(root.querySelectorAll("#rows tr"), (row) => row.textContent).join("\\n")
"""

# Replays the events in a fresh page with @rrweb/replay, jumps to the latest event and returns the table's text.
REPLAY_TO_END = """
async (events) => {
  const root = document.createElement("div");
  document.body.appendChild(root);
  const replayer = new rrwebReplay.Replayer(events, { root, skipInactive: false, showWarning: false });
  const times = events.map((event) => event.timestamp);
  // One millisecond past the latest event, since @rrweb/replay 2.1.6 does not apply an event at the pause time.
  replayer.pause(Math.max(...times) - Math.min(...times) + 1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const rows = replayer.iframe.contentDocument.querySelectorAll("#rows tr");
  return Array.from(rows, (row) => row.textContent).join("\\n");
}
"""


class BatchRecorder:
    """The tracker's batch requests: their decompressed bodies and their response statuses."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []

    def on_response(self, response: Response) -> None:
        request = response.request
        if request.method != "POST" or not request.url.endswith("/ingest/v1/web/i"):
            return
        body = request.post_data_buffer or b""
        self.bodies.append(gzip.decompress(body) if request.headers.get("content-encoding") == "gzip" else body)
        self.statuses.append(response.status)

    def events(self) -> list[dict[str, Any]]:
        batches = sorted((orjson.loads(body) for body in self.bodies), key=lambda batch: batch["seq"])
        return [event for batch in batches for event in batch["events"]]

    def parts(self) -> list[dict[str, Any]]:
        custom = [event["data"] for event in self.events() if event["type"] == CUSTOM]
        return [data["payload"] for data in custom if data.get("tag") == "tandem.part"]


async def frame_table_text(page: Page, selector: str) -> str:
    handle = await page.locator(selector).element_handle()
    frame = await handle.content_frame()
    return await frame.evaluate(f"({TABLE_TEXT})(document)")


async def replay_to_end(browser: Browser, events: list[dict[str, Any]]) -> str:
    context = await browser.new_context()
    page = await context.new_page()
    await page.set_content("<!doctype html><html><body></body></html>")
    await page.add_script_tag(path=str(REPLAY_BUNDLE))
    text = await page.evaluate(REPLAY_TO_END, events)
    await context.close()
    return text


async def test_large_snapshot_records_and_streams(browser: Browser, tandem: RunningTandem):
    user_id = f"big-{uuid.uuid4().hex[:8]}"
    context = await browser.new_context(viewport={"width": 1200, "height": 800})
    recorder = BatchRecorder()
    context.on("response", recorder.on_response)
    page = await context.new_page()
    html = PAGE % {"rows": ROWS, "user": user_id}
    await page.route(f"{tandem.url}/large-table/", lambda route: route.fulfill(body=html, content_type="text/html"))
    await page.goto(f"{tandem.url}/large-table/")
    started = await page.evaluate("window.started")
    assert started["success"], started
    session_id = await page.evaluate("window.tracker.getSessionID()")
    first_rows = await page.evaluate(f"({TABLE_TEXT})(document)")

    async def snapshot_sent() -> bool:
        parts = recorder.parts()
        return bool(parts) and parts[-1]["index"] == parts[-1]["count"] - 1

    await wait_for(snapshot_sent, timeout=30, what="every part of the snapshot answered")
    await page.evaluate("document.querySelector('#rows tr:last-child td').textContent = 'Changed after load'")
    final_rows = await page.evaluate(f"({TABLE_TEXT})(document)")
    assert final_rows != first_rows

    # A live agent who joins after the page loaded gets the whole table, as it is now.
    agent = await open_dashboard(browser, tandem)
    await agent.locator(f"[data-testid=live-row][data-user-id='{user_id}']").click()
    live = agent.frame_locator("[data-testid=replay-container] iframe")
    await expect(live.locator("#rows tr")).to_have_count(ROWS, timeout=30_000)
    await expect(live.locator("#rows tr:last-child td").first).to_have_text("Changed after load", timeout=10_000)
    assert await frame_table_text(agent, "[data-testid=replay-container] iframe") == final_rows

    parts = recorder.parts()
    await context.close()  # Sends the last batch.

    # Every batch was accepted, and the snapshot went as parts, none over the body limit.
    assert recorder.statuses
    assert all(200 <= status < 300 for status in recorder.statuses), recorder.statuses
    assert max(len(body) for body in recorder.bodies) <= MAX_BODY_BYTES
    assert len(parts) >= 2
    assert sum(len(part["data"].encode()) for part in parts) > 1024 * 1024

    async with aiohttp.ClientSession() as http:
        token = await tandem.agent_token(http)
        headers = {"Authorization": f"Bearer {token}"}

        async def export_with_change() -> list[dict[str, Any]] | None:
            async with http.get(f"{tandem.url}/api/v1/sessions/{session_id}/export", headers=headers) as response:
                body = await response.read()
            return orjson.loads(body) if response.status == 200 and b"Changed after load" in body else None

        exported = await wait_for(export_with_change, timeout=30, what="the export with the change after load")

    assert not [event for event in exported if event["type"] == CUSTOM and event["data"]["tag"] == "tandem.part"]
    assert [event["type"] for event in exported].count(FULL_SNAPSHOT) >= 1
    assert await replay_to_end(browser, exported) == final_rows

    # The dashboard's player rebuilds the snapshot from the events pages.
    await agent.goto(f"{tandem.url}/#/recordings/{session_id}")
    player = agent.frame_locator("[data-testid=player-stage] iframe")
    await expect(player.locator("#rows tr")).to_have_count(ROWS, timeout=30_000)
    assert await frame_table_text(agent, "[data-testid=player-stage] iframe") == first_rows
