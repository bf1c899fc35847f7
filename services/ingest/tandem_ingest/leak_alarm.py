"""A warning light for masking failures: look for personal data in fields the tracker masks by default.

The tracker masks at the source, and this module only counts what got through. An operator then
notices a broken tracker, an old tracker version or a site that turned masking off. The module
never changes a batch and never logs a value, only the session id and the path of the field.

Fields checked, in rrweb terms:
- input events (IncrementalSnapshot, source 5): `data.text`;
- `value` attributes of input, textarea and select elements in snapshots and added nodes, and
  `value` attribute changes in mutations;
- text inside a textarea, an editable element or an element marked obscured or hidden
  (`data-tandem-*` and `data-openreplay-*` attributes).

A value counts as an email address, a card number (13 to 19 digits that pass the Luhn check) or
a phone number (9 to 15 digits, with an optional "+" and separators); a non-empty value of a
password input counts as a password.

An event that the tracker sent as `tandem.part` events (a snapshot too large for one batch) is
rebuilt from its parts, per session, and checked with the batch of its last part.
NOTE: the parts of one event may reach different ingest pods, and then no pod rebuilds or checks
it. A pod also gives up the oldest split events past MAX_SPLIT_SESSIONS or MAX_SPLIT_CHARS.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter
from tandem_protocol.parts import PART_TAG, PartJoiner

log = structlog.get_logger(__name__)

SUSPECTED_LEAKS = Counter(
    "tandem_ingest_suspected_leaks_total",
    "Values in accepted batches that look like personal data in a field the tracker masks by default, by kind.",
    ["kind"],
)

UNCHECKED_SPLITS = Counter(
    "tandem_ingest_leak_unchecked_splits_total",
    "Events sent as tandem.part that the leak alarm stopped rebuilding, to bound its memory, so never checked.",
)

KINDS = ("email", "card", "phone", "password")

FULL_SNAPSHOT = 2
INCREMENTAL_SNAPSHOT = 3
CUSTOM = 5
SOURCE_MUTATION = 0
SOURCE_INPUT = 5
NODE_ELEMENT = 2
NODE_TEXT = 3

FORM_TAGS = frozenset({"input", "textarea", "select"})
MASKED_MARKERS = frozenset(
    {
        "data-tandem-obscured",
        "data-tandem-hidden",
        "data-openreplay-obscured",
        "data-openreplay-masked",
        "data-openreplay-hidden",
        "data-openreplay-htmlmasked",
    }
)

EMAIL = re.compile(
    r"[\w.!#$%'*+^`{|}~-]+(?:@|%40)[a-z\d](?:[a-z\d-]*[a-z\d])?(?:\.[a-z\d](?:[a-z\d-]*[a-z\d])?)+", re.I
)
# Runs of digits separated by up to two spaces, dots, dashes or brackets; "*" and letters end a run.
DIGIT_RUN = re.compile(r"(?<![\w*])\+?\(?\d(?:[ .\-()]{0,2}\d)+(?![\w*])")
MIN_CARD_DIGITS, MAX_CARD_DIGITS = 13, 19
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 9, 15

MAX_FIELDS_LOGGED = 5
MAX_NODES_PER_BATCH = 200_000
MAX_SPLIT_SESSIONS = 64
"""Sessions whose split event is being rebuilt at once; past it the oldest is given up."""
MAX_SPLIT_CHARS = 64 * 1024 * 1024
"""Characters of JSON held for all the split events being rebuilt; past it the oldest are given up."""


@dataclass(frozen=True)
class Finding:
    """One suspected leak: its kind and the path of the field in the batch, never the value."""

    kind: str
    path: str


def luhn_valid(digits: str) -> bool:
    """Return True when the digit string passes the Luhn checksum of card numbers."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def classify(text: str) -> list[str]:
    """Return the kinds of personal data found in `text`, each kind at most once."""
    kinds: list[str] = []
    if ("@" in text or "%40" in text) and EMAIL.search(text):
        kinds.append("email")
    card = phone = False
    for match in DIGIT_RUN.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if MIN_CARD_DIGITS <= len(digits) <= MAX_CARD_DIGITS and luhn_valid(digits):
            card = True
        elif MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
            phone = True
    if card:
        kinds.append("card")
    if phone:
        kinds.append("phone")
    return kinds


