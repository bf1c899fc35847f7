"""Search, sort, pagination and facet counts over a project's live sessions.

The search bar takes the syntax of recorded-session search, for the fields a live
session has:

    user:alice browser:chrome country:FR meta.plan:pro
    (browser:firefox OR browser:safari) -device:mobile duration>5m
    url:checkout meta.company:"Acme Inc" alice "New York"

    query   = or
    or      = and { "OR" and }
    and     = unary { ["AND"] unary }           two terms side by side mean AND
    unary   = "NOT" unary | "-" unary | primary
    primary = "(" or ")" | term | WORD
    term    = FIELD OP value                    OP is ':', '=', '>', '>=', '<' or '<='
    value   = "quoted string" | word

A bare WORD or quoted phrase, which recorded-session search rejects, matches any
session whose user id, anonymous id, page URL, title, session id or a metadata
value contains it. `THEN` sequences and `[key=value]` payload filters need recorded events and
are rejected here.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from tandem_protocol import LiveSession, ProtocolError
from tandem_protocol.codec import validation_error

MAX_QUERY_CHARS = 2000
MAX_TERMS = 64
MAX_DEPTH = 32
MAX_FACET_VALUES = 20
MAX_METADATA_FACETS = 50
TIME_DEPENDENT_CACHE_SECONDS = 1.0
"""How long a result of a query on duration stays valid: durations grow without any registry change."""

KEYWORDS = ("AND", "OR", "NOT", "THEN")
OPERATORS = (">=", "<=", ":", "=", ">", "<")  # two-character operators first
MATCH_OPS = (":", "=")
COMPARISONS = (">", ">=", "<", "<=")
WORD_END = set(" \t\r\n()[")
FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

EXACT_FIELDS = {
    "user": "user_id",
    "anon": "user_anonymous_id",
    "anonymous": "user_anonymous_id",
    "session": "session_id",
}
"""Identifiers: exact and case-sensitive; `*` is a wildcard."""

CASELESS_FIELDS = {
    name: name
    for name in (
        "browser", "browser_version", "os", "os_version", "device", "country", "city", "language", "timezone",
        "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
    )
}  # fmt: skip
"""Names from the User-Agent, the address and the page: exact but case-insensitive; `*` is a wildcard."""

TEXT_FIELDS = {"url": "url", "title": "title", "referrer": "referrer"}
"""Text: a plain value matches anywhere, case-insensitively; `*` anchors and wildcards."""

METADATA_PREFIXES = ("meta.", "metadata.")
RECORDED_ONLY_FIELDS = ("pages", "clicks", "errors", "events", "clicked", "event", "issue", "error", "date")
LIVE_FIELDS = (*EXACT_FIELDS, *CASELESS_FIELDS, *TEXT_FIELDS, "active", "duration", "meta.<key>")

FACET_FIELDS = ("browser", "os", "device", "country", "language", "active")
"""Fields whose values the filter menus list with their counts, besides each metadata key."""

DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


class QuerySyntaxError(ValueError):
    """A query the parser rejects, with the 0-based position of the problem."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} (at position {position})")
        self.reason = reason
        self.position = position

    def to_protocol_error(self, query: str) -> ProtocolError:
        reason = self.reason
        if len(reason) > 1 and reason[1].islower():
            reason = reason[0].lower() + reason[1:]
        return ProtocolError(
            code="invalid_query",
            message=f"The search {query[:200]!r} is invalid: {reason} (at character {self.position + 1}).",
            details={"position": self.position, "reason": self.reason},
        )


# Syntax tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    field: str
    op: str
    value: str
    position: int


@dataclass(frozen=True)
class Word:
    """A bare word: free text over the session's identifiers, page and metadata values."""

    value: str
    position: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node
    position: int


Node = Term | Word | And | Or | Not


