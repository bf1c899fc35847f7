"""Synthetic recorded sessions shaped like the tracker's output, for the session store benchmark.

The shape follows the tracker's rrweb options (web/tracker/src/recorder.ts and transport.ts):
mouse moves sampled every 50 ms, a full snapshot (Meta + FullSnapshot) every 60 s and on each
page load, and a batch sent 50 ms after its first event. The page is a shop listing of about
1,100 DOM nodes (about 150 KB of snapshot JSON) with a clock that ticks every second, like the
demo shop. Activity: the pointer moves 20% of the time, the page scrolls 5% of the time, a
click every 20 s, a page load every 3 minutes, a few inputs and custom events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

WORDS = (
    "mug socks lamp kettle blanket candle notebook pen backpack bottle scarf gloves umbrella chair desk plant frame "
    "ceramic cotton wool organic recycled handmade classic modern vintage compact large small blue green red black "
    "white grey oak walnut steel glass linen bamboo"
).split()

FLUSH_DELAY_MS = 50
ROUND_TRIP_MS = 30
CHECKOUT_MS = 60_000
PAGE_MS = 180_000


class NodeIds:
    def __init__(self) -> None:
        self.next = 1

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def element(ids: NodeIds, tag: str, attributes: dict[str, Any], children: list[dict]) -> dict[str, Any]:
    return {"type": 2, "tagName": tag, "attributes": attributes, "childNodes": children, "id": ids.take()}


def text_node(ids: NodeIds, content: str) -> dict[str, Any]:
    return {"type": 3, "textContent": content, "id": ids.take()}


def product(ids: NodeIds, rng: random.Random, index: int) -> dict[str, Any]:
    name = text(rng, 3).title()
    image = {
        "src": f"/static/products/{index}-{rng.randrange(10**6)}.webp",
        "alt": name,
        "width": "240",
        "height": "180",
    }
    price = f"${rng.randrange(5, 200)}.{rng.randrange(100):02d}"
    button = {"class": "btn btn-primary", "type": "button", "data-testid": f"add-to-cart-{index}"}
    return element(ids, "article", {"class": "product-card card card--shadow", "data-id": str(index)}, [
        element(ids, "img", {**image, "loading": "lazy"}, []),
        element(ids, "h3", {"class": "product-card__title"}, [text_node(ids, name)]),
        element(ids, "p", {"class": "product-card__description muted"}, [text_node(ids, text(rng, 16))]),
        element(ids, "span", {"class": "price price--large"}, [text_node(ids, price)]),
        element(ids, "button", button, [text_node(ids, "Add to cart")]),
    ])  # fmt: skip


def page_snapshot(rng: random.Random, page_number: int) -> tuple[dict[str, Any], int]:
    """Return a FullSnapshot `data` of a listing page and the id of its clock's text node."""
    ids = NodeIds()
    document_id = ids.take()
    clock_text = text_node(ids, "Deals end in 15:00")
    header = element(ids, "nav", {"class": "nav"}, [
        element(ids, "a", {"href": f"/c/{w}", "class": "nav__link"}, [text_node(ids, w.title())]) for w in WORDS[:12]
    ] + [element(ids, "span", {"id": "clock"}, [clock_text])])  # fmt: skip
    products = [product(ids, rng, page_number * 100 + i) for i in range(60)]
    main = element(ids, "main", {"class": "grid grid--4"}, products)
    footer = element(ids, "footer", {"class": "footer"}, [
        element(ids, "p", {}, [text_node(ids, text(rng, 30))]) for _ in range(8)
    ])  # fmt: skip
    head = element(ids, "head", {}, [
        element(ids, "meta", {"charset": "utf-8"}, []),
        element(ids, "title", {}, [text_node(ids, "Tandem Shop")]),
        element(ids, "style", {}, [text_node(ids, ".grid{display:grid}" * 40)]),
    ])  # fmt: skip
    body = element(ids, "body", {"class": "page"}, [header, main, footer])
    html = element(ids, "html", {"lang": "en"}, [head, body])
    node = {
        "type": 0,
        "childNodes": [{"type": 1, "name": "html", "publicId": "", "systemId": "", "id": ids.take()}, html],
        "id": document_id,
    }
    return {"node": node, "initialOffset": {"top": 0, "left": 0}}, clock_text["id"]