def scan_events(events: list[Any], *, name: str = "events") -> list[Finding]:
    """Return the suspected leaks in a batch's events (rrweb events as dicts or pydantic models).

    Paths start with `name`, such as `events[3].data.text`.
    """
    findings: list[Finding] = []
    for index, event in enumerate(events):
        event_type, data = _envelope(event)
        if not isinstance(data, dict):
            continue
        prefix = f"{name}[{index}].data"
        if event_type == FULL_SNAPSHOT:
            findings.extend(_scan_tree(data.get("node"), f"{prefix}.node", masked=False))
        elif event_type == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_INPUT:
            findings.extend(_scan_text(data.get("text"), f"{prefix}.text"))
        elif event_type == INCREMENTAL_SNAPSHOT and data.get("source") == SOURCE_MUTATION:
            findings.extend(_scan_mutation(data, prefix))
    return findings


def _envelope(event: Any) -> tuple[Any, Any]:
    if isinstance(event, dict):
        return event.get("type"), event.get("data")
    return getattr(event, "type", None), getattr(event, "data", None)


def _scan_text(value: Any, path: str) -> Iterator[Finding]:
    if isinstance(value, str) and value:
        for kind in classify(value):
            yield Finding(kind, path)


def _scan_mutation(data: dict[str, Any], prefix: str) -> Iterator[Finding]:
    for index, add in enumerate(data.get("adds") or []):
        if isinstance(add, dict):
            yield from _scan_tree(add.get("node"), f"{prefix}.adds[{index}].node", masked=False)
    for index, change in enumerate(data.get("attributes") or []):
        attributes = change.get("attributes") if isinstance(change, dict) else None
        if isinstance(attributes, dict):
            for name, value in attributes.items():
                if name.lower() == "value":
                    yield from _scan_text(value, f"{prefix}.attributes[{index}].attributes.{name}")


def _scan_tree(root: Any, path: str, *, masked: bool) -> Iterator[Finding]:
    """Walk a serialized node tree without recursion; `masked` is true below a masked element.

    A snapshot can hold tens of thousands of nodes and this runs in the request path, so each
    stack entry keeps its parent entry and child index, and a path is built only for a finding.
    """
    root_entry = (root, None, 0, masked)
    stack = [root_entry]
    visited = 0
    while stack and visited < MAX_NODES_PER_BATCH:
        entry = stack.pop()
        node, _, _, inside_masked = entry
        visited += 1
        if not isinstance(node, dict):
            continue
        node_type = node.get("type")
        if node_type == NODE_TEXT:
            if inside_masked:
                yield from _scan_text(node.get("textContent"), _path_of(entry, path) + ".textContent")
            continue
        children_masked = inside_masked
        if node_type == NODE_ELEMENT:
            attributes = node.get("attributes")
            if attributes:
                yield from _scan_element(node, entry, path)
                children_masked = inside_masked or _masks_children(node)
            elif node.get("tagName") == "textarea":
                children_masked = True
        children = node.get("childNodes")
        if children:
            stack.extend([(child, entry, index, children_masked) for index, child in enumerate(children)])


def _path_of(entry: tuple, root_path: str) -> str:
    """Rebuild the path of a stack entry from its parents' child indexes."""
    indexes = []
    while entry[1] is not None:
        indexes.append(entry[2])
        entry = entry[1]
    return root_path + "".join(f".childNodes[{index}]" for index in reversed(indexes))


def _scan_element(node: dict[str, Any], entry: tuple, root_path: str) -> Iterator[Finding]:
    attributes = node.get("attributes")
    if not isinstance(attributes, dict) or str(node.get("tagName", "")).lower() not in FORM_TAGS:
        return
    value = _attribute(attributes, "value")
    if not isinstance(value, str) or not value:
        return
    value_path = _path_of(entry, root_path) + ".attributes.value"
    if str(_attribute(attributes, "type") or "").lower() == "password":
        yield Finding("password", value_path)
    yield from _scan_text(value, value_path)


