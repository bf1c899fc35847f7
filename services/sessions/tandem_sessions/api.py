"""Agent HTTP API of recorded sessions: search, one session with its timeline markers, its events, its export.

Every route needs `Authorization: Bearer <agent token or API token>`, a role with the
replay permission, and the agent's access to the session's project.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import web
from tandem_protocol import ProtocolError, subjects
from tandem_protocol.parts import PART_TAG, PartJoiner
from tandem_runtime.access import Permission, agent_of, require_permission, require_project
from tandem_runtime.http import json_response
from tandem_runtime.tokens import AgentClaims, TokenSigner

from tandem_sessions.search.query import QuerySyntaxError, parse
from tandem_sessions.search.sql import compile_query, parse_time
from tandem_sessions.settings import SessionsSettings
from tandem_sessions.store import Store, StoreError
from tandem_sessions.store.reader import SORT_COLUMNS, SessionReader
from tandem_sessions.store.replay import ChunkKey

log = structlog.get_logger(__name__)

DEFAULT_SEARCH_LIMIT = 50
PART_MARKER = PART_TAG.encode()
"""Bytes that every chunk with a `tandem.part` event contains; a chunk without them is exported unparsed."""


@dataclass
class SessionsRuntime:
    """Resources the sessions app opens at start-up. `store` stays None while the store cannot be opened."""

    settings: SessionsSettings
    signer: TokenSigner
    store: Store | None = None
    reader: SessionReader | None = None
    store_problem: str | None = "The session store is opening."


RUNTIME = web.AppKey("sessions_runtime", SessionsRuntime)


@web.middleware
async def store_error_middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Answer 503 when ClickHouse fails, with its error code and message but no stack trace."""
    try:
        return await handler(request)
    except StoreError as error:
        log.warning("api.store_failed", path=request.path, code=error.code, error=error.message)
        raise ProtocolError(
            code="store_unavailable",
            message=f"The session store failed: {error.message}. Try again later.",
            status=503,
            details={"storeCode": error.code},
        ) from None


def require_agent(request: web.Request) -> AgentClaims:
    """Return the caller's claims (a login, socket or API token), which the authentication middleware read."""
    claims = agent_of(request)
    require_permission(claims, Permission.REPLAY, action="search and replay recorded sessions")
    return claims


def reader_of(request: web.Request) -> SessionReader:
    runtime = request.app[RUNTIME]
    if runtime.reader is None:
        raise ProtocolError(
            code="store_unavailable",
            message=f"{runtime.store_problem or 'The session store is not open.'} Try again later.",
            status=503,
        )
    return runtime.reader


def invalid_parameter(name: str, message: str) -> ProtocolError:
    return ProtocolError(code="invalid_parameter", message=message, details={"parameter": name})


