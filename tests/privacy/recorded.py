"""Reading rrweb events as the tracker sent them: a small replay that keeps each node's final state."""

from __future__ import annotations

from typing import Any

FULL_SNAPSHOT = 2
INCREMENTAL_SNAPSHOT = 3
META = 4
CUSTOM = 5
SOURCE_MUTATION = 0
SOURCE_INPUT = 5
NODE_ELEMENT = 2
NODE_TEXT = 3


def all_events(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the events of `batches` in batch order."""
    return [event for batch in sorted(batches, key=lambda b: b["seq"]) for event in batch["events"]]


def custom_events(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Return the data of the custom events tagged `tag`: dicts with `tag` and `payload`."""
    return [e["data"] for e in events if e["type"] == CUSTOM and e["data"].get("tag") == tag]


def input_texts(events: list[dict[str, Any]]) -> list[str]:
    """Return the `text` of every input event."""
    return [
        e["data"].get("text", "")
        for e in events
        if e["type"] == INCREMENTAL_SNAPSHOT and e["data"].get("source") == SOURCE_INPUT
    ]


class Replay:
    """The page as the recorded events rebuild it: nodes by rrweb id, with attributes, text and values."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.nodes: dict[int, dict[str, Any]] = {}
        self.children: dict[int, list[int]] = {}
        self.values: dict[int, str] = {}
        for event in events:
            self._apply(event)

    def _apply(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event["type"] == FULL_SNAPSHOT:
            self.nodes.clear()
            self.children.clear()
            self.values.clear()
            self._add_tree(data["node"], None)
        elif event["type"] == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_MUTATION:
            for remove in data.get("removes", []):
                siblings = self.children.get(remove["parentId"], [])
                if remove["id"] in siblings:
                    siblings.remove(remove["id"])
            for add in data.get("adds", []):
                self._add_tree(add["node"], add["parentId"], add.get("nextId"))
            for text in data.get("texts", []):
                if text["id"] in self.nodes:
                    self.nodes[text["id"]]["textContent"] = text["value"]
            for change in data.get("attributes", []):
                node = self.nodes.get(change["id"])
                if node is None:
                    continue
                for name, value in change["attributes"].items():
                    if value is None:
                        node.setdefault("attributes", {}).pop(name, None)
                    elif isinstance(value, str):
                        node.setdefault("attributes", {})[name] = value
                    if name == "value":
                        self.values.pop(change["id"], None)
        elif event["type"] == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_INPUT:
            self.values[data["id"]] = data.get("text", "")

    def _add_tree(self, node: dict[str, Any], parent_id: int | None, next_id: int | None = None) -> None:
        self.nodes[node["id"]] = node
        self.children[node["id"]] = []
        if parent_id is not None:
            siblings = self.children.setdefault(parent_id, [])
            siblings.insert(siblings.index(next_id) if next_id in siblings else len(siblings), node["id"])
        for child in node.get("childNodes", []):
            self._add_tree(child, node["id"])
        node["childNodes"] = []

    def element(self, html_id: str) -> dict[str, Any]:
        """Return the element whose `id` attribute, or one of whose classes, is `html_id`; fail when there is none.

        rrweb keeps only the class of a hidden element, so tests find placeholders by class.
        """
        for node in self.nodes.values():
            attributes = node.get("attributes", {}) if node.get("type") == NODE_ELEMENT else {}
            if attributes.get("id") == html_id or html_id in str(attributes.get("class", "")).split():
                return node
        raise AssertionError(f"No recorded element has id or class {html_id!r}")

    def text(self, html_id: str) -> str:
        """Return the text content of an element, as the replay shows it."""
        return self._text(self.element(html_id)["id"])

    def _text(self, node_id: int) -> str:
        node = self.nodes[node_id]
        if node.get("type") == NODE_TEXT:
            return node.get("textContent") or ""
        return "".join(self._text(child) for child in self.children.get(node_id, []) if child in self.nodes)

    def value(self, html_id: str) -> str:
        """Return the value of a form field: its latest input event, else its `value` attribute."""
        node = self.element(html_id)
        if node["id"] in self.values:
            return self.values[node["id"]]
        return node.get("attributes", {}).get("value", "")

    def attribute(self, html_id: str, name: str) -> str | None:
        return self.element(html_id).get("attributes", {}).get(name)

    def is_placeholder(self, html_id: str) -> bool:
        """Return True when the element replays as rrweb's empty box: a size and no children."""
        node = self.element(html_id)
        attributes = node.get("attributes", {})
        return "rr_width" in attributes and "rr_height" in attributes and not self.children.get(node["id"])
