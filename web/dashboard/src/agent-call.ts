// The agent's side of a call: one RTCPeerConnection to the user's page, which
// the agent offers. A reload of the user's page (a new page generation) needs a
// new peer connection; a network change is handled with an ICE restart.
import { addCandidate } from "../../assist/src/call";
import type { CallLeg, ServerFrame } from "../../assist/src/protocol";

type Send = (frame: Record<string, unknown>) => void;

export class AgentCall {
  private pc: RTCPeerConnection | null = null;
  private generation = -1;
  private described = false;
  private pending: Array<RTCIceCandidateInit | null> = [];
  private restarting = false;

  constructor(
    readonly callId: string,
    private readonly stream: MediaStream | null,
    private readonly send: Send,
    private readonly rtcConfig: RTCConfiguration,
    private readonly remoteVideo: HTMLVideoElement,
  ) {}

  /** Builds the peer connection and sends the offer when the leg waits for one (a new call or a reloaded page). */
  async sync(leg: CallLeg): Promise<void> {
    if (leg.state !== "waiting" || leg.generation === this.generation) return;
    this.generation = leg.generation;
    this.pc?.close();
    const pc = new RTCPeerConnection(this.rtcConfig);
    this.pc = pc;
    this.described = false;
    this.pending = [];
    if (this.stream) for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
    else {
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    pc.addEventListener("track", (event) => {
      this.remoteVideo.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    });
    pc.addEventListener("icecandidate", (event) => {
      this.send({ type: "call.ice", callId: this.callId, candidate: event.candidate ? event.candidate.toJSON() : null });
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc === this.pc && pc.iceConnectionState === "failed") void this.restartIce();
    });
    await this.offer(false);
  }

  async handle(frame: ServerFrame): Promise<void> {
    const pc = this.pc;
    if (!pc) return;
    if (frame.type === "call.answer" && frame.callId === this.callId) {
      await pc.setRemoteDescription({ type: "answer", sdp: frame.sdp });
      this.described = true;
      for (const candidate of this.pending.splice(0)) await addCandidate(pc, candidate);
    } else if (frame.type === "call.ice" && frame.callId === this.callId) {
      if (!this.described) this.pending.push(frame.candidate);
      else await addCandidate(pc, frame.candidate);
    }
  }

  /**
   * Restarts ICE on the same peer connection: after the connection failed, for example when the
   * network changed, or when the agent presses Reconnect. Does nothing while an offer waits for
   * its answer, so a second click cannot send an offer that crosses the first one's answer.
   */
  async restartIce(): Promise<void> {
    if (this.restarting || !this.pc || this.pc.signalingState !== "stable") return;
    this.restarting = true;
    try {
      await this.offer(true);
    } finally {
      this.restarting = false;
    }
  }

  get connection(): RTCPeerConnection | null {
    return this.pc;
  }

  close(): void {
    this.pc?.close();
    this.pc = null;
    this.remoteVideo.srcObject = null;
  }

  private async offer(iceRestart: boolean): Promise<void> {
    const pc = this.pc;
    if (!pc) return;
    const offer = await pc.createOffer({ iceRestart });
    await pc.setLocalDescription(offer);
    this.described = false;
    this.send({
      type: "call.offer",
      callId: this.callId,
      generation: this.generation,
      sdp: pc.localDescription?.sdp ?? offer.sdp,
    });
  }
}
