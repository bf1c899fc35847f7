"""Search, sort, pagination and facet counts over a project's live sessions.

The search bar takes the syntax of recorded-session search (tandem_protocol.query,
live dialect), for the fields a live session has:

    user:alice browser:chrome country:FR meta.plan:pro
    (browser:firefox OR browser:safari) -device:mobile duration>5m
    url:checkout meta.company:"Acme Inc" alice "New York"

A bare word or quoted phrase, which recorded-session search rejects, matches any
session whose user id, anonymous id, page URL, title, session id or a metadata
value contains it. `THEN` sequences and `[key=value]` payload filters need recorded
events and are rejected here.

This module compiles the tree twice over: into a predicate on one session, which
checks every field and value and serves free text, and into look-ups in the
project's index (tandem_live.index), which answer a list request without walking
every session.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from tandem_protocol import LiveSession, ProtocolError, query
from tandem_protocol.codec import validation_error
from tandem_protocol.query import MAX_QUERY_CHARS, And, Node, Not, Or, QuerySyntaxError, Term, Word

from tandem_live.index import ProjectIndex, ValueIndex, field_value

MAX_FACET_VALUES = 20
MAX_METADATA_FACETS = 50
TIME_DEPENDENT_CACHE_SECONDS = 1.0
"""How long a result of a query on duration stays valid: durations grow without any registry change."""

MATCH_OPS = (":", "=")
COMPARISONS = (">", ">=", "<", "<=")

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


def parse(text: str) -> Node | None:
    """Parse a live search; None for an empty one. Raises QuerySyntaxError with the position of the problem."""
    return query.parse(text, query.LIVE)


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


# Evaluation over the index ----------------------------------------------------------------


def matching_ids(node: Node | None, index: ProjectIndex, now_ms: int) -> set[str] | None:
    """Return the ids of the sessions that match a compiled query's tree, or None (every session) for no filter.

    The tree must have compiled (compile_query), so its fields and values are valid.
    Terms use the index. Free-text words, which no index serves, are checked session
    by session, and only on the sessions that the other terms of their AND leave.
    The set may be one of the index's own: read it, do not change it, and do not keep it.
    """
    if node is None:
        return None
    return _ids(node, index, now_ms)


def _ids(node: Node, index: ProjectIndex, now_ms: int) -> AbstractSet[str]:
    if isinstance(node, Term):
        return _term_ids(node, index, now_ms)
    if isinstance(node, Not):
        return index.by_id.keys() - _ids(node.item, index, now_ms)
    if isinstance(node, Or):
        result: set[str] = set()
        for item in node.items:
            result |= _ids(item, index, now_ms)
        return result
    if isinstance(node, And):
        return _and_ids(node, index, now_ms)
    predicate = _free_text(node.value)
    return {session_id for session_id, session in index.by_id.items() if predicate(session, now_ms)}


def _and_ids(node: And, index: ProjectIndex, now_ms: int) -> AbstractSet[str]:
    indexed = [item for item in node.items if not _has_word(item)]
    scanned = [item for item in node.items if _has_word(item)]
    result: AbstractSet[str] = index.by_id.keys()
    if indexed:
        parts = sorted((_ids(item, index, now_ms) for item in indexed), key=len)
        result = parts[0]
        for part in parts[1:]:
            if not result:
                break
            result = result & part
    if scanned:
        predicate = compile_query(scanned[0] if len(scanned) == 1 else And(tuple(scanned)))
        by_id = index.by_id
        result = {session_id for session_id in result if predicate(by_id[session_id], now_ms)}
    return result


def _has_word(node: Node) -> bool:
    if isinstance(node, Word):
        return True
    if isinstance(node, Not):
        return _has_word(node.item)
    if isinstance(node, And | Or):
        return any(_has_word(item) for item in node.items)
    return False


def _term_ids(term: Term, index: ProjectIndex, now_ms: int) -> AbstractSet[str]:
    """Mirror _compile_term with the index: the same fields, the same matching rules."""
    name = term.field
    if name == "session":
        return _session_ids(term, index)
    if name in EXACT_FIELDS:
        return _value_ids(index.field(EXACT_FIELDS[name]), term, caseless=False)
    if name in CASELESS_FIELDS:
        return _value_ids(index.field(CASELESS_FIELDS[name]), term, caseless=True)
    if name in TEXT_FIELDS:
        return _text_ids(index.field(TEXT_FIELDS[name]), term, index)
    if name == "active":
        if _parse_boolean(term):
            return index.by_id.keys() - index.inactive()
        return index.inactive()
    if name == "duration":
        return _duration_ids(term, index, now_ms)
    key = metadata_key(name)
    values = index.metadata(key) if key is not None else None
    return _value_ids(values, term, caseless=False) if values is not None else set()


def _value_ids(values: ValueIndex, term: Term, *, caseless: bool) -> AbstractSet[str]:
    """Ids whose value matches as _value_matcher does: exactly, `*` for any non-empty value, or a wildcard."""
    if term.value == "*":
        return values.union(value for value in values.ids if value)
    if "*" in term.value:
        pattern = re.compile(_wildcard_regex(term.value), re.IGNORECASE if caseless else 0)
        return values.union(value for value in values.ids if pattern.fullmatch(value))
    if caseless:
        wanted = term.value.casefold()
        return values.union(value for value in values.ids if value.casefold() == wanted)
    return values.of(term.value)


def _session_ids(term: Term, index: ProjectIndex) -> AbstractSet[str]:
    ids = index.by_id.keys()
    if term.value == "*":
        return ids
    if "*" in term.value:
        pattern = re.compile(_wildcard_regex(term.value))
        return {session_id for session_id in ids if pattern.fullmatch(session_id)}
    return {term.value} if term.value in ids else set()


def _text_ids(values: ValueIndex, term: Term, index: ProjectIndex) -> AbstractSet[str]:
    """Ids whose text matches as _text_matcher does: `*` for any, a wildcard, or a piece of the text."""
    if term.value == "*":
        return index.by_id.keys()
    if "*" in term.value:
        pattern = re.compile(_wildcard_regex(term.value), re.IGNORECASE)
        return values.union(value for value in values.ids if pattern.fullmatch(value))
    wanted = term.value.casefold()
    return values.union(value for value in values.ids if wanted in value.casefold())


def _duration_ids(term: Term, index: ProjectIndex, now_ms: int) -> set[str]:
    """Return the sessions of a `duration` term: a duration above a limit is a start before `now - limit`."""
    cut = now_ms - parse_duration(term)
    if term.op in (">", ">="):
        return index.started_between(before=cut, inclusive=term.op == ">=")
    return index.started_between(after=cut, inclusive=term.op == "<=")


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


def list_sessions(sessions: ProjectIndex | Iterable[LiveSession], request: ListRequest, *, now_ms: int) -> ListResult:
    """Filter the sessions, order them as requested and count the facet values.

    `sessions` is a project's index, or sessions to index first.
    """
    index = sessions if isinstance(sessions, ProjectIndex) else ProjectIndex(sessions)
    compiled = request.compiled()
    matches = matching_ids(compiled.node, index, now_ms)
    if matches is not None and len(matches) == len(index):
        matches = None  # a filter every session passes: the shared order and the overall counts serve it
    ordered = index.ordered() if matches is None else index.in_order(matches)
    facets = count_facets(index, compiled.node, matches, now_ms=now_ms)
    if request.newest_first:
        ordered = ordered[::-1]
    return ListResult(sessions=ordered, facets=facets)


def count_facets(
    index: ProjectIndex, node: Node | None, matches: AbstractSet[str] | None, *, now_ms: int
) -> dict[str, list[dict[str, Any]]]:
    """Count each facet's values among the matches; a facet the query filters on counts without that filter.

    Metadata facets: the MAX_METADATA_FACETS keys most present among the matches.
    """
    counting = _FacetCounting(index)
    counters: dict[str, dict[str, int]] = {}
    for name in FACET_FIELDS:
        reduced = without_field(node, name)
        among = matches if reduced is node else matching_ids(reduced, index, now_ms)
        counters[name] = counting.field(name, among)

    metadata = {f"meta.{key}": counting.metadata(key, matches) for key in index.metadata_keys()}
    ranked = sorted((name for name in metadata if metadata[name]), key=lambda name: -sum(metadata[name].values()))
    for name in ranked[:MAX_METADATA_FACETS]:
        reduced = without_field(node, name)
        if reduced is node:
            counters[name] = metadata[name]
        else:
            counters[name] = counting.metadata(name.removeprefix("meta."), matching_ids(reduced, index, now_ms))
    return {name: _most_common(counter) for name, counter in counters.items()}


class _FacetCounting:
    """Value counts over one index, for the facets of one result.

    The counts of each value come from the index. With fewer matching sessions than
    values, they come from reading the matches instead. A match set larger than half
    the sessions is counted through the sessions it leaves out, computed once per set.
    """

    def __init__(self, index: ProjectIndex) -> None:
        self._index = index
        self._left_out: list[tuple[AbstractSet[str], set[str]]] = []
        """(match set, the other sessions); the match sets stay referenced, so that identity is safe."""

    def field(self, name: str, among: AbstractSet[str] | None) -> dict[str, int]:
        """Count the non-empty values of a field among `among` (ids), or among every session for None."""
        index = self._index
        if name == "active":
            hidden = index.inactive()
            total = len(index) if among is None else len(among)
            inactive = len(hidden) if among is None else len(hidden & among)
            counts = {"true": total - inactive, "false": inactive}
            return {value: count for value, count in counts.items() if count}
        by_id = index.by_id
        counts = self._values(index.field(name), among, lambda session_id: field_value(by_id[session_id], name))
        counts.pop("", None)
        return counts

    def metadata(self, key: str, among: AbstractSet[str] | None) -> dict[str, int]:
        """Count the values of a metadata key, the empty one included, among `among` or every session."""
        values = self._index.metadata(key)
        if values is None:
            return {}
        by_id = self._index.by_id
        return self._values(values, among, lambda session_id: by_id[session_id].metadata.get(key))

    def _values(
        self, values: ValueIndex, among: AbstractSet[str] | None, value_of: Callable[[str], str | None]
    ) -> dict[str, int]:
        if among is None:
            return values.counts()
        if len(among) < len(values):
            counts: dict[str, int] = {}
            for session_id in among:
                value = value_of(session_id)
                if value is not None:
                    counts[value] = counts.get(value, 0) + 1
            return counts
        if 2 * len(among) > len(self._index):
            return values.counts(excluded=self._others(among))
        return values.counts(among if isinstance(among, set) else set(among))

    def _others(self, among: AbstractSet[str]) -> set[str]:
        for known, others in self._left_out:
            if known is among:
                return others
        others = self._index.by_id.keys() - among
        self._left_out.append((among, others))
        return others


def _most_common(counter: dict[str, int]) -> list[dict[str, Any]]:
    ranked = heapq.nsmallest(MAX_FACET_VALUES, counter.items(), key=lambda item: (-item[1], item[0]))
    return [{"value": value, "count": count} for value, count in ranked]


class ListingCache:
    """Results per (project, query, order), reused while the project's index version is unchanged.

    Every agent on the default view shares one computation, and pages of one query share it too.
    A caller that accepts a result up to `max_age_seconds` old also gets one computed from an
    older version: while sessions start and end every second, that spares a computation per
    change and agent.
    """

    def __init__(self, *, max_entries: int = 256) -> None:
        self._max_entries = max_entries
        self._results: OrderedDict[tuple, ListResult] = OrderedDict()

    def get(
        self, request: ListRequest, *, index: ProjectIndex, now_ms: int, max_age_seconds: float = 0.0
    ) -> ListResult:
        key = (request.project_id, request.query, request.newest_first)
        cached = self._results.get(key)
        if cached is not None and self._usable(cached, request, index.version, max_age_seconds):
            self._results.move_to_end(key)
            return cached
        result = list_sessions(index, request, now_ms=now_ms)
        result.version = index.version
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
