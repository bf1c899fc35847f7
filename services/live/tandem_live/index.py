"""A project's live sessions with indexes kept up to date, so that a filter does not walk every session.

Each field a filter or a facet menu uses gets an inverted index: for each value,
the ids of the sessions that have it. The facet fields (browser, OS, device,
country, language) and every metadata key are indexed from the start. Any other
field is indexed the first time a query filters on it, and kept from then on.
The sessions are also kept in start order, so that a page, a sort and a
`duration` filter need no sort.

The registry calls `put` and `remove` for every change it shows; each bumps
`version`, which results computed from the index are checked against.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from tandem_protocol import LiveSession

ALWAYS_INDEXED = ("browser", "os", "device", "country", "language")
"""Fields indexed from the start: the facet menus count their values for every list request."""


class ValueIndex:
    """Session ids by value of one field; a value of a single session maps to the bare id, not to a set."""

    __slots__ = ("ids",)

    def __init__(self) -> None:
        self.ids: dict[str, str | set[str]] = {}

    def __len__(self) -> int:
        """Number of distinct values."""
        return len(self.ids)

    def add(self, value: str, session_id: str) -> None:
        current = self.ids.get(value)
        if current is None:
            self.ids[value] = session_id
        elif type(current) is str:
            if current != session_id:
                self.ids[value] = {current, session_id}
        else:
            current.add(session_id)

    def remove(self, value: str, session_id: str) -> None:
        current = self.ids.get(value)
        if current is None:
            return
        if type(current) is str:
            if current == session_id:
                del self.ids[value]
            return
        current.discard(session_id)
        if len(current) == 1:
            self.ids[value] = next(iter(current))
        elif not current:
            del self.ids[value]

    def of(self, value: str) -> set[str]:
        """Return the ids of the sessions with `value`; the set may be the index's own: do not change it."""
        current = self.ids.get(value)
        if current is None:
            return set()
        return {current} if type(current) is str else current

    def union(self, values: Iterable[str]) -> set[str]:
        """Return the ids of the sessions with any of `values`, as a new set."""
        result: set[str] = set()
        for value in values:
            current = self.ids.get(value)
            if current is None:
                continue
            if type(current) is str:
                result.add(current)
            else:
                result |= current
        return result

    def counts(self, among: set[str] | None = None, *, excluded: set[str] | None = None) -> dict[str, int]:
        """Count the sessions of each value; zero counts are left out.

        Counts among `among` (a set of ids), or among all sessions but `excluded`, or among all.
        A large match set is cheaper to count through the few sessions it leaves out.
        """
        if among is None and excluded is None:
            return {value: 1 if type(current) is str else len(current) for value, current in self.ids.items()}
        counts: dict[str, int] = {}
        for value, current in self.ids.items():
            if type(current) is str:
                count = int(current in among) if among is not None else int(current not in excluded)
            elif among is not None:
                count = len(current & among)  # Python walks the smaller of the two sets
            else:
                count = len(current) - len(current & excluded)
            if count:
                counts[value] = count
        return counts


def field_value(session: LiveSession, name: str) -> str:
    """Return the value of a string field as the filters see it: None is the empty string."""
    return session.__dict__[name] or ""


def _order_key(session: LiveSession) -> tuple[int, str]:
    return (session.started_at, session.session_id)


