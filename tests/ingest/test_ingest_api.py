"""The tracker's HTTP API against a real nats-server: sessions, batches onto the bus, and every bad input."""

from __future__ import annotations

import orjson
import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from tandem_protocol import EventBatch, decode, subjects
from tandem_runtime.tokens import TokenSigner

from tests.conftest import SECRET_KEY

CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
META = {"type": 4, "timestamp": 1, "data": {"href": "http://shop.test/", "width": 800, "height": 600}}
SNAPSHOT = {
    "type": 2,
    "timestamp": 2,
    "data": {"node": {"type": 0, "childNodes": [], "id": 1}, "initialOffset": {"top": 0, "left": 0}},
}


async def start_session(tandem, http, *, tab_id="tab-1", token=None, user_id="alice"):
    body = {"projectKey": "demo-key", "tabId": tab_id, "userID": user_id, "url": "http://shop.test/", "token": token}
    async with http.post(f"{tandem.url}/ingest/v1/web/start", json=body, headers={"User-Agent": CHROME_UA}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def post_batch(tandem, http, token, body, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(
        f"{tandem.url}/ingest/v1/web/i", data=data, headers={**headers, "Content-Type": "application/json"}, **kwargs
    ) as response:
        return response.status, await response.json(), response.headers


async def stream_batches(tandem, session_id):
    js = tandem.nc.jetstream()
    sub = await js.pull_subscribe(
        subjects.events_of_session(session_id), config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
    )
    try:
        messages = await sub.fetch(100, timeout=2)
    except NatsTimeoutError:
        messages = []
    finally:
        await sub.unsubscribe()
    return [decode(EventBatch, message.data) for message in messages]


async def test_start_returns_signed_session(tandem, http):
    started = await start_session(tandem, http)
    claims = TokenSigner(secret_key=SECRET_KEY).verify_session(started["token"])
    assert claims.session_id == started["sessionID"]
    assert claims.project_id == "demo"
    assert started["resumed"] is False


async def test_start_resumes_with_previous_token(tandem, http):
    first = await start_session(tandem, http)
    second = await start_session(tandem, http, token=first["token"])
    assert second["sessionID"] == first["sessionID"]
    assert second["resumed"] is True


async def test_start_other_tab_gets_new_session(tandem, http):
    first = await start_session(tandem, http)
    second = await start_session(tandem, http, tab_id="tab-2", token=first["token"])
    assert second["sessionID"] != first["sessionID"]


async def test_batch_reaches_stream_once(tandem, http):
    started = await start_session(tandem, http)
    body = {"tabId": "tab-1", "sessionID": started["sessionID"], "seq": 0, "events": [META, SNAPSHOT]}
    for _ in range(2):
        status, answer, _ = await post_batch(tandem, http, started["token"], body)
        assert status == 200
        assert answer["seq"] == 0
    batches = await stream_batches(tandem, started["sessionID"])
    assert len(batches) == 1
    assert batches[0].project_id == "demo"
    assert [event.type for event in batches[0].events] == [4, 2]


async def test_heartbeat_mostly_off_stream(tandem, http):
    """Ingest accepts empty batches with 200, and puts one per session and minute on the stream."""
    started = await start_session(tandem, http)
    for seq, events in enumerate([[META, SNAPSHOT], [], [], []]):
        body = {"tabId": "tab-1", "seq": seq, "events": events}
        status, answer, _ = await post_batch(tandem, http, started["token"], body)
        assert (status, answer["seq"]) == (200, seq)
    assert [batch.seq for batch in await stream_batches(tandem, started["sessionID"])] == [0]

    silent = await start_session(tandem, http, tab_id="tab-2")
    for seq in range(3):
        status, _, _ = await post_batch(tandem, http, silent["token"], {"tabId": "tab-2", "seq": seq, "events": []})
        assert status == 200
    assert [batch.seq for batch in await stream_batches(tandem, silent["sessionID"])] == [0]


async def test_unknown_project_key(tandem, http):
    body = {"projectKey": "nope", "tabId": "tab-1"}
    async with http.post(f"{tandem.url}/ingest/v1/web/start", json=body) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "unknown_project"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b'{"tabId": "tab-1", "seq": 0, "events": [', "malformed_json", None),
        (b"[1, 2]", "invalid_request", "(body)"),
        (b'{"tabId": "tab-1", "seq": "zero", "events": []}', "invalid_request", "seq"),
        (b'{"tabId": "tab-1", "seq": 0, "events": [{"type": 3}]}', "invalid_request", "events.0.timestamp"),
        (b'{"tabId": "tab-1", "seq": 0}', "invalid_request", "events"),
    ],
)
async def test_batch_bad_body(tandem, http, body, code, field):
    started = await start_session(tandem, http)
    status, answer, _ = await post_batch(tandem, http, started["token"], body)
    assert status == 400
    assert answer["error"]["code"] == code
    if field is not None:
        assert field in [problem["field"] for problem in answer["error"]["details"]["problems"]]


