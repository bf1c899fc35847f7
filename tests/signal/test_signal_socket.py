"""The Assist WebSocket against the all-in-one server: auth, consent, calls, control and invalid frames."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import orjson
from tandem_protocol import subjects

from tests.signal.conftest import CONSENT_TIMEOUT_SECONDS, TURN_SECRET, login
from tests.signal.peers import SignalClient, grant, session_token

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", "sdpMid": "0", "sdpMLineIndex": 0}


async def metric(http, tandem, line_start: str) -> float:
    async with http.get(f"{tandem.url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return 0.0


async def test_auth_rejects_bad_token(assist, http):
    client = await SignalClient.connect(http, assist, {"token": "not-a-token"})
    frame = await client.next("error")
    assert frame["code"] == "invalid_token"
    await asyncio.sleep(0.1)
    assert client.ws.closed
    assert client.ws.close_code == 1008


async def test_tracker_limited_to_own_room(assist, http):
    auth = {"token": session_token("sess-a"), "projectId": "demo", "sessionId": "sess-b"}
    client = await SignalClient.connect(http, assist, auth)
    frame = await client.next("error")
    assert frame["code"] == "forbidden"
    assert "own session" in frame["message"]
    assert not client.hello


async def test_viewer_may_not_call(assist, http):
    user = await SignalClient.user(http, assist, "sess-viewer")
    viewer = await SignalClient.agent(http, assist, "sess-viewer", await login(assist, http, "vera", "viewer"))
    for kind in ("call.request", "control.request"):
        await viewer.send({"type": kind})
        error = await viewer.error("forbidden")
        assert "viewer" in error["message"]
    assert not [f for f in user.frames if f["type"] == "room.state" and f["state"]["requests"]]


async def test_hello_has_turn_credentials(assist, http):
    user = await SignalClient.user(http, assist, "sess-turn")
    (server,) = user.hello["iceServers"]
    assert server["urls"] == ["turn:127.0.0.1:3478?transport=udp"]
    expiry, _, peer = server["username"].partition(":")
    assert peer == user.peer_id
    assert int(expiry) > 0
    expected = hmac.new(TURN_SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == expected


async def test_call_accepted_with_events(assist, http):
    events = []

    async def keep(msg) -> None:
        events.append(orjson.loads(msg.data))

    subscription = await assist.nc.subscribe(subjects.assist_events(), cb=keep)
    calls_before = await metric(http, assist, "tandem_signal_calls_total")
    accepted_before = await metric(http, assist, 'tandem_signal_consent_total{kind="call",outcome="accepted"}')

    user = await SignalClient.user(http, assist, "sess-call")
    agent = await SignalClient.agent(http, assist, "sess-call", await assist.agent_token(http))
    state = await grant(user, agent, "call")
    leg = state["call"]["legs"][agent.peer_id]
    assert leg["state"] == "waiting"
    assert leg["agentName"] == "admin"

    await agent.send({"type": "call.end", "callId": state["call"]["callId"]})
    ended = await user.next("call.ended")
    assert ended["reason"] == "agent"
    await asyncio.sleep(0.2)
    await subscription.unsubscribe()

    kinds = [event["kind"] for event in events]
    assert kinds == ["consent.requested", "consent.answered", "call.started", "call.joined", "call.left", "call.ended"]
    assert events[1]["outcome"] == "accepted"
    assert {event["sessionId"] for event in events} == {"sess-call"}
    assert await metric(http, assist, "tandem_signal_calls_total") == calls_before + 1
    accepted = await metric(http, assist, 'tandem_signal_consent_total{kind="call",outcome="accepted"}')
    assert accepted == accepted_before + 1


async def test_call_declined_reported(assist, http):
    user = await SignalClient.user(http, assist, "sess-decline")
    agent = await SignalClient.agent(http, assist, "sess-decline", await assist.agent_token(http))
    await agent.send({"type": "call.request"})
    state = await user.state(lambda s: bool(s["requests"]))
    await user.send({"type": "consent.answer", "requestId": state["requests"][0]["requestId"], "accepted": False})
    result = await agent.next("consent.result")
    assert result["outcome"] == "declined"
    final = await agent.state(lambda s: not s["requests"])
    assert final["call"] is None


async def test_call_unanswered_times_out(assist, http):
    user = await SignalClient.user(http, assist, "sess-timeout")
    agent = await SignalClient.agent(http, assist, "sess-timeout", await assist.agent_token(http))
    await agent.send({"type": "call.request"})
    await user.state(lambda s: bool(s["requests"]))
    result = await agent.next("consent.result", timeout=CONSENT_TIMEOUT_SECONDS + 3)
    assert result["outcome"] == "timeout"
    state = await user.state(lambda s: not s["requests"])
    assert state["call"] is None
    # A late answer finds nothing to answer.
    await user.send({"type": "consent.answer", "requestId": result["requestId"], "accepted": True})
    error = await user.error("unknown_request")
    assert result["requestId"] in error["message"]


async def test_invalid_frames_rejected_calls_unaffected(assist, http):
    token = await assist.agent_token(http)
    user_a = await SignalClient.user(http, assist, "sess-a")
    agent_a = await SignalClient.agent(http, assist, "sess-a", token)
    call_a = (await grant(user_a, agent_a, "call"))["call"]["callId"]

    user_b = await SignalClient.user(http, assist, "sess-b")
    agent_b = await SignalClient.agent(http, assist, "sess-b", token)
    call_b = (await grant(user_b, agent_b, "call"))["call"]["callId"]

    # An answer without an offer.
    await user_b.send({"type": "call.answer", "callId": call_b, "peerId": agent_b.peer_id, "sdp": OFFER})
    error = await user_b.error("no_offer")
    assert "'waiting'" in error["message"]
    assert error["inReplyTo"] == "call.answer"
    assert call_b in error["details"]["call"]
    # Candidates for an unknown call.
    await agent_b.send({"type": "call.ice", "callId": "nosuchcall", "candidate": CANDIDATE})
    error = await agent_b.error("unknown_call")
    assert "'nosuchcall'" in error["message"]
    assert call_b in error["message"]
    # A control event without a grant.
    await agent_b.send({"type": "control.event", "event": {"kind": "click", "x": 10, "y": 10}})
    error = await agent_b.error("control_not_granted")
    assert "nobody controls the page" in error["message"]
    # A frame of the wrong shape.
    await agent_b.send({"type": "call.offer", "callId": call_b})
    error = await agent_b.error("invalid_request")
    assert "sdp" in error["message"]

    # Room B's call still negotiates, and so does room A's.
    for user, agent, call_id in ((user_a, agent_a, call_a), (user_b, agent_b, call_b)):
        generation = user.hello["state"]["user"]["generation"]
        await agent.send({"type": "call.offer", "callId": call_id, "generation": generation, "sdp": OFFER})
        offer = await user.next("call.offer")
        assert offer["peerId"] == agent.peer_id
        await agent.send({"type": "call.ice", "callId": call_id, "candidate": CANDIDATE})
        candidate = await user.next("call.ice")
        assert candidate["candidate"]["candidate"] == CANDIDATE["candidate"]
        await user.send({"type": "call.answer", "callId": call_id, "peerId": agent.peer_id, "sdp": OFFER + "a=x\r\n"})
        answer = await agent.next("call.answer")
        assert answer["sdp"].endswith("a=x\r\n")
        await user.send({"type": "call.ice", "callId": call_id, "peerId": agent.peer_id, "candidate": None})
        end_of_candidates = await agent.next("call.ice")
        assert end_of_candidates["candidate"] is None
    assert not [f for f in user_a.frames + agent_a.frames if f["type"] == "error"]


async def test_second_agent_told_busy(assist, http):
    user = await SignalClient.user(http, assist, "sess-busy")
    first = await SignalClient.agent(http, assist, "sess-busy", await assist.agent_token(http))
    second = await SignalClient.agent(http, assist, "sess-busy", await login(assist, http, "bob", "agent"))
    await grant(user, first, "control")
    await second.send({"type": "control.request"})
    error = await second.error("control_busy")
    assert "'admin' controls the page" in error["message"]

    # The holder's events reach the user, and the other agent's do not.
    await second.send({"type": "control.event", "event": {"kind": "click", "x": 1, "y": 2}})
    await second.error("control_not_granted")
    await first.send({"type": "control.event", "event": {"kind": "click", "x": 3, "y": 4, "nodeId": 7}})
    event = await user.next("control.event")
    assert event["agentName"] == "admin"
    assert event["event"] == {"kind": "click", "x": 3, "y": 4, "nodeId": 7, "dx": 0, "dy": 0}
    assert not [f for f in user.frames if f["type"] == "control.event"]


async def test_user_ends_control(assist, http):
    user = await SignalClient.user(http, assist, "sess-end")
    agent = await SignalClient.agent(http, assist, "sess-end", await assist.agent_token(http))
    await grant(user, agent, "control")
    await user.send({"type": "control.end"})
    ended = await agent.next("control.ended")
    assert ended["reason"] == "user"
    await agent.send({"type": "control.event", "event": {"kind": "click", "x": 1, "y": 1}})
    await agent.error("control_not_granted")
    # The agent may ask again, and release.
    await grant(user, agent, "control")
    await agent.send({"type": "control.release"})
    await user.next("control.ended", lambda f: f["reason"] == "agent")


async def test_reload_keeps_call_and_control(assist, http):
    user = await SignalClient.user(http, assist, "sess-reload")
    agent = await SignalClient.agent(http, assist, "sess-reload", await assist.agent_token(http))
    await grant(user, agent, "control")
    call_id = (await grant(user, agent, "call"))["call"]["callId"]
    old_generation = user.hello["state"]["user"]["generation"]

    await user.close()
    reloaded = await SignalClient.user(http, assist, "sess-reload")
    state = reloaded.hello["state"]
    assert state["control"]["peerId"] == agent.peer_id
    assert state["call"]["callId"] == call_id
    assert state["user"]["generation"] == old_generation + 1
    assert state["call"]["legs"][agent.peer_id]["generation"] == old_generation + 1

    # An offer for the page before the reload is stale; one for the new page goes through.
    await agent.send({"type": "call.offer", "callId": call_id, "generation": old_generation, "sdp": OFFER})
    await agent.error("stale_offer")
    await agent.send({"type": "call.offer", "callId": call_id, "generation": old_generation + 1, "sdp": OFFER})
    assert (await reloaded.next("call.offer"))["generation"] == old_generation + 1


async def test_page_gone_ends_call(assist, http):
    user = await SignalClient.user(http, assist, "sess-gone")
    agent = await SignalClient.agent(http, assist, "sess-gone", await assist.agent_token(http))
    await grant(user, agent, "call")
    await grant(user, agent, "control")
    await user.close()
    await agent.next("call.ended", timeout=8)
    state = await agent.state(lambda s: not s["user"]["connected"] and s["call"] is None, timeout=8)
    assert state["control"] is None
    assert state["user"]["leftAt"] is not None


async def test_call_with_two_agents(assist, http):
    user = await SignalClient.user(http, assist, "sess-two")
    first = await SignalClient.agent(http, assist, "sess-two", await assist.agent_token(http))
    second = await SignalClient.agent(http, assist, "sess-two", await login(assist, http, "carol", "agent"))
    call_id = (await grant(user, first, "call"))["call"]["callId"]
    state = await grant(user, second, "call")
    assert state["call"]["callId"] == call_id
    assert set(state["call"]["legs"]) == {first.peer_id, second.peer_id}

    # One agent hangs up and the other stays in the call.
    await first.send({"type": "call.end", "callId": call_id})
    state = await second.state(lambda s: bool(s["call"]) and first.peer_id not in s["call"]["legs"])
    assert list(state["call"]["legs"]) == [second.peer_id]
    assert not [f for f in second.frames if f["type"] == "call.ended"]

    # The user ends the call for everyone.
    await user.send({"type": "call.end", "callId": call_id})
    ended = await second.next("call.ended")
    assert ended["reason"] == "user"
