"""The shared search-bar grammar: one text, two dialects."""

from __future__ import annotations

import pytest
from tandem_protocol.presence import LivePresence
from tandem_protocol.query import LIVE, RECORDED, And, Attribute, QuerySyntaxError, Term, Then, Word, parse


@pytest.mark.parametrize(
    ("text", "live", "recorded"),
    [
        ("", None, "The query is empty"),
        ("alice", Word("alice", 0), "Expected ':' or a comparison after 'alice'"),
        ('"New York"', Word("New York", 0), "Expected a field name such as user, url or clicked"),
        (
            "clicked:a THEN error:*",
            "THEN sequences need recorded events",
            Then((Term("clicked", ":", "a", 0), Term("error", ":", "*", 15)), 0),
        ),
        (
            "event:x[a=b]",
            "payload filters need recorded events",
            Term("event", ":", "x", 0, (Attribute("a", "b", 8),)),
        ),
        ("user:a,b", Term("user", ":", "a,b", 0), "Expected a field name such as user, url or clicked"),
        ("User:a b", And((Term("user", ":", "a", 0), Word("b", 7))), "Expected ':' or a comparison after 'b'"),
    ],
)
def test_dialects(text, live, recorded):
    for dialect, expected in ((LIVE, live), (RECORDED, recorded)):
        if isinstance(expected, str):
            with pytest.raises(QuerySyntaxError) as caught:
                parse(text, dialect)
            assert expected in caught.value.reason
        else:
            assert parse(text, dialect) == expected


def test_error_to_protocol():
    with pytest.raises(QuerySyntaxError) as caught:
        parse("(user:a", LIVE)
    error = caught.value.to_protocol_error("(user:a")
    assert (error.code, error.status, error.details["position"]) == ("invalid_query", 400, 0)
    assert "this '(' is not closed" in error.message


def test_presence_limit():
    LivePresence(project_id="demo", last_seen={"s1": 1})
    with pytest.raises(ValueError):
        LivePresence(project_id="demo", last_seen={f"s{n}": n for n in range(2001)})
