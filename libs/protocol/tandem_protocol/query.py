"""The search-bar language of recorded sessions and of the live list: one tokenizer and grammar, two dialects.

    query   = or
    or      = and { "OR" and }
    and     = then { ["AND"] then }          two terms side by side mean AND
    then    = unary { "THEN" unary }         recorded sessions: the left event happens before the right one
    unary   = "NOT" unary | "-" unary | primary
    primary = "(" or ")" | term | WORD       a bare WORD or "quoted phrase": live list only
    term    = FIELD OP value [ "[" key "=" value { "," key "=" value } "]" ]
    OP      = ":" | "=" | ">" | ">=" | "<" | "<="
    value   = "quoted string" | word         a word ends at a space, "(", ")" or "["

Keywords are case-insensitive. `[key=value]` attributes filter event payloads and
exist in recorded-session search only, where a value also ends at "," and "]".
Every error is a QuerySyntaxError with the character position (0-based) and the
reason. Each service compiles the tree its own way: tandem_sessions.search.sql to
SQL, tandem_live.listing to predicates and index look-ups; the fields each
accepts are theirs to check.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem_protocol.errors import ProtocolError

MAX_QUERY_CHARS = 2000
MAX_TERMS = 64
MAX_DEPTH = 32

KEYWORDS = ("AND", "OR", "NOT", "THEN")
OPERATORS = (">=", "<=", ":", "=", ">", "<")  # two-character operators first
WORD_END = frozenset(" \t\r\n()[")
FIELD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


@dataclass(frozen=True)
class Dialect:
    """The features one search accepts beyond the shared grammar."""

    free_text: bool
    """Bare words and quoted phrases are free-text filters (Word); otherwise each filter needs a field."""
    sequences: bool
    """`a THEN b` sequences of events."""
    attributes: bool
    """`[key=value]` payload filters after a term."""
    empty: bool
    """An empty query is valid (no filter) rather than an error."""
    field_examples: str = "user, url or clicked"
    """Field names quoted when a filter lacks one."""


RECORDED = Dialect(free_text=False, sequences=True, attributes=True, empty=False)
"""Recorded-session search: every filter names a field; THEN and payload attributes need recorded events."""

LIVE = Dialect(free_text=True, sequences=False, attributes=False, empty=True)
"""The live list: bare words search the session's identifiers, page and metadata; no sequences or attributes."""


class QuerySyntaxError(ValueError):
    """A query the parser or a compiler rejects, with the 0-based position of the problem."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} (at position {position})")
        self.reason = reason
        self.position = position

    def to_protocol_error(self, query: str) -> ProtocolError:
        """Return the 400 `invalid_query` error for `query`, with the position in its details."""
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
class Attribute:
    key: str
    value: str
    position: int


@dataclass(frozen=True)
class Term:
    """`field op value`, with optional `[key=value, …]` attributes for event payload fields."""

    field: str
    op: str
    value: str
    position: int
    attributes: tuple[Attribute, ...] = ()


@dataclass(frozen=True)
class Word:
    """A bare word or quoted phrase: free text (live list only)."""

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


@dataclass(frozen=True)
class Then:
    """Events matching each step, in this order, in the same session."""

    steps: tuple[Node, ...]
    position: int


Node = Term | Word | And | Or | Not | Then


class _Parser:
    def __init__(self, text: str, dialect: Dialect) -> None:
        self.text = text
        self.dialect = dialect
        self.pos = 0
        self.depth = 0
        self.terms = 0

    # Scanning ------------------------------------------------------------------------------

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
        """Return the keyword at the cursor (without consuming it), or None."""
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

    # Grammar -------------------------------------------------------------------------------

    def parse(self) -> Node | None:
        if len(self.text) > MAX_QUERY_CHARS:
            raise QuerySyntaxError(f"The query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS)
        if self.at_end():
            if self.dialect.empty:
                return None
            raise self.error("The query is empty: write a filter such as user:alice")
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
        items = [self.parse_then()]
        while True:
            if self.take_keyword("AND"):
                items.append(self.parse_then())
            elif not self.at_end() and self.peek() != ")" and self.keyword() not in ("OR", "THEN"):
                items.append(self.parse_then())
            else:
                break
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_then(self) -> Node:
        start = self.pos
        steps = [self.parse_unary()]
        while self.dialect.sequences and self.take_keyword("THEN"):
            steps.append(self.parse_unary())
        return steps[0] if len(steps) == 1 else Then(tuple(steps), start)

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
        free_text = self.dialect.free_text
        if free_text and self.text[self.pos] in "\"'":
            return Word(value=self.scan_quoted(), position=start)

        name = self.scan_field()
        if not name and not free_text:
            found = self.text[self.pos]
            raise self.error(f"Expected a field name such as {self.dialect.field_examples}, found {found!r}")
        op = self.scan_operator()
        if op is None:
            if not free_text:
                raise self.error(f"Expected ':' or a comparison after {name!r}, as in {name}:value")
            word = name + self.scan_word()
            if not word:
                raise self.error(f"Expected a filter such as user:alice, found {self.text[self.pos]!r}")
            return Word(value=word, position=start)

        if not name:
            raise self.error(f"Expected a field name before {op!r}, as in user{op}alice", start)
        value = self.scan_value(f"{name}{op}")

        attributes: tuple[Attribute, ...] = ()
        if self.pos < len(self.text) and self.text[self.pos] == "[":
            if not self.dialect.attributes:
                raise self.error(
                    "[field=value] payload filters need recorded events: search recorded sessions for them"
                )
            attributes = self.scan_attributes()
        return Term(field=name.lower(), op=op, value=value, position=start, attributes=attributes)

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
        """Read a quoted string or a word directly after the operator."""
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            return self.scan_quoted()
        ends_at_comma = self.dialect.attributes
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in WORD_END or (ends_at_comma and char in ",]"):
                break
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

    def scan_attributes(self) -> tuple[Attribute, ...]:
        open_position = self.pos
        self.pos += 1
        attributes = []
        while True:
            self.skip_spaces()
            key_position = self.pos
            key = self.scan_field()
            if not key:
                raise self.error("Expected a payload field name inside [ ], as in [plan=pro]")
            if not self.text.startswith("=", self.pos):
                raise self.error(f"Expected '=' after the payload field {key!r}")
            self.pos += 1
            value = self.scan_value(f"{key}=")
            attributes.append(Attribute(key=key, value=value, position=key_position))
            self.skip_spaces()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                return tuple(attributes)
            raise self.error("This '[' is not closed: add ']'", open_position)


def parse(text: str, dialect: Dialect) -> Node | None:
    """Parse a search in `dialect`; None for an empty one where the dialect allows it.

    Raises QuerySyntaxError with the position and reason of the first problem.
    """
    return _Parser(text, dialect).parse()
