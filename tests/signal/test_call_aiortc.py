"""Two aiortc peers, one for the agent and one for the user, call each other through the signal service.

aiortc gathers its candidates before setLocalDescription returns, so they travel
in the SDP; the peers still send end-of-candidates with `call.ice`. The test runs
in a namespace with only `lo` (tests/signal/netns.py), and aioice, which never
offers loopback addresses, is told that 127.0.0.1 is the host's address.
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from tests.signal.peers import SignalClient, grant

FRAMES_EXPECTED = 10

pytestmark = pytest.mark.loopback_network


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def peer_connection() -> tuple[RTCPeerConnection, asyncio.Future[MediaStreamTrack]]:
    """A peer connection without STUN (aiortc's default names a public server) and its first remote track."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(VideoStreamTrack())
    remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
    pc.on("track", lambda track: remote.done() or remote.set_result(track))
    return pc, remote


async def receive_frames(track: MediaStreamTrack, count: int) -> list:
    return [await asyncio.wait_for(track.recv(), 10) for _ in range(count)]


async def test_aiortc_call_frames_both_ways(assist, http):
    user = await SignalClient.user(http, assist, "sess-rtc")
    agent = await SignalClient.agent(http, assist, "sess-rtc", await assist.agent_token(http))
    state = await grant(user, agent, "call")
    call_id = state["call"]["callId"]
    generation = state["call"]["legs"][agent.peer_id]["generation"]

    agent_pc, agent_remote = peer_connection()
    user_pc, user_remote = peer_connection()
    try:
        # The agent offers.
        await agent_pc.setLocalDescription(await agent_pc.createOffer())
        assert "127.0.0.1" in agent_pc.localDescription.sdp
        offer = {
            "type": "call.offer",
            "callId": call_id,
            "generation": generation,
            "sdp": agent_pc.localDescription.sdp,
        }
        await agent.send(offer)
        await agent.send({"type": "call.ice", "callId": call_id, "candidate": None})

        # The user answers.
        received = await user.next("call.offer")
        assert received["peerId"] == agent.peer_id
        await user_pc.setRemoteDescription(RTCSessionDescription(sdp=received["sdp"], type="offer"))
        end_of_candidates = await user.next("call.ice")
        assert end_of_candidates["candidate"] is None
        await user_pc.addIceCandidate(None)
        await user_pc.setLocalDescription(await user_pc.createAnswer())
        answer = {
            "type": "call.answer",
            "callId": call_id,
            "peerId": agent.peer_id,
            "sdp": user_pc.localDescription.sdp,
        }
        await user.send(answer)
        await user.send({"type": "call.ice", "callId": call_id, "peerId": agent.peer_id, "candidate": None})

        received = await agent.next("call.answer")
        await agent_pc.setRemoteDescription(RTCSessionDescription(sdp=received["sdp"], type="answer"))
        assert (await agent.next("call.ice"))["candidate"] is None
        await agent_pc.addIceCandidate(None)

        # Synthetic video arrives in both directions.
        at_agent = await receive_frames(await asyncio.wait_for(agent_remote, 10), FRAMES_EXPECTED)
        at_user = await receive_frames(await asyncio.wait_for(user_remote, 10), FRAMES_EXPECTED)
        assert all(frame.width == 640 and frame.height == 480 for frame in at_agent + at_user)
        assert at_agent[-1].pts > at_agent[0].pts
        assert at_user[-1].pts > at_user[0].pts
        state = await agent.state(
            lambda s: bool(s["call"]) and s["call"]["legs"][agent.peer_id]["state"] == "connected"
        )
        assert state["call"]["callId"] == call_id
    finally:
        await agent_pc.close()
        await user_pc.close()
