"""Compile a search syntax tree into a parameterised ClickHouse WHERE clause over `sessions FINAL`.

Every value from the query travels as a server-side parameter (`{p3:String}`); the
SQL text holds only column names and operators chosen here. Session fields filter
the summary row; event fields become `session_id IN (SELECT … FROM session_events …)`,
and `then` chains use sequenceMatch over the session's matching events in time order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tandem_sessions.search.query import And, Attribute, Node, Not, Or, QuerySyntaxError, Term, Then

COMPARISONS = (">", ">=", "<", "<=")
MATCH_OPS = (":", "=")

EXACT_FIELDS = {"user": "user_id", "anon": "user_anonymous_id", "anonymous": "user_anonymous_id"}
"""Identifiers: exact, case-sensitive; `*` is a wildcard."""

CASELESS_FIELDS = {"browser": "browser", "os": "os", "device": "device", "country": "country"}
"""Names from the user agent: exact but case-insensitive; `*` is a wildcard."""

COUNT_FIELDS = {"pages": "pages", "clicks": "clicks", "errors": "errors", "events": "events"}
METADATA_PREFIXES = ("meta.", "metadata.")
EVENT_FIELDS = ("url", "clicked", "event", "issue", "error")
SESSION_FIELDS = (
    *EXACT_FIELDS, *CASELESS_FIELDS, *COUNT_FIELDS, "duration", "date", "meta.<key>",
)  # fmt: skip

DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


@dataclass
class Compiled:
    """A WHERE clause over `sessions FINAL` and its parameters."""

    where: str
    parameters: dict[str, Any]


@dataclass
class _Compiler:
    event_time_from_ms: int | None
    event_time_to_ms: int | None
    parameters: dict[str, Any] = field(default_factory=dict)

    def param(self, value: Any, kind: str) -> str:
        name = f"p{len(self.parameters)}"
        self.parameters[name] = value
        return f"{{{name}:{kind}}}"

    # Session level -------------------------------------------------------------------------

    def node(self, node: Node) -> str:
        if isinstance(node, And):
            return "(" + " AND ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, Not):
            return f"NOT {self.node(node.item)}"
        if isinstance(node, Then):
            return self.then(node)
        if node.field in EVENT_FIELDS:
            return f"session_id IN ({self.events_subquery(self.event(node))})"
        return self.session_term(node)

    def session_term(self, term: Term) -> str:
        name = term.field
        if name in EXACT_FIELDS:
            return self.match_exact(EXACT_FIELDS[name], term, caseless=False)
        if name in CASELESS_FIELDS:
            return self.match_exact(CASELESS_FIELDS[name], term, caseless=True)
        if name in COUNT_FIELDS:
            return self.compare(COUNT_FIELDS[name], term, parse_count(term), "UInt64")
        if name == "duration":
            return self.compare("duration_ms", term, parse_duration(term), "UInt64")
        if name == "date":
            return self.compare("toUnixTimestamp64Milli(start_at)", term, parse_date(term), "Int64")
        for prefix in METADATA_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                key = self.param(name[len(prefix) :], "String")
                return self.match_exact(f"metadata[{key}]", term, caseless=False)
        raise QuerySyntaxError(
            f"Unknown field {term.field!r}: use one of {', '.join((*SESSION_FIELDS, *EVENT_FIELDS))}", term.position
        )

    def compare(self, column: str, term: Term, value: int, kind: str) -> str:
        if term.op not in COMPARISONS:
            raise QuerySyntaxError(
                f"{term.field} takes a comparison: {term.field}>…, >=, < or <=, not {term.op!r}", term.position
            )
        return f"{column} {term.op} {self.param(value, kind)}"

    def match_exact(self, column: str, term: Term, *, caseless: bool) -> str:
        require_match_op(term)
        require_no_attributes(term)
        if term.value == "*":
            return f"{column} != ''"
        if "*" in term.value:
            like = "ILIKE" if caseless else "LIKE"
            return f"{column} {like} {self.param(wildcard_pattern(term.value), 'String')}"
        if caseless:
            return f"lowerUTF8({column}) = lowerUTF8({self.param(term.value, 'String')})"
        return f"{column} = {self.param(term.value, 'String')}"

    # Event level ---------------------------------------------------------------------------

    def event(self, node: Node) -> str:
        """Compile a predicate on one `session_events` row: an event term, or OR / NOT of them."""
        if isinstance(node, Term):
            if node.field not in EVENT_FIELDS:
                raise QuerySyntaxError(
                    f"{node.field} is a session field; a 'then' step takes event fields: {', '.join(EVENT_FIELDS)}",
                    node.position,
                )
            return self.event_term(node)
        if isinstance(node, Or):
            return "(" + " OR ".join(self.event(item) for item in node.items) + ")"
        if isinstance(node, Not):
            raise QuerySyntaxError("A 'then' step cannot be negated: use NOT around the whole sequence", node.position)
        if isinstance(node, Then):
            raise QuerySyntaxError("Put a sequence inside another only with its steps: a then b then c", node.position)
        raise QuerySyntaxError("A 'then' step is one event filter or several joined by OR", _position(node))

    def event_term(self, term: Term) -> str:
        require_match_op(term)
        if term.field == "url":
            require_no_attributes(term)
            return f"(kind = 'page' AND {self.match_text('url', term)})"
        if term.field == "clicked":
            require_no_attributes(term)
            return f"(kind = 'click' AND {self.match_text('text', term)})"
        if term.field == "error":
            require_no_attributes(term)
            return f"((kind = 'error' OR (kind = 'console' AND name = 'error')) AND {self.match_text('text', term)})"
        kind = "custom" if term.field == "event" else "issue"
        parts = [
            f"kind = '{kind}'",
            self.match_exact("name", Term(term.field, term.op, term.value, term.position), caseless=False),
        ]
        parts += [self.payload_field(attribute) for attribute in term.attributes]
        return "(" + " AND ".join(parts) + ")"

    def match_text(self, column: str, term: Term) -> str:
        """Case-insensitive: a plain value matches anywhere in the text; `*` anchors and wildcards.

        The LIKE on lowerUTF8(column) is the form the n-gram skip indexes of migration 7 serve.
        """
        if term.value == "*":
            return "1"
        pattern = wildcard_pattern(term.value.lower())
        if "*" not in term.value:
            pattern = f"%{pattern}%"
        return f"lowerUTF8({column}) LIKE {self.param(pattern, 'String')}"

    def payload_field(self, attribute: Attribute) -> str:
        """Match a field of the event's JSON payload, by its string value or its raw JSON (numbers, booleans)."""
        path = ", ".join(self.param(part, "String") for part in attribute.key.split("."))
        value = self.param(attribute.value, "String")
        return f"(JSONExtractString(payload, {path}) = {value} OR JSONExtractRaw(payload, {path}) = {value})"

    def events_subquery(self, predicate: str, *, having: str = "") -> str:
        bounds = ""
        if self.event_time_from_ms is not None:
            bounds += (
                f" AND timestamp >= fromUnixTimestamp64Milli({self.param(self.event_time_from_ms, 'Int64')}, 'UTC')"
            )
        if self.event_time_to_ms is not None:
            bounds += f" AND timestamp <= fromUnixTimestamp64Milli({self.param(self.event_time_to_ms, 'Int64')}, 'UTC')"
        query = f"SELECT session_id FROM session_events WHERE project_id = {{project:String}}{bounds} AND {predicate}"
        if having:
            query += f" GROUP BY session_id HAVING {having}"
        return query

    def then(self, node: Then) -> str:
        if len(node.steps) > 32:
            raise QuerySyntaxError("A sequence has at most 32 steps", node.position)
        steps = [self.event(step) for step in node.steps]
        pattern = ".*".join(f"(?{number})" for number in range(1, len(steps) + 1))
        condition = "(" + " OR ".join(steps) + ")"
        having = f"sequenceMatch('{pattern}')(toUInt64(toUnixTimestamp64Milli(timestamp)), {', '.join(steps)})"
        return f"session_id IN ({self.events_subquery(condition, having=having)})"