class ProjectIndex:
    """One project's live sessions by id, in start order, and indexed by field value."""

    def __init__(self, sessions: Iterable[LiveSession] = ()) -> None:
        self.by_id: dict[str, LiveSession] = {}
        self.version = 0
        self._fields: dict[str, ValueIndex] = {name: ValueIndex() for name in ALWAYS_INDEXED}
        self._metadata: dict[str, ValueIndex] = {}
        self._inactive: set[str] = set()
        self._order: list[str] = []
        """Session ids, oldest start first (ties by id)."""
        self._ordered_sessions: list[LiveSession] = []
        self._ordered_version = -1
        for session in sessions:
            self.put(session)

    def __len__(self) -> int:
        return len(self.by_id)

    # Changes -------------------------------------------------------------------------------

    def put(self, session: LiveSession) -> None:
        """Add a session, or replace the one with the same id."""
        session_id = session.session_id
        previous = self.by_id.get(session_id)
        if previous is not None:
            self._replace(previous, session)
        else:
            self.by_id[session_id] = session
            self._insert_in_order(session)
            for name, index in self._fields.items():
                index.add(field_value(session, name), session_id)
            for key, value in session.metadata.items():
                self._metadata_index(key).add(value, session_id)
            if not session.active:
                self._inactive.add(session_id)
        self.version += 1

    def remove(self, session_id: str) -> LiveSession | None:
        """Remove a session; return it, or None when it was not there."""
        session = self.by_id.get(session_id)
        if session is None:
            return None
        self._remove_from_order(session)
        del self.by_id[session_id]
        for name, index in self._fields.items():
            index.remove(field_value(session, name), session_id)
        for key, value in session.metadata.items():
            self._remove_metadata(key, value, session_id)
        self._inactive.discard(session_id)
        self.version += 1
        return session

    def _replace(self, old: LiveSession, new: LiveSession) -> None:
        session_id = new.session_id
        if old.started_at != new.started_at:
            self._remove_from_order(old)
            self.by_id[session_id] = new
            self._insert_in_order(new)
        else:
            self.by_id[session_id] = new
        for name, index in self._fields.items():
            before, after = field_value(old, name), field_value(new, name)
            if before != after:
                index.remove(before, session_id)
                index.add(after, session_id)
        if old.metadata != new.metadata:
            for key, value in old.metadata.items():
                if new.metadata.get(key) != value:
                    self._remove_metadata(key, value, session_id)
            for key, value in new.metadata.items():
                if old.metadata.get(key) != value:
                    self._metadata_index(key).add(value, session_id)
        if new.active:
            self._inactive.discard(session_id)
        else:
            self._inactive.add(session_id)

    def _insert_in_order(self, session: LiveSession) -> None:
        key = _order_key(session)
        order = self._order
        if not order or _order_key(self.by_id[order[-1]]) <= key:
            order.append(session.session_id)  # the usual case: the newest session
        else:
            position = bisect.bisect_left(order, key, key=lambda session_id: _order_key(self.by_id[session_id]))
            order.insert(position, session.session_id)

    def _remove_from_order(self, session: LiveSession) -> None:
        """Remove `session` from the start order; every session in the order must still be in `by_id`."""
        order = self._order
        position = bisect.bisect_left(
            order, _order_key(session), key=lambda session_id: _order_key(self.by_id[session_id])
        )
        if position < len(order) and order[position] == session.session_id:
            del order[position]
        else:
            order.remove(session.session_id)

    def _metadata_index(self, key: str) -> ValueIndex:
        index = self._metadata.get(key)
        if index is None:
            index = self._metadata[key] = ValueIndex()
        return index

    def _remove_metadata(self, key: str, value: str, session_id: str) -> None:
        index = self._metadata.get(key)
        if index is not None:
            index.remove(value, session_id)
            if not index.ids:
                del self._metadata[key]

    # Reading -------------------------------------------------------------------------------

    def field(self, name: str) -> ValueIndex:
        """Return the index of a string field of LiveSession, building it the first time it is asked for."""
        index = self._fields.get(name)
        if index is None:
            index = ValueIndex()
            for session_id, session in self.by_id.items():
                index.add(field_value(session, name), session_id)
            self._fields[name] = index
        return index

    def metadata(self, key: str) -> ValueIndex | None:
        """Return the index of a metadata key, or None when no session has the key."""
        return self._metadata.get(key)

    def metadata_keys(self) -> Iterator[str]:
        return iter(self._metadata)

    def inactive(self) -> set[str]:
        """Return the ids of the sessions whose tab is hidden; the set is the index's own: do not change it."""
        return self._inactive

    def started_between(self, *, after: float | None = None, before: float | None = None, inclusive: bool) -> set[str]:
        """Return the ids of the sessions that started after `after` and before `before` (server ms).

        `inclusive` makes both bounds inclusive.
        """

        def started(session_id: str) -> int:
            return self.by_id[session_id].started_at

        order = self._order
        start, end = 0, len(order)
        if after is not None:
            find = bisect.bisect_left if inclusive else bisect.bisect_right
            start = find(order, after, key=started)
        if before is not None:
            find = bisect.bisect_right if inclusive else bisect.bisect_left
            end = find(order, before, key=started)
        return set(order[start:end])

    def ordered(self) -> list[LiveSession]:
        """Return every session, oldest start first; the list is shared until the next change: do not change it."""
        if self._ordered_version != self.version:
            by_id = self.by_id
            self._ordered_sessions = [by_id[session_id] for session_id in self._order]
            self._ordered_version = self.version
        return self._ordered_sessions

    def in_order(self, session_ids: set[str]) -> list[LiveSession]:
        """Return the sessions of `session_ids`, oldest start first."""
        by_id = self.by_id
        if len(session_ids) * 8 < len(by_id):
            return sorted((by_id[session_id] for session_id in session_ids), key=_order_key)
        return [by_id[session_id] for session_id in self._order if session_id in session_ids]