@dataclass
class _Parser:
    text: str
    pos: int = 0
    depth: int = 0
    terms: int = 0

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_spaces()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip_spaces()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def keyword(self) -> str | None:
        self.skip_spaces()
        for word in KEYWORDS:
            end = self.pos + len(word)
            if self.text[self.pos : end].upper() == word and (end >= len(self.text) or self.text[end] in WORD_END):
                return word
        return None

    def take_keyword(self, word: str) -> bool:
        if self.keyword() == word:
            self.pos += len(word)
            return True
        return False

    def take_char(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def error(self, reason: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(reason, self.pos if position is None else position)

    def parse(self) -> Node | None:
        if len(self.text) > MAX_QUERY_CHARS:
            raise QuerySyntaxError(f"The query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS)
        if self.at_end():
            return None
        node = self.parse_or()
        if not self.at_end():
            if self.peek() == ")":
                raise self.error("This ')' has no matching '('")
            if self.keyword() == "THEN":
                raise self.error("THEN sequences need recorded events: search recorded sessions for them")
            raise self.error(f"Unexpected {self.text[self.pos : self.pos + 20]!r}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.take_keyword("OR"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_unary()]
        while True:
            if self.take_keyword("AND"):
                items.append(self.parse_unary())
            elif not self.at_end() and self.peek() != ")" and self.keyword() not in ("OR", "THEN"):
                items.append(self.parse_unary())
            else:
                break
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_unary(self) -> Node:
        self.skip_spaces()
        start = self.pos
        if self.take_keyword("NOT") or self.take_char("-"):
            return Not(self.parse_unary(), start)
        return self.parse_primary()

    def parse_primary(self) -> Node:
        if self.at_end():
            raise self.error("The query ends where a filter was expected")
        keyword = self.keyword()
        if keyword is not None:
            raise self.error(f"{keyword} needs a filter before it")
        if self.take_char("("):
            open_position = self.pos - 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"Parentheses nest deeper than {MAX_DEPTH} levels")
            if self.peek() == ")":
                raise self.error("The parentheses are empty")
            node = self.parse_or()
            if not self.take_char(")"):
                raise self.error("This '(' is not closed: add ')'", open_position)
            self.depth -= 1
            return node
        return self.parse_term()

    def parse_term(self) -> Term | Word:
        start = self.pos
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise QuerySyntaxError(f"The query has more than {MAX_TERMS} filters", start)
        if self.text[self.pos] in "\"'":
            return Word(value=self.scan_quoted(), position=start)
        name = self.scan_field()
        op = self.scan_operator()
        if op is None:
            word = name + self.scan_word()
            if not word:
                raise self.error(f"Expected a filter such as user:alice, found {self.text[self.pos]!r}")
            return Word(value=word, position=start)
        if not name:
            raise self.error(f"Expected a field name before {op!r}, as in user{op}alice", start)
        value = self.scan_value(f"{name}{op}")
        if self.pos < len(self.text) and self.text[self.pos] == "[":
            raise self.error("[field=value] payload filters need recorded events: search recorded sessions for them")
        return Term(field=name.lower(), op=op, value=value, position=start)

    def scan_field(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in FIELD_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def scan_word(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in WORD_END:
            self.pos += 1
        return self.text[start : self.pos]

    def scan_operator(self) -> str | None:
        for op in OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        return None

    def scan_value(self, after: str) -> str:
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            return self.scan_quoted()
        while self.pos < len(self.text) and self.text[self.pos] not in WORD_END:
            self.pos += 1
        if self.pos == start:
            raise self.error(f"{after} needs a value right after it, as in {after}value (quote values with spaces)")
        return self.text[start : self.pos]

    def scan_quoted(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        chars = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\" and self.pos + 1 < len(self.text):
                chars.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if char == quote:
                self.pos += 1
                return "".join(chars)
            chars.append(char)
            self.pos += 1
        raise self.error(f"This {quote} string is not closed: add {quote}", start)


def parse(text: str) -> Node | None:
    """Parse a live search; None for an empty one. Raises QuerySyntaxError with the position of the problem."""
    return _Parser(text).parse()


# Predicates -------------------------------------------------------------------------------

Predicate = Callable[[LiveSession, int], bool]
"""Tells whether a session matches, given the current server time in milliseconds."""


def compile_query(node: Node | None) -> Predicate:
    """Compile a syntax tree into a predicate; raise QuerySyntaxError for unknown fields or bad values."""
    if node is None:
        return lambda session, now: True
    if isinstance(node, And):
        parts = [compile_query(item) for item in node.items]
        return lambda session, now: all(part(session, now) for part in parts)
    if isinstance(node, Or):
        parts = [compile_query(item) for item in node.items]
        return lambda session, now: any(part(session, now) for part in parts)
    if isinstance(node, Not):
        inner = compile_query(node.item)
        return lambda session, now: not inner(session, now)
    if isinstance(node, Word):
        return _free_text(node.value)
    return _compile_term(node)


def _compile_term(term: Term) -> Predicate:
    name = term.field
    if name in EXACT_FIELDS:
        return _attribute_match(EXACT_FIELDS[name], _value_matcher(term, caseless=False))
    if name in CASELESS_FIELDS:
        return _attribute_match(CASELESS_FIELDS[name], _value_matcher(term, caseless=True))
    if name in TEXT_FIELDS:
        return _attribute_match(TEXT_FIELDS[name], _text_matcher(term))
    if name == "active":
        wanted = _parse_boolean(term)
        return lambda session, now: session.active is wanted
    if name == "duration":
        return _duration_comparison(term)
    key = metadata_key(name)
    if key is not None:
        matches = _value_matcher(term, caseless=False)
        return lambda session, now: key in session.metadata and matches(session.metadata[key])
    if name in RECORDED_ONLY_FIELDS:
        raise QuerySyntaxError(f"{name} needs recorded events: search recorded sessions for it", term.position)
    raise QuerySyntaxError(f"Unknown field {term.field!r}: use one of {', '.join(LIVE_FIELDS)}", term.position)


def metadata_key(name: str) -> str | None:
    """Return KEY of a `meta.KEY` or `metadata.KEY` field, else None."""
    for prefix in METADATA_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return None


def _attribute_match(attribute: str, matches: Callable[[str], bool]) -> Predicate:
    def predicate(session: LiveSession, now: int) -> bool:
        return matches(getattr(session, attribute) or "")

    return predicate


def _require_match_op(term: Term) -> None:
    if term.op not in MATCH_OPS:
        raise QuerySyntaxError(f"{term.field} takes ':' (as in {term.field}:value), not {term.op!r}", term.position)


def _value_matcher(term: Term, *, caseless: bool) -> Callable[[str], bool]:
    """Exact match; `*` alone means any non-empty value and `*` inside a value is a wildcard."""
    _require_match_op(term)
    if term.value == "*":
        return bool
    if "*" in term.value:
        pattern = re.compile(_wildcard_regex(term.value), re.IGNORECASE if caseless else 0)
        return lambda value: pattern.fullmatch(value) is not None
    if caseless:
        wanted = term.value.casefold()
        return lambda value: value.casefold() == wanted
    wanted = term.value
    return lambda value: value == wanted


def _text_matcher(term: Term) -> Callable[[str], bool]:
    _require_match_op(term)
    if term.value == "*":
        return lambda value: True
    if "*" in term.value:
        pattern = re.compile(_wildcard_regex(term.value), re.IGNORECASE)
        return lambda value: pattern.fullmatch(value) is not None
    wanted = term.value.casefold()
    return lambda value: wanted in value.casefold()


def _wildcard_regex(value: str) -> str:
    return ".*".join(re.escape(part) for part in value.split("*"))


_haystacks: dict[int, tuple[LiveSession, str]] = {}
MAX_HAYSTACKS = 200_000


def _haystack(session: LiveSession) -> str:
    """Return the casefolded text free-text search looks in, computed once per session object.

    The registry replaces a session's object whenever a visible field changes, so the
    object's identity (checked, because ids of freed objects are reused) keys the cache.
    """
    cached = _haystacks.get(id(session))
    if cached is not None and cached[0] is session:
        return cached[1]
    fields = (session.user_id, session.user_anonymous_id, session.url, session.title, session.session_id)
    text = "\n".join([*(value for value in fields if value), *session.metadata.values()]).casefold()
    if len(_haystacks) >= MAX_HAYSTACKS:
        _haystacks.clear()
    _haystacks[id(session)] = (session, text)
    return text


def _free_text(text: str) -> Predicate:
    wanted = text.casefold()
    return lambda session, now: wanted in _haystack(session)


def _parse_boolean(term: Term) -> bool:
    _require_match_op(term)
    value = term.value.casefold()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise QuerySyntaxError(f"active takes true or false, not {term.value!r}", term.position)


def parse_duration(term: Term) -> int:
    """Return a duration such as 90s, 5m or 1.5h in milliseconds; a bare number is seconds."""
    text = term.value.strip().lower()
    if text.replace(".", "", 1).isdigit():
        return int(float(text) * 1000)
    total = 0
    position = 0
    for match in _DURATION.finditer(text):
        if match.start() != position:
            break
        total += int(float(match.group(1)) * DURATION_UNITS[match.group(2)])
        position = match.end()
    if position != len(text) or position == 0:
        raise QuerySyntaxError(f"Invalid duration {term.value!r}: write it as 90s, 5m, 1h30m or 500ms", term.position)
    return total


def _duration_comparison(term: Term) -> Predicate:
    if term.op not in COMPARISONS:
        raise QuerySyntaxError(f"duration takes a comparison: duration>5m, >=, < or <=, not {term.op!r}", term.position)
    limit = parse_duration(term)
    compare = {
        ">": lambda duration: duration > limit,
        ">=": lambda duration: duration >= limit,
        "<": lambda duration: duration < limit,
        "<=": lambda duration: duration <= limit,
    }[term.op]
    return lambda session, now: compare(now - session.started_at)


def uses_duration(node: Node | None) -> bool:
    """Tell whether the result of `node` changes with time alone."""
    if isinstance(node, Term):
        return node.field == "duration"
    if isinstance(node, And | Or):
        return any(uses_duration(item) for item in node.items)
    if isinstance(node, Not):
        return uses_duration(node.item)
    return False


def without_field(node: Node | None, facet: str) -> Node | None:
    """Drop the top-level AND terms on `facet`, so that its menu counts the values the other filters leave."""
    items = node.items if isinstance(node, And) else (node,) if node is not None else ()
    kept = tuple(item for item in items if not (isinstance(item, Term) and _facet_of(item.field) == facet))
    if len(kept) == len(items):
        return node
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(kept)


def _facet_of(field_name: str) -> str:
    key = metadata_key(field_name)
    return f"meta.{key}" if key is not None else field_name


# Requests and results ---------------------------------------------------------------------


class ListRequest(BaseModel):
    """A request for one page of the live list: a `list.subscribe` message or the query string of GET /v1/sessions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    project_id: str
    query: str = Field(default="", max_length=MAX_QUERY_CHARS)
    sort: Literal["startedAt", "duration"] = "startedAt"
    order: Literal["asc", "desc"] = "desc"
    limit: int = Field(default=50, ge=1)
    offset: int = Field(default=0, ge=0)

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], *, max_limit: int) -> ListRequest:
        """Validate the request; raise ProtocolError (400) naming each bad field or the query's problem."""
        try:
            request = cls.model_validate(dict(fields))
        except ValidationError as exc:
            raise validation_error(exc, "list request") from None
        if request.limit > max_limit:
            raise ProtocolError(
                code="invalid_request",
                message=f"The limit {request.limit} is over the maximum of {max_limit}: page with offset.",
                details={"maxLimit": max_limit},
            )
        request.compiled()  # raises on a bad query
        return request

    def compiled(self) -> CompiledQuery:
        return compile_search(self.query)

    @property
    def newest_first(self) -> bool:
        """Tell whether the page lists later start times first (a longer duration is an earlier start)."""
        return (self.sort == "startedAt") == (self.order == "desc")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


@dataclass(frozen=True)
class CompiledQuery:
    text: str
    node: Node | None
    predicate: Predicate
    time_dependent: bool


_compiled_cache: OrderedDict[str, CompiledQuery] = OrderedDict()
MAX_COMPILED_QUERIES = 512


def compile_search(text: str) -> CompiledQuery:
    """Parse and compile a search, with a small cache: dashboards send the same few queries again and again."""
    cached = _compiled_cache.get(text)
    if cached is not None:
        _compiled_cache.move_to_end(text)
        return cached
    try:
        node = parse(text)
        compiled = CompiledQuery(
            text=text, node=node, predicate=compile_query(node), time_dependent=uses_duration(node)
        )
    except QuerySyntaxError as error:
        raise error.to_protocol_error(text) from None
    _compiled_cache[text] = compiled
    while len(_compiled_cache) > MAX_COMPILED_QUERIES:
        _compiled_cache.popitem(last=False)
    return compiled


@dataclass
class ListResult:
    """Every session matching a query, in the requested order, and the facet counts of the filter menus."""

    sessions: list[LiveSession]
    facets: dict[str, list[dict[str, Any]]]
    computed_at: float = field(default_factory=time.monotonic)
    version: int = 0
    """Registry version of the project the result was computed from."""

    @property
    def total(self) -> int:
        return len(self.sessions)

    def page(self, request: ListRequest) -> list[LiveSession]:
        return self.sessions[request.offset : request.offset + request.limit]


def list_sessions(ordered: list[LiveSession], request: ListRequest, *, now_ms: int) -> ListResult:
    """Filter `ordered` (oldest start first), order it as requested and count the facet values."""
    compiled = request.compiled()
    predicate = compiled.predicate
    matches = ordered if compiled.node is None else [s for s in ordered if predicate(s, now_ms)]
    facets = count_facets(ordered, matches, compiled.node, now_ms=now_ms)
    if request.newest_first:
        matches = matches[::-1]
    return ListResult(sessions=matches, facets=facets)


def count_facets(
    every: list[LiveSession], matches: list[LiveSession], node: Node | None, *, now_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """Count each facet's values among the matches; a facet the query filters on counts without that filter."""
    counters = _count_values(matches, FACET_FIELDS)
    for name in FACET_FIELDS:
        reduced = without_field(node, name)
        if reduced is not node:
            counters[name] = _count_values(_filter(every, reduced, now_ms), (name,), metadata=False)[name]

    metadata_facets = sorted(
        (name for name in counters if name.startswith("meta.")), key=lambda name: -sum(counters[name].values())
    )
    for name in metadata_facets[MAX_METADATA_FACETS:]:
        del counters[name]
    for name in metadata_facets[:MAX_METADATA_FACETS]:
        reduced = without_field(node, name)
        if reduced is not node:
            counters[name] = _count_values(_filter(every, reduced, now_ms), (), metadata=True).get(name, {})

    return {name: _most_common(counter) for name, counter in counters.items()}


def _count_values(
    sessions: list[LiveSession], fields: tuple[str, ...], *, metadata: bool = True
) -> dict[str, dict[str, int]]:
    """Count the non-empty values of `fields` (and of every metadata key as `meta.KEY`) in one pass."""
    counters: dict[str, dict[str, int]] = {name: {} for name in fields}
    plain = [(name, counters[name]) for name in fields if name != "active"]
    active = counters.get("active")
    metadata_counters: dict[str, dict[str, int]] = {}
    for session in sessions:
        values = session.__dict__  # direct reads: this loop runs once per live session of the project
        for name, counter in plain:
            value = values[name]
            if value:
                counter[value] = counter.get(value, 0) + 1
        if active is not None:
            key = "true" if values["active"] else "false"
            active[key] = active.get(key, 0) + 1
        if metadata:
            for key, value in values["metadata"].items():
                counter = metadata_counters.get(key)
                if counter is None:
                    counter = metadata_counters[key] = {}
                counter[value] = counter.get(value, 0) + 1
    for key, counter in metadata_counters.items():
        counters[f"meta.{key}"] = counter
    return counters


def _most_common(counter: dict[str, int]) -> list[dict[str, Any]]:
    ranked = heapq.nsmallest(MAX_FACET_VALUES, counter.items(), key=lambda item: (-item[1], item[0]))
    return [{"value": value, "count": count} for value, count in ranked]


def _filter(sessions: list[LiveSession], node: Node | None, now_ms: int) -> list[LiveSession]:
    if node is None:
        return sessions
    predicate = compile_query(node)
    return [s for s in sessions if predicate(s, now_ms)]


class ListingCache:
    """Results per (project, query, order), reused while the project's registry version is unchanged.

    Every agent on the default view shares one computation, and pages of one query share it too.
    A caller that accepts a result up to `max_age_seconds` old also gets one computed from an
    older version: while sessions start and end every second, a project with 10,000 live
    sessions would otherwise be filtered and counted again for every request.
    """

    def __init__(self, *, max_entries: int = 256) -> None:
        self._max_entries = max_entries
        self._results: OrderedDict[tuple, ListResult] = OrderedDict()

    def get(
        self,
        request: ListRequest,
        *,
        version: int,
        ordered: Callable[[], list[LiveSession]],
        now_ms: int,
        max_age_seconds: float = 0.0,
    ) -> ListResult:
        key = (request.project_id, request.query, request.newest_first)
        cached = self._results.get(key)
        if cached is not None and self._usable(cached, request, version, max_age_seconds):
            self._results.move_to_end(key)
            return cached
        result = list_sessions(ordered(), request, now_ms=now_ms)
        result.version = version
        self._results[key] = result
        self._results.move_to_end(key)
        while len(self._results) > self._max_entries:
            self._results.popitem(last=False)
        return result

    @staticmethod
    def _usable(result: ListResult, request: ListRequest, version: int, max_age_seconds: float) -> bool:
        age = time.monotonic() - result.computed_at
        if request.compiled().time_dependent and age > TIME_DEPENDENT_CACHE_SECONDS:
            return False
        return result.version == version or age <= max_age_seconds

