"""The session search language: the recorded-session dialect of the shared search-bar grammar.

    query   = or
    or      = and { "OR" and }
    and     = then { ["AND"] then }          two terms side by side mean AND
    then    = unary { "THEN" unary }         ordered: the left event happens before the right one
    unary   = "NOT" unary | "-" unary | primary
    primary = "(" or ")" | term
    term    = FIELD OP value [ "[" key "=" value { "," key "=" value } "]" ]
    OP      = ":" | "=" | ">" | ">=" | "<" | "<="
    value   = "quoted string" | word            a word ends at a space, "(", ")", "[", "," or "]"

The tokenizer and the grammar live in tandem_protocol.query, which the live list
shares; tandem_sessions.search.sql compiles the tree to SQL. Keywords are
case-insensitive. docs/SEARCH.md lists the fields. Every error is a
QuerySyntaxError with the character position (0-based) and the reason.
"""

from __future__ import annotations

from tandem_protocol import query
from tandem_protocol.query import (
    MAX_DEPTH,
    MAX_QUERY_CHARS,
    MAX_TERMS,
    And,
    Attribute,
    Node,
    Not,
    Or,
    QuerySyntaxError,
    Term,
    Then,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_QUERY_CHARS",
    "MAX_TERMS",
    "And",
    "Attribute",
    "Node",
    "Not",
    "Or",
    "QuerySyntaxError",
    "Term",
    "Then",
    "parse",
]


def parse(text: str) -> Node:
    """Parse a search query; raise QuerySyntaxError with the position and reason of the first problem."""
    return query.parse(text, query.RECORDED)  # never None: the recorded dialect rejects an empty query
