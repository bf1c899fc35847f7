"""Review finding: a batch whose gzip body cannot be decoded is a client error, not a 500."""

from __future__ import annotations

import gzip

import aiohttp
import pytest

from tests.access.conftest import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def post_batch(server: Server, token: str, body: bytes) -> tuple[int, dict]:
    """Send one batch on its own connection: the server may close the one a bad body came on."""
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/ingest/v1/web/i", data=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def test_undecodable_gzip_is_400(server: Server):
    started = await server.start("demo-key", tab_id="tab-gzip", origin=None)
    status, body = await post_batch(server, started["token"], b"this is not gzip")
    assert status == 400, body
    assert body["error"]["code"] != "internal_error"


async def test_server_still_answers_after_bad_gzip(server: Server):
    started = await server.start("demo-key", tab_id="tab-gzip-2", origin=None)
    await post_batch(server, started["token"], b"this is not gzip")
    good = gzip.compress(b'{"version": 1, "tabId": "tab-gzip-2", "seq": 0, "events": []}')
    status, body = await post_batch(server, started["token"], good)
    assert status == 200, body