def part_event(payload: dict) -> dict:
    return {"type": 5, "timestamp": 2, "data": {"tag": "tandem.part", "payload": payload}}


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "p1", "index": True, "count": 2, "data": "{"},
        {"id": "p1", "index": 2, "count": 2, "data": "{"},
        {"id": "p1", "index": 0, "count": 2},
        {"id": 7, "index": 0, "count": 2, "data": "{"},
    ],
)
async def test_batch_invalid_part(tandem, http, payload):
    """A part no joiner could use is rejected with its place, and the fixed batch is then accepted."""
    started = await start_session(tandem, http)
    page = {"type": 4, "timestamp": 1, "data": {"href": "https://shop.example.com/", "width": 800, "height": 600}}
    body = {"tabId": "tab-1", "seq": 0, "events": [page, part_event(payload)]}

    status, answer, _ = await post_batch(tandem, http, started["token"], body)
    assert status == 400
    assert answer["error"]["code"] == "invalid_request"
    assert "event 1 is a tandem.part event with an invalid payload" in answer["error"]["message"]

    body["events"][1] = part_event({"id": "p1", "index": 0, "count": 2, "data": "{"})
    status, answer, _ = await post_batch(tandem, http, started["token"], body)
    assert status == 200, answer
    batches = await stream_batches(tandem, started["sessionID"])
    assert [len(batch.events) for batch in batches] == [2]


@pytest.mark.parametrize(
    ("number", "accepted"),
    [
        (b"1" + b"0" * 400, False),
        (b"1e400", False),
        (b"18446744073709551615", True),
        (b'"order 123456789012345678901234567890"', True),
    ],
)
async def test_batch_number_range(tandem, http, number, accepted):
    """A number the store's parser cannot read gets a 400 at ingest, rather than losing the batch later."""
    started = await start_session(tandem, http)
    body = b'{"tabId": "tab-1", "seq": 0, "events": [{"type": 5, "timestamp": 1, "data": {"tag": "t", "payload": %s}}]}'
    status, answer, _ = await post_batch(tandem, http, started["token"], body % number)
    if accepted:
        assert status == 200, answer
        assert len(await stream_batches(tandem, started["sessionID"])) == 1
    else:
        assert status == 400, answer
        assert answer["error"]["code"] == "number_out_of_range"


async def test_batch_missing_token(tandem, http):
    status, answer, _ = await post_batch(tandem, http, None, {"tabId": "tab-1", "seq": 0, "events": []})
    assert status == 401
    assert answer["error"]["code"] == "missing_token"


async def test_batch_forged_token(tandem, http):
    forged = TokenSigner(secret_key="another-secret-key-0123456789abcdef").sign_session(
        session_id="s1", project_id="demo", tab_id="tab-1", started_at=0, ttl_seconds=60
    )
    status, answer, _ = await post_batch(tandem, http, forged, {"tabId": "tab-1", "seq": 0, "events": []})
    assert status == 401
    assert answer["error"]["code"] == "invalid_token"


async def test_batch_agent_token_rejected(tandem, http):
    agent_token = await tandem.agent_token(http)
    status, answer, _ = await post_batch(tandem, http, agent_token, {"tabId": "tab-1", "seq": 0, "events": []})
    assert status == 401
    assert answer["error"]["code"] == "invalid_token"


async def test_batch_token_of_other_session(tandem, http):
    mine = await start_session(tandem, http, tab_id="tab-1")
    other = await start_session(tandem, http, tab_id="tab-2")
    body = {"tabId": "tab-1", "sessionID": other["sessionID"], "seq": 0, "events": [META]}
    status, answer, _ = await post_batch(tandem, http, mine["token"], body)
    assert status == 403
    assert answer["error"]["code"] == "session_mismatch"
    body = {"tabId": "tab-2", "seq": 0, "events": [META]}
    status, answer, _ = await post_batch(tandem, http, mine["token"], body)
    assert status == 403
    assert answer["error"]["code"] == "tab_mismatch"
    assert await stream_batches(tandem, other["sessionID"]) == []


async def test_batch_body_too_large(tandem, http):
    started = await start_session(tandem, http)
    huge = {"type": 3, "timestamp": 3, "data": {"text": "x" * (1024 * 1024)}}
    status, answer, _ = await post_batch(tandem, http, started["token"], {"tabId": "tab-1", "seq": 0, "events": [huge]})
    assert status == 413
    assert answer["error"]["code"] == "body_too_large"
    assert answer["error"]["details"]["maxBytes"] > 0


async def test_bad_batch_loses_nothing_else(tandem, http):
    started = await start_session(tandem, http)
    await post_batch(tandem, http, started["token"], b"{oops")
    status, _, _ = await post_batch(
        tandem, http, started["token"], {"tabId": "tab-1", "seq": 0, "events": [META, SNAPSHOT]}
    )
    assert status == 200
    assert len(await stream_batches(tandem, started["sessionID"])) == 1


async def test_bus_down_answers_503(tandem, http, tmp_path):
    started = await start_session(tandem, http)
    js = tandem.nc.jetstream()
    await js.delete_stream(subjects.EVENTS_STREAM)
    status, answer, headers = await post_batch(
        tandem, http, started["token"], {"tabId": "tab-1", "seq": 0, "events": [META]}
    )
    assert status == 503
    assert answer["error"]["code"] == "bus_unavailable"
    assert headers["Retry-After"] == "2"


async def test_cors_preflight(tandem, http):
    headers = {"Origin": "http://shop.test", "Access-Control-Request-Method": "POST"}
    async with http.options(f"{tandem.url}/ingest/v1/web/i", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "http://shop.test"
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
