"""The live-presence message: which sessions an ingest pod heard from lately, for the live pods' timeouts.

A tracker that has nothing to send keeps its session listed with a heartbeat (an
empty batch) every 10 s. Ingest pods do not write each heartbeat to the
live-session bucket: they gather the sessions they heard from and publish one
`LivePresence` per project every second on `subjects.live_presence(project_id)`,
a core NATS subject (not stored). Each live pod moves the `lastSeenAt` of the
sessions it lists forward from it. The bucket entry itself is still refreshed
now and then (ingest's `TANDEM_REGISTRY_REFRESH_SECONDS`), so that a live pod
that starts lists every open session from the bucket alone.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from tandem_protocol.models import Identifier, VersionedModel

MAX_PRESENCE_SESSIONS = 2000
"""Sessions in one message at most: about 90 KB, well under the server's 1 MiB payload limit."""


class LivePresence(VersionedModel):
    """Sessions of one project that sent something lately, with the server time (ms) of the latest request."""

    project_id: Identifier
    last_seen: Annotated[dict[str, int], Field(max_length=MAX_PRESENCE_SESSIONS)]