def _masks_children(node: dict[str, Any]) -> bool:
    attributes = node.get("attributes")
    if not isinstance(attributes, dict):
        return False
    if str(node.get("tagName", "")).lower() == "textarea":
        return True
    for name, value in attributes.items():
        lower_name = name.lower()
        if lower_name in MASKED_MARKERS:
            return True
        if lower_name == "contenteditable" and isinstance(value, str) and value.lower() != "false":
            return True
    return False


def _attribute(attributes: dict[str, Any], name: str) -> Any:
    if name in attributes:
        return attributes[name]
    for key, value in attributes.items():
        if key.lower() == name:
            return value
    return None


class LeakAlarm:
    """Counts suspected leaks and logs at most one warning per session every `warn_interval_seconds`."""

    def __init__(self, *, logger: Any = None, warn_interval_seconds: float = 60.0, max_sessions: int = 10_000) -> None:
        self._log = logger if logger is not None else log
        self._warn_interval = warn_interval_seconds
        self._max_sessions = max_sessions
        self._last_warned: OrderedDict[str, float] = OrderedDict()
        self._suppressed: dict[str, int] = {}
        self._split: OrderedDict[str, PartJoiner] = OrderedDict()

    def check(self, *, project_id: str, session_id: str, seq: int, events: list[Any]) -> list[Finding]:
        """Scan a batch; count and log what it finds. Returns the findings.

        The paths of findings in an event rebuilt from `tandem.part` events start with `split[i]`,
        the i-th event rebuilt in this batch.
        """
        findings = scan_events(events)
        rebuilt = self._rebuild_split_events(session_id, events)
        if rebuilt:
            findings.extend(scan_events(rebuilt, name="split"))
        if not findings:
            return findings
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        for kind, count in counts.items():
            SUSPECTED_LEAKS.labels(kind).inc(count)
        self._warn(project_id, session_id, seq, counts, findings)
        return findings

    def _rebuild_split_events(self, session_id: str, events: list[Any]) -> list[dict[str, Any]]:
        """Feed the batch's `tandem.part` events to the session's joiner; return the events they complete."""
        rebuilt: list[dict[str, Any]] = []
        joiner = self._split.pop(session_id, None)
        for event in events:
            event_type, data = _envelope(event)
            if event_type != CUSTOM or not isinstance(data, dict) or data.get("tag") != PART_TAG:
                continue
            if joiner is None:
                joiner = PartJoiner()
            whole = joiner.add(data.get("payload"))
            if whole is not None:
                rebuilt.append(whole)
        if joiner is not None and joiner.pending:
            self._split[session_id] = joiner
            self._give_up_oldest_splits()
        return rebuilt

    def _give_up_oldest_splits(self) -> None:
        held_chars = sum(joiner.pending_chars for joiner in self._split.values())
        while len(self._split) > MAX_SPLIT_SESSIONS or (held_chars > MAX_SPLIT_CHARS and len(self._split) > 1):
            session_id, joiner = self._split.popitem(last=False)
            held_chars -= joiner.pending_chars
            UNCHECKED_SPLITS.inc()
            log.info("leak_alarm.split_unchecked", session_id=session_id, held_sessions=len(self._split))

    def _warn(
        self, project_id: str, session_id: str, seq: int, counts: dict[str, int], findings: list[Finding]
    ) -> None:
        now = time.monotonic()
        last = self._last_warned.get(session_id)
        if last is not None and now - last < self._warn_interval:
            self._suppressed[session_id] = self._suppressed.get(session_id, 0) + len(findings)
            return
        self._last_warned[session_id] = now
        self._last_warned.move_to_end(session_id)
        while len(self._last_warned) > self._max_sessions:
            forgotten, _ = self._last_warned.popitem(last=False)
            self._suppressed.pop(forgotten, None)
        self._log.warning(
            "batch.suspected_leak",
            project_id=project_id,
            session_id=session_id,
            seq=seq,
            kinds=counts,
            fields=[finding.path for finding in findings[:MAX_FIELDS_LOGGED]],
            suppressed_since_last_warning=self._suppressed.pop(session_id, 0),
        )


ALARM = LeakAlarm()


def check_batch(project_id: str, session_id: str, seq: int, events: list[Any]) -> None:
    """Run the process-wide alarm on one accepted batch; the ingest route calls this."""
    ALARM.check(project_id=project_id, session_id=session_id, seq=seq, events=events)