def session_events(seed: int, minutes: float, start_ms: int) -> Iterator[dict[str, Any]]:
    """Yield a session's rrweb events in time order."""
    rng = random.Random(seed)
    end_ms = start_ms + int(minutes * 60_000)
    page_number = 0
    snapshot, clock_id = page_snapshot(rng, page_number)
    url = "https://shop.example/"
    next_checkout = start_ms
    next_page = start_ms + PAGE_MS
    next_tick = start_ms + 1000
    next_click = start_ms + rng.randrange(5_000, 35_000)
    moving_until = scrolling_until = start_ms
    now = start_ms
    while now < end_ms:
        if now >= next_page:
            page_number += 1
            snapshot, clock_id = page_snapshot(rng, page_number)
            url = f"https://shop.example/c/{rng.choice(WORDS)}?page={page_number}"
            next_page += PAGE_MS
            next_checkout = now
        if now >= next_checkout:
            yield {"type": 4, "timestamp": now, "data": {"href": url, "width": 1280, "height": 800}}
            yield {"type": 2, "timestamp": now, "data": snapshot}
            yield {
                "type": 5,
                "timestamp": now,
                "data": {"tag": "tandem.page", "payload": {"url": url, "title": "Tandem Shop", "referrer": ""}},
            }
            next_checkout = now + CHECKOUT_MS
        if now >= next_tick:
            remaining = max(0, 900 - (now - start_ms) // 1000)
            clock = f"Deals end in {remaining // 60}:{remaining % 60:02d}"
            yield {
                "type": 3,
                "timestamp": now,
                "data": {
                    "source": 0,
                    "texts": [{"id": clock_id, "value": clock}],
                    "attributes": [],
                    "removes": [],
                    "adds": [],
                },
            }
            next_tick += 1000
        if now >= moving_until and rng.random() < 0.2 / 20:
            moving_until = now + rng.randrange(500, 3000)
        if now < moving_until:
            positions = [
                {"x": rng.randrange(1280), "y": rng.randrange(800), "id": rng.randrange(2, 900), "timeOffset": 0}
            ]
            yield {"type": 3, "timestamp": now, "data": {"source": 1, "positions": positions}}
        if now >= scrolling_until and rng.random() < 0.05 / 20:
            scrolling_until = now + rng.randrange(300, 1500)
        if now < scrolling_until:
            yield {"type": 3, "timestamp": now, "data": {"source": 3, "id": 1, "x": 0, "y": rng.randrange(4000)}}
        if now >= next_click:
            target = rng.randrange(2, 900)
            for interaction in (1, 0, 2):  # mousedown, mouseup, click
                yield {
                    "type": 3,
                    "timestamp": now,
                    "data": {"source": 2, "type": interaction, "id": target, "x": 400, "y": 300},
                }
            yield {
                "type": 5,
                "timestamp": now,
                "data": {
                    "tag": "tandem.click",
                    "payload": {"label": "Add to cart", "selector": f"[data-testid=add-to-cart-{target}]"},
                },
            }
            if rng.random() < 0.3:
                yield {
                    "type": 5,
                    "timestamp": now + 1,
                    "data": {
                        "tag": "tandem.event",
                        "payload": {"name": "add_to_cart", "payload": {"sku": target, "price": rng.randrange(5, 200)}},
                    },
                }
            if rng.random() < 0.1:
                yield {
                    "type": 3,
                    "timestamp": now + 2,
                    "data": {"source": 5, "id": target, "text": "*" * rng.randrange(3, 12), "isChecked": False},
                }
            next_click = now + rng.randrange(10_000, 30_000)
        now += 50


def batches(events: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group events as the tracker's transport does: a batch leaves 50 ms after its first event, plus the round trip."""
    current: list[dict[str, Any]] = []
    closes_at = 0
    for event in events:
        if current and event["timestamp"] >= closes_at:
            yield current
            current = []
        if not current:
            closes_at = event["timestamp"] + FLUSH_DELAY_MS + ROUND_TRIP_MS
        current.append(event)
    if current:
        yield current


def session_batches(seed: int, minutes: float, start_ms: int) -> list[list[dict[str, Any]]]:
    return list(batches(session_events(seed, minutes, start_ms)))