def int_parameter(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid_parameter(name, f"{name}={raw[:32]!r} is not a whole number. Send {low} to {high}.") from None
    if not low <= value <= high:
        raise invalid_parameter(name, f"{name}={value} is out of range. Send {low} to {high}.")
    return value


def time_parameter(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return parse_time(raw)
    except QuerySyntaxError as error:
        raise invalid_parameter(name, f"{name}: {error.reason}.") from None


async def search_sessions(request: web.Request) -> web.Response:
    claims = require_agent(request)
    settings = request.app[RUNTIME].settings
    project_id = request.query.get("projectId", "")
    if not project_id:
        raise invalid_parameter("projectId", "The projectId parameter is missing: add ?projectId=<project>.")
    subjects.token(project_id, what="project id")
    require_project(claims, project_id)

    text = request.query.get("q", "").strip()
    from_ms = time_parameter(request, "from")
    to_ms = time_parameter(request, "to")
    sort = request.query.get("sort", "startedAt")
    if sort not in SORT_COLUMNS:
        raise invalid_parameter("sort", f"sort={sort[:32]!r} is not supported. Use one of {', '.join(SORT_COLUMNS)}.")
    order = request.query.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise invalid_parameter("order", f"order={order[:32]!r} is not supported. Use asc or desc.")
    page = int_parameter(request, "page", 1, low=1, high=100_000)
    limit = int_parameter(
        request, "limit", min(DEFAULT_SEARCH_LIMIT, settings.search_max_limit), low=1, high=settings.search_max_limit
    )

    try:
        tree = parse(text) if text else None
        max_duration_ms = int(settings.session_max_duration_seconds * 1000)
        compiled = compile_query(
            tree, event_time_from_ms=from_ms, event_time_to_ms=to_ms + max_duration_ms if to_ms is not None else None
        )
    except QuerySyntaxError as error:
        raise ProtocolError(
            code="invalid_query",
            message=f"The query is invalid at position {error.position}: {error.reason}. See docs/SEARCH.md.",
            details={"position": error.position, "reason": error.reason},
        ) from None

    result = await reader_of(request).search(
        project_id=project_id,
        compiled=compiled,
        from_ms=from_ms,
        to_ms=to_ms,
        sort=sort,
        descending=order == "desc",
        offset=(page - 1) * limit,
        limit=limit,
    )
    return json_response({"sessions": result.sessions, "total": result.total, "page": page, "limit": limit})


async def session_of_request(request: web.Request) -> dict:
    claims = require_agent(request)
    session_id = subjects.token(request.match_info["session_id"], what="session id")
    session = await reader_of(request).session(session_id)
    requested_project = request.query.get("projectId")
    if session is None or (requested_project and session["projectId"] != requested_project):
        raise ProtocolError(
            code="session_not_found",
            message=f"No recorded session {session_id!r}. It may not be stored yet: try again in a few seconds.",
            status=404,
        )
    require_project(claims, session["projectId"])
    return session


async def get_session(request: web.Request) -> web.Response:
    session = await session_of_request(request)
    markers = await reader_of(request).markers(session["projectId"], session["sessionId"])
    return json_response({"session": session, "markers": markers})


def parse_cursor(raw: str | None) -> ChunkKey | None:
    """Cursors are `<seq>.<tab id>`, as the previous page's `next` returned them."""
    if not raw:
        return None
    seq, _, tab_id = raw.partition(".")
    try:
        subjects.token(tab_id, what="tab id")
        return ChunkKey(seq=int(seq), tab_id=tab_id)
    except (ValueError, ProtocolError):
        raise invalid_parameter(
            "after", f"after={raw[:64]!r} is not a cursor. Pass the 'next' value of the previous page."
        ) from None


def format_cursor(key: ChunkKey | None) -> str | None:
    return f"{key.seq}.{key.tab_id}" if key is not None else None


def join_arrays(arrays: list[bytes]) -> bytes:
    """Join JSON arrays into the items of one array, without parsing them: `[a,b]`, `[c]` give `a,b,c`."""
    return b",".join(inner for array in arrays if (inner := array.strip()[1:-1].strip()))


async def session_events(request: web.Request) -> web.Response:
    session = await session_of_request(request)
    settings = request.app[RUNTIME].settings
    limit = int_parameter(request, "limit", settings.events_page_events, low=1, high=settings.events_page_max_events)
    after = parse_cursor(request.query.get("after"))
    page = await reader_of(request).events_page(
        session["projectId"], session["sessionId"], after=after, max_events=limit
    )
    cursor = format_cursor(page.next_cursor)
    body = b"".join(
        [
            b'{"sessionId":"', session["sessionId"].encode(), b'","events":[', join_arrays(page.events_json),
            b'],"count":', str(page.event_count).encode(),
            b',"next":', (f'"{cursor}"' if cursor else "null").encode(), b"}",
        ]
    )  # fmt: skip
    return web.Response(body=body, content_type="application/json")


async def export_session(request: web.Request) -> web.StreamResponse:
    """Stream the whole recording as one JSON array of rrweb events, which any rrweb player accepts.

    Events that the tracker sent as `tandem.part` events are rebuilt; a group that misses a part is left out.
    """
    session = await session_of_request(request)
    reader = reader_of(request)
    # The index is read before the response starts, so that a store failure still gets a JSON error.
    keys, _, _ = await reader.chunk_index(session["projectId"], session["sessionId"], after=None, max_events=None)
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json",
            "Content-Disposition": f'attachment; filename="session-{session["sessionId"]}.json"',
        }
    )
    await response.prepare(request)
    await response.write(b"[")
    first = True
    joiners: dict[str, PartJoiner] = {}
    chunks = reader.chunks_json(session["projectId"], session["sessionId"], keys)
    async for key, array in _with_keys(keys, chunks):
        if PART_MARKER in array:
            array = rebuild_parts(array, joiners.setdefault(key.tab_id, PartJoiner()))
        inner = join_arrays([array])
        if not inner:
            continue
        await response.write(inner if first else b"," + inner)
        first = False
    await response.write(b"]")
    await response.write_eof()
    return response


async def _with_keys(keys: list[ChunkKey], chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[ChunkKey, bytes]]:
    """Pair each chunk with its key: `chunks_json` yields one chunk per key, in the order of `keys`."""
    index = 0
    async for chunk in chunks:
        yield keys[index], chunk
        index += 1


def rebuild_parts(array: bytes, joiner: PartJoiner) -> bytes:
    """Replace the `tandem.part` events of a chunk with the events they carry, once their last part is in.

    The export is a file for any rrweb player, and rrweb players do not handle parts. A split event's parts
    come in consecutive chunks of one tab, so `joiner` carries a begun group to the next chunk.
    """
    return orjson.dumps(joiner.join(orjson.loads(array)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/sessions", search_sessions)
    app.router.add_get("/v1/sessions/{session_id}", get_session)
    app.router.add_get("/v1/sessions/{session_id}/events", session_events)
    app.router.add_get("/v1/sessions/{session_id}/export", export_session)
