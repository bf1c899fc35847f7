"""The session search language: a recursive-descent parser from query text to a syntax tree.

    query   = or
    or      = and { "OR" and }
    and     = then { ["AND"] then }          two terms side by side mean AND
    then    = unary { "THEN" unary }         ordered: the left event happens before the right one
    unary   = "NOT" unary | "-" unary | primary
    primary = "(" or ")" | term
    term    = FIELD OP value [ "[" key "=" value { "," key "=" value } "]" ]
    OP      = ":" | "=" | ">" | ">=" | "<" | "<="
    value   = "quoted string" | word            a word ends at a space, "(", ")" or "["

Keywords are case-insensitive. docs/SEARCH.md lists the fields. Every error is a
QuerySyntaxError with the character position (0-based) and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_QUERY_CHARS = 2000
MAX_TERMS = 64
MAX_DEPTH = 32

KEYWORDS = ("AND", "OR", "NOT", "THEN")
OPERATORS = (">=", "<=", ":", "=", ">", "<")  # two-character operators first
WORD_END = set(" \t\r\n()[")
FIELD_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class QuerySyntaxError(ValueError):
    """A query the parser rejects, with the 0-based position of the problem."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} (at position {position})")
        self.reason = reason
        self.position = position


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


Node = Term | And | Or | Not | Then


@dataclass
class _Parser:
    text: str
    pos: int = 0
    depth: int = 0
    terms: list[Term] = field(default_factory=list)

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

    def error(self, reason: str, position: int | None = None) -> QuerySyntaxError:
        return QuerySyntaxError(reason, self.pos if position is None else position)

    # Grammar -------------------------------------------------------------------------------

    def parse(self) -> Node:
        if len(self.text) > MAX_QUERY_CHARS:
            raise QuerySyntaxError(f"The query is longer than {MAX_QUERY_CHARS} characters", MAX_QUERY_CHARS)
        if self.at_end():
            raise self.error("The query is empty: write a filter such as user:alice")
        node = self.parse_or()
        if not self.at_end():
            if self.peek() == ")":
                raise self.error("This ')' has no matching '('")
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
        while self.take_keyword("THEN"):
            steps.append(self.parse_unary())
        return steps[0] if len(steps) == 1 else Then(tuple(steps), start)

    def parse_unary(self) -> Node:
        self.skip_spaces()
        start = self.pos
        if self.take_keyword("NOT") or self.take_char("-"):
            return Not(self.parse_unary(), start)
        return self.parse_primary()

    def take_char(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def parse_primary(self) -> Node:
        self.skip_spaces()
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

    def parse_term(self) -> Term:
        start = self.pos
        name = self.scan_field()
        if not name:
            raise self.error(f"Expected a field name such as user, url or clicked, found {self.text[self.pos]!r}")
        op = self.scan_operator()
        if op is None:
            raise self.error(f"Expected ':' or a comparison after {name!r}, as in {name}:value")
        value, _ = self.scan_value(f"{name}{op}")
        attributes = self.scan_attributes() if self.pos < len(self.text) and self.text[self.pos] == "[" else ()
        term = Term(field=name.lower(), op=op, value=value, position=start, attributes=attributes)
        self.terms.append(term)
        if len(self.terms) > MAX_TERMS:
            raise QuerySyntaxError(f"The query has more than {MAX_TERMS} filters", start)
        return term

    def scan_field(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in FIELD_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def scan_operator(self) -> str | None:
        for op in OPERATORS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        return None

    def scan_value(self, after: str) -> tuple[str, int]:
        """Read a quoted string or a word directly after the operator; return it and its position."""
        start = self.pos
        if self.pos < len(self.text) and self.text[self.pos] in "\"'":
            return self.scan_quoted(), start
        while self.pos < len(self.text) and self.text[self.pos] not in WORD_END and self.text[self.pos] not in ",]":
            self.pos += 1
        if self.pos == start:
            raise self.error(f"{after} needs a value right after it, as in {after}value (quote values with spaces)")
        return self.text[start : self.pos], start

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
            value, _ = self.scan_value(f"{key}=")
            attributes.append(Attribute(key=key, value=value, position=key_position))
            self.skip_spaces()
            if self.pos < len(self.text) and self.text[self.pos] == ",":
                self.pos += 1
                continue
            if self.pos < len(self.text) and self.text[self.pos] == "]":
                self.pos += 1
                return tuple(attributes)
            raise self.error("This '[' is not closed: add ']'", open_position)


def parse(text: str) -> Node:
    """Parse a search query; raise QuerySyntaxError with the position and reason of the first problem."""
    return _Parser(text).parse()
