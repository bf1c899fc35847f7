"""Each project's retention, applied as ClickHouse TTLs on the recorded-session tables.

One TTL per table covers every project: a `multiIf` picks the project's days, and
a `WHERE` limits deletion to the projects that keep data for a limited time, so
that a project with no retention (and no default) keeps its sessions.
"""

from __future__ import annotations

import structlog
from tandem_protocol import Project

from tandem_sessions.store.driver import ClickHouse

log = structlog.get_logger(__name__)

TIME_COLUMNS = {
    "sessions": "start_at",
    "session_batches": "received_at",
    "session_events": "timestamp",
    "replay_chunks": "stored_at",
}
"""Each table with recorded data, and the column its rows age by."""


def retention_days(projects: list[Project], default_days: int) -> dict[str, int]:
    """Return the days each project keeps its sessions, leaving out projects that keep them."""
    days = {project.id: project.retention_days or default_days for project in projects}
    return {project_id: value for project_id, value in sorted(days.items()) if value > 0}


def ttl_clause(column: str, days: dict[str, int], default_days: int) -> str | None:
    """Return the TTL expression for a table, or None when no project deletes anything.

    Project ids are identifiers (letters, digits, '-', '_'), so they are safe inside quotes.
    The text matches the way ClickHouse formats the clause in `system.tables.engine_full`.
    """
    if not days:
        return None
    branches = ", ".join(f"project_id = '{project_id}', {value}" for project_id, value in days.items())
    expression = f"toDateTime({column}) + toIntervalDay(multiIf({branches}, {default_days}))"
    if default_days > 0:
        return expression
    listed = ", ".join(f"'{project_id}'" for project_id in days)
    return f"{expression} WHERE project_id IN ({listed})"


async def apply_retention(db: ClickHouse, projects: list[Project], *, default_days: int) -> list[str]:
    """Set or remove the TTL of every recorded-session table; return the tables changed.

    A table whose TTL is already the wanted one is left alone, because changing a TTL
    makes ClickHouse rewrite the table's parts to apply it to existing rows.
    """
    days = retention_days(projects, default_days)
    changed = []
    for table, column in TIME_COLUMNS.items():
        rows = await db.query(
            "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {table:String}",
            {"table": table},
        )
        if not rows:
            continue
        engine = rows[0][0]
        clause = ttl_clause(column, days, default_days)
        if clause is None:
            if " TTL " not in engine:
                continue
            await db.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            if f"TTL {clause}" in engine:
                continue
            await db.command(f"ALTER TABLE {table} MODIFY TTL {clause}")
        changed.append(table)
    if changed:
        log.info("retention.applied", tables=changed, projects=days, default_days=default_days)
    return changed
