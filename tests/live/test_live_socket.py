"""The agents' WebSocket against a real nats-server: authentication, the live list, and watching sessions."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import WSMsgType, web
from tandem_live.app import create_app as create_live
from tandem_live.settings import LiveSettings
from tandem_runtime import bus
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY, listen
from tests.ingest.test_ingest_api import META, SNAPSHOT, post_batch, start_session


async def connect_agent(http, ws_url, token):
    ws = await http.ws_connect(ws_url)
    await ws.send_json({"type": "auth", "token": token})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def next_of_type(ws, kind, timeout=5.0):
    """Return the next frame of `kind`, skipping others (list updates arrive at any time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no {kind!r} frame within {timeout} s")
        frame = await ws.receive_json(timeout=remaining)
        if frame["type"] == kind:
            return frame


def page(seq, text):
    """A batch that starts a page whose body text is `text`."""
    meta = {**META, "timestamp": 10 * seq + 1}
    snapshot = {**SNAPSHOT, "timestamp": 10 * seq + 2, "data": {**SNAPSHOT["data"], "text": text}}
    return {"tabId": "tab-1", "seq": seq, "events": [meta, snapshot]}


def change(seq, text):
    return {
        "tabId": "tab-1",
        "seq": seq,
        "events": [{"type": 3, "timestamp": 10 * seq + 3, "data": {"source": 0, "text": text}}],
    }


async def test_socket_requires_auth(tandem, http):
    ws = await http.ws_connect(tandem.ws_url)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    frame = await ws.receive_json(timeout=5)
    assert frame["type"] == "error"
    assert frame["code"] == "auth_required"
    closing = await ws.receive(timeout=5)
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
    assert ws.close_code == 1008


async def test_socket_rejects_session_token(tandem, http):
    started = await start_session(tandem, http)
    ws = await http.ws_connect(tandem.ws_url)
    await ws.send_json({"type": "auth", "token": started["token"]})
    frame = await ws.receive_json(timeout=5)
    assert frame["code"] == "invalid_token"


async def test_list_shows_new_session(tandem, http):
    ws = await connect_agent(http, tandem.ws_url, await tandem.agent_token(http))
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    snapshot = await next_of_type(ws, "list.snapshot")
    assert snapshot["sessions"] == []
    started = await start_session(tandem, http, user_id="bob")
    upsert = await next_of_type(ws, "list.upsert")
    assert upsert["session"]["sessionId"] == started["sessionID"]
    assert upsert["session"]["userId"] == "bob"
    assert upsert["session"]["browser"] == "Chrome"
    assert upsert["session"]["os"] == "Linux"


async def test_list_forbids_other_project(tandem, http):
    signer = TokenSigner(secret_key=SECRET_KEY)
    token, _ = signer.sign_agent(agent_id="a1", name="a1", role="agent", projects=["other"], ttl_seconds=60)
    ws = await connect_agent(http, tandem.ws_url, token)
    await ws.send_json({"type": "list.subscribe", "projectId": "demo"})
    frame = await next_of_type(ws, "error")
    assert frame["code"] == "forbidden"


async def test_watch_unknown_session(tandem, http):
    ws = await connect_agent(http, tandem.ws_url, await tandem.agent_token(http))
    await ws.send_json({"type": "watch", "sessionId": "nosuchsession"})
    frame = await next_of_type(ws, "error")
    assert frame["code"] == "session_not_found"


async def test_watch_starts_at_latest_page(tandem, http):
    started = await start_session(tandem, http)
    for body in (page(0, "first page"), change(1, "typed"), page(2, "second page"), change(3, "clicked")):
        status, _, _ = await post_batch(tandem, http, started["token"], body)
        assert status == 200
    await asyncio.sleep(0.2)  # the live pod's registry mirror follows the bucket asynchronously
    ws = await connect_agent(http, tandem.ws_url, await tandem.agent_token(http))
    await ws.send_json({"type": "watch", "sessionId": started["sessionID"]})
    await next_of_type(ws, "watch.started")
    first = await next_of_type(ws, "events")
    assert first["seq"] == 2
    assert first["events"][1]["data"]["text"] == "second page"
    second = await next_of_type(ws, "events")
    assert second["seq"] == 3
    status, _, _ = await post_batch(tandem, http, started["token"], change(4, "live"))
    assert status == 200
    live = await next_of_type(ws, "events")
    assert live["seq"] == 4
    assert live["events"][0]["data"]["text"] == "live"


async def test_two_live_pods_serve_one_session(tandem, http):
    """A second live process on the same bus streams the same session to its own agent."""
    nc = await bus.connect(tandem.nats_url, name="second-live-pod")
    second_pod = create_live(settings=LiveSettings(), nc=nc, signer=TokenSigner(secret_key=SECRET_KEY))
    root = web.Application()
    root.add_subapp("/live", second_pod)
    runner = web.AppRunner(root)
    await runner.setup()
    port = await listen(runner)
    try:
        started = await start_session(tandem, http)
        await post_batch(tandem, http, started["token"], page(0, "shop"))
        await asyncio.sleep(0.3)
        token = await tandem.agent_token(http)
        agents = [
            await connect_agent(http, tandem.ws_url, token),
            await connect_agent(http, f"ws://127.0.0.1:{port}/live/v1/ws", token),
        ]
        for ws in agents:
            await ws.send_json({"type": "watch", "sessionId": started["sessionID"]})
            assert (await next_of_type(ws, "events"))["seq"] == 0
        await post_batch(tandem, http, started["token"], change(1, "added to cart"))
        for ws in agents:
            frame = await next_of_type(ws, "events")
            assert frame["seq"] == 1
            assert frame["events"][0]["data"]["text"] == "added to cart"
    finally:
        await runner.cleanup()
        await nc.drain()


@pytest.mark.parametrize("message", [{"type": "dance"}, {"type": "watch"}, {"nope": 1}])
async def test_bad_message_keeps_socket(tandem, http, message):
    ws = await connect_agent(http, tandem.ws_url, await tandem.agent_token(http))
    await ws.send_json(message)
    error = await next_of_type(ws, "error")
    assert error["code"] in ("unknown_message", "invalid_request")
    await ws.send_json({"type": "ping"})
    assert (await next_of_type(ws, "pong"))["serverTime"] > 0
