"""Labels for rrweb clicks, for trackers that send no `tandem.click` event.

rrweb records a click as a MouseInteraction naming only the target's node id. This
keeps, per session, the text of each short element (a button's or a link's label)
from the full snapshots and mutations it processes, so that the click can be stored with
its label. The text is the recorded one, so whatever the tracker masked stays masked.

It is best effort: the state lives in this consumer's memory, so a click whose
snapshot another pod or an earlier process stored gets no label, and a session that
sends `tandem.click` stops using it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

# rrweb-snapshot's NodeType numbers and the incremental sources (rrweb 2.x).
DOCUMENT, ELEMENT, TEXT = 0, 2, 3
FULL_SNAPSHOT, INCREMENTAL_SNAPSHOT = 2, 3
SOURCE_MUTATION, SOURCE_MOUSE_INTERACTION = 0, 2
MOUSE_CLICK = 2

MAX_LABEL_CHARS = 120
MAX_TEXT_CHARS = 1000
MAX_DEPTH = 200
SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template"})
LABEL_ATTRIBUTES = ("aria-label", "title", "alt")
BUTTON_INPUT_TYPES = frozenset({"button", "submit", "reset"})
_SPACES = re.compile(r"\s+")


class _SessionLabels:
    def __init__(self) -> None:
        self.labels: dict[int, str] = {}
        self.parent_of_text: dict[int, int] = {}
        self.tracker_clicks = False


class ClickLabels:
    """Element labels of the sessions this process saw last, at most `max_sessions` and `max_nodes` each."""

    def __init__(self, *, max_sessions: int = 200, max_nodes: int = 5000) -> None:
        self._sessions: OrderedDict[str, _SessionLabels] = OrderedDict()
        self._max_sessions = max_sessions
        self._max_nodes = max_nodes

    def observe(self, session_id: str, event: dict[str, Any]) -> None:
        """Update the session's labels from a FullSnapshot or Mutation event; ignore other events."""
        data = event.get("data")
        if not isinstance(data, dict):
            return
        if event.get("type") == FULL_SNAPSHOT and isinstance(data.get("node"), dict):
            state = self._session(session_id, reset=True)
            self._walk(state, data["node"], 0)
        elif event.get("type") == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_MUTATION:
            state = self._session(session_id)
            for added in data.get("adds") or ():
                if isinstance(added, dict) and isinstance(added.get("node"), dict):
                    self._walk(state, added["node"], 0)
            for change in data.get("texts") or ():
                if isinstance(change, dict) and change.get("id") in state.parent_of_text:
                    label = _collapse(str(change.get("value") or ""))
                    if label and len(label) <= MAX_LABEL_CHARS:
                        state.labels[state.parent_of_text[change["id"]]] = label

    def mark_tracker_clicks(self, session_id: str) -> None:
        self._session(session_id).tracker_clicks = True

    def uses_tracker_clicks(self, session_id: str) -> bool:
        state = self._sessions.get(session_id)
        return state is not None and state.tracker_clicks

    def label(self, session_id: str, node_id: Any) -> str:
        state = self._sessions.get(session_id)
        return state.labels.get(node_id, "") if state is not None else ""

    def _session(self, session_id: str, *, reset: bool = False) -> _SessionLabels:
        state = self._sessions.get(session_id)
        if state is None or reset:
            tracker_clicks = state.tracker_clicks if state is not None else False
            state = _SessionLabels()
            state.tracker_clicks = tracker_clicks
            self._sessions[session_id] = state
        self._sessions.move_to_end(session_id)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return state

    def _walk(self, state: _SessionLabels, node: dict[str, Any], depth: int) -> str:
        """Record the labels of `node`'s short elements and return its text content (cut at MAX_TEXT_CHARS)."""
        kind = node.get("type")
        if kind == TEXT:
            return str(node.get("textContent") or "")
        if kind not in (DOCUMENT, ELEMENT) or depth > MAX_DEPTH:
            return ""
        if kind == ELEMENT and str(node.get("tagName", "")).lower() in SKIPPED_TAGS:
            return ""
        parts: list[str] = []
        length = 0
        children = node.get("childNodes") or ()
        for child in children:
            if isinstance(child, dict):
                text = self._walk(state, child, depth + 1)
                if length < MAX_TEXT_CHARS and text:
                    parts.append(text)
                    length += len(text)
        text = " ".join(parts)[:MAX_TEXT_CHARS]
        if kind == ELEMENT and isinstance(node.get("id"), int) and len(state.labels) < self._max_nodes:
            label = _collapse(text) or _attribute_label(node)
            if label and len(label) <= MAX_LABEL_CHARS:
                state.labels[node["id"]] = label
                for child in children:
                    if isinstance(child, dict) and child.get("type") == TEXT and isinstance(child.get("id"), int):
                        state.parent_of_text[child["id"]] = node["id"]
        return text


def is_click(event: dict[str, Any]) -> bool:
    data = event.get("data")
    return (
        event.get("type") == INCREMENTAL_SNAPSHOT
        and isinstance(data, dict)
        and data.get("source") == SOURCE_MOUSE_INTERACTION
        and data.get("type") == MOUSE_CLICK
    )


def _attribute_label(node: dict[str, Any]) -> str:
    """Return an element's label from its attributes: aria-label, title, alt, or a button input's value."""
    attributes = node.get("attributes")
    if not isinstance(attributes, dict):
        return ""
    names = LABEL_ATTRIBUTES
    if (
        str(node.get("tagName", "")).lower() == "input"
        and str(attributes.get("type", "")).lower() in BUTTON_INPUT_TYPES
    ):
        names = (*LABEL_ATTRIBUTES, "value")
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value.strip():
            return _collapse(value)
    return ""


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()