def compile_query(
    node: Node | None, *, event_time_from_ms: int | None = None, event_time_to_ms: int | None = None
) -> Compiled:
    """Compile a tree (None for no query) to a WHERE clause; `{project:String}` is left for the caller to bind."""
    compiler = _Compiler(event_time_from_ms=event_time_from_ms, event_time_to_ms=event_time_to_ms)
    where = compiler.node(node) if node is not None else "1"
    return Compiled(where=where, parameters=compiler.parameters)


def require_match_op(term: Term) -> None:
    if term.op not in MATCH_OPS:
        raise QuerySyntaxError(f"{term.field} takes ':' (as in {term.field}:value), not {term.op!r}", term.position)


def require_no_attributes(term: Term) -> None:
    if term.attributes:
        raise QuerySyntaxError(
            f"Only event and issue take [field=value] payload filters, not {term.field}", term.position
        )


def wildcard_pattern(value: str) -> str:
    """Turn a value with `*` wildcards into a LIKE pattern, escaping LIKE's own special characters."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def parse_duration(term: Term) -> int:
    """Parse `90`, `90s`, `1m30s`, `500ms`, `1.5h` to milliseconds; a bare number is seconds."""
    text = term.value.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return int(float(text) * 1000)
    parts = _DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise QuerySyntaxError(f"{term.value!r} is not a duration: write 90s, 2m, 1h30m or 500ms", term.position)
    return int(sum(float(number) * DURATION_UNITS[unit] for number, unit in parts))


def parse_count(term: Term) -> int:
    if not term.value.isdigit():
        raise QuerySyntaxError(f"{term.field} takes a whole number, not {term.value!r}", term.position)
    return int(term.value)


def parse_date(term: Term) -> int:
    """Parse an ISO 8601 date or date-time (UTC unless it has an offset) to milliseconds since the epoch."""
    return parse_time(term.value, position=term.position)


def parse_time(value: str, *, position: int = 0) -> int:
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise QuerySyntaxError(
            f"{value!r} is not a date: write 2025-01-31, 2025-01-31T14:00 or milliseconds since the epoch", position
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _position(node: Node) -> int:
    if isinstance(node, Term | Not | Then):
        return node.position
    return _position(node.items[0])
