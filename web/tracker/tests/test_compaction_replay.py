"""Compaction against a real replay: after compaction, rrweb's Replayer must end where the page ended.

In real Chromium, rrweb records a page while a script changes it in several mutation events. The
events go through the tracker's own EventQueue (web/tracker/src/queue.ts and compaction.ts, bundled
with @rrweb/record and @rrweb/replay by web/'s esbuild), and the batches it returns are replayed.
Some attributes act on other elements when they change (a radio's `checked` unchecks the others of
its group, an option's `selected` deselects the others), so removing an overwritten value of
theirs changes where the replay ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import node_bundle
from tests.node_bundle import TRACKER_SOURCES

playwright_async = pytest.importorskip("playwright.async_api")


ENTRY = """
import { record } from "@rrweb/record";
import { Replayer } from "@rrweb/replay";
import { EventQueue, toQueuedEvent } from "%(tracker)s/queue.ts";
window.harness = { record, Replayer, EventQueue, toQueuedEvent };
"""

PAGE = """<!doctype html><html><body>
<input type="radio" name="g" id="a"><input type="radio" name="g" id="b" checked>
<select id="s"><option id="o1">one</option><option id="o2">two</option><option id="o3" selected>three</option></select>
</body></html>"""

# Records the changes, takes the queue's batches, replays them; returns the page's and the replay's state.
SCRIPT = """
async () => {
  const { record, Replayer, EventQueue, toQueuedEvent } = window.harness;
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const state = (doc) => ({
    a: doc.getElementById("a").checked,
    b: doc.getElementById("b").checked,
    select: doc.getElementById("s").selectedIndex,
    title: doc.getElementById("a").getAttribute("title"),
  });
  const events = [];
  const stop = record({ emit: (event) => events.push(event) });
  await sleep(100);
  const radio = document.getElementById("a");
  const option = document.getElementById("o2");
  radio.setAttribute("checked", "");
  option.setAttribute("selected", "");
  radio.setAttribute("title", "first");
  await sleep(50);
  radio.removeAttribute("checked");
  option.removeAttribute("selected");
  radio.setAttribute("title", "second");
  await sleep(100);
  stop();

  const queue = new EventQueue({ maxEvents: 5000, maxBytes: 4 << 20 });
  for (const event of events) queue.push(toQueuedEvent(event));
  const limits = {
    maxBytes: 1 << 20, overheadBytes: 64, maxMutationRecords: 100000, oversize: "send-alone", partBytes: 1 << 19,
  };
  const sent = [];
  for (let batch = queue.takeBatch(limits); batch.length > 0; batch = queue.takeBatch(limits)) {
    for (const item of batch) sent.push(JSON.parse(item.json));
  }
  const replayed = await new Promise((resolve) => {
    const root = document.createElement("div");
    document.body.appendChild(root);
    const replayer = new Replayer(sent, { root, showWarning: false });
    replayer.on("finish", () => setTimeout(() => resolve(state(replayer.iframe.contentDocument)), 50));
    replayer.play();
  });
  const titles = sent
    .filter((event) => event.type === 3 && event.data.source === 0)
    .flatMap((event) => event.data.attributes.map((change) => change.attributes.title))
    .filter((title) => title !== undefined);
  return { page: state(document), replayed, titles };
}
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = ENTRY % {"tracker": TRACKER_SOURCES}
    return node_bundle.bundle(source, tmp_path_factory.mktemp("compaction-replay"), for_node=False)


async def test_replay_ends_like_page(browser, bundle: Path):
    page = await browser.new_page()
    await page.set_content(PAGE)
    await page.add_script_tag(path=str(bundle))

    result = await page.evaluate(SCRIPT)
    await page.close()

    assert result["page"] == {"a": False, "b": False, "select": 0, "title": "second"}
    assert result["replayed"] == result["page"]
    assert result["titles"] == ["second"]  # Other overwritten values are still left out.
