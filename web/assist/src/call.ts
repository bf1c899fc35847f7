// The user's side of a call: the microphone and camera, and one RTCPeerConnection
// per agent. Agents offer and the user answers. Candidates trickle both ways.
// NOTE: with several agents the call is a star around the user, so agents hear
// and see the user but not each other.
import type { Call, ServerFrame } from "./protocol";
import { type AssistLayer, el } from "./ui";

type Send = (frame: Record<string, unknown>) => void;

interface Leg {
  pc: RTCPeerConnection;
  generation: number;
  /** Candidates that arrived before the offer was applied. */
  pending: Array<RTCIceCandidateInit | null>;
  described: boolean;
  video: HTMLVideoElement;
}

export class UserCall {
  readonly callId: string;
  private readonly legs = new Map<string, Leg>();
  private readonly media: Promise<MediaStream | null>;
  private readonly panel: HTMLElement;
  private readonly remotes: HTMLElement;
  private readonly muteButton: HTMLButtonElement;
  private readonly cameraButton: HTMLButtonElement;
  private audio = true;
  private video = true;
  private closed = false;

  constructor(
    call: Call,
    layer: AssistLayer,
    private readonly send: Send,
    private readonly rtcConfig: () => RTCConfiguration,
    onEnd: () => void,
  ) {
    this.callId = call.callId;
    this.media = navigator.mediaDevices
      .getUserMedia({ audio: true, video: true })
      .catch(() => navigator.mediaDevices.getUserMedia({ audio: true }))
      .catch((error: unknown) => {
        console.warn("[tandem assist] No microphone or camera; the call only receives.", error);
        return null;
      });

    const local = el("video", { class: "local", "data-testid": "assist-local-video" });
    local.muted = true;
    local.autoplay = true;
    local.playsInline = true;
    void this.media.then((stream) => {
      if (stream) local.srcObject = stream;
    });
    this.remotes = el("div", {});
    this.muteButton = el("button", { "data-testid": "assist-mute" }, "Mute");
    this.cameraButton = el("button", { "data-testid": "assist-camera" }, "Camera off");
    const endButton = el("button", { class: "danger", "data-testid": "assist-end-call" }, "End call");
    this.muteButton.addEventListener("click", () => this.toggle("audio"));
    this.cameraButton.addEventListener("click", () => this.toggle("video"));
    endButton.addEventListener("click", () => {
      this.send({ type: "call.end", callId: this.callId });
      onEnd();
    });
    this.panel = el(
      "div",
      { class: "call", "data-testid": "assist-call" },
      this.remotes,
      local,
      el("div", { class: "row" }, this.muteButton, this.cameraButton, endButton),
    );
    layer.mount();
    layer.layer.append(this.panel);
  }

  /** Closes the legs of agents that left the call. */
  sync(call: Call): void {
    for (const peerId of [...this.legs.keys()]) {
      if (!(peerId in call.legs)) this.closeLeg(peerId);
    }
  }

  async handle(frame: ServerFrame): Promise<void> {
    if (frame.type === "call.offer" && frame.callId === this.callId) {
      await this.answer(frame.peerId, frame.generation, frame.sdp);
    } else if (frame.type === "call.ice" && frame.callId === this.callId && frame.peerId) {
      const leg = this.legs.get(frame.peerId);
      if (!leg) return;
      if (!leg.described) leg.pending.push(frame.candidate);
      else await addCandidate(leg.pc, frame.candidate);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const peerId of [...this.legs.keys()]) this.closeLeg(peerId);
    void this.media.then((stream) => stream?.getTracks().forEach((track) => track.stop()));
    this.panel.remove();
  }

  private async answer(peerId: string, generation: number, sdp: string): Promise<void> {
    const stream = await this.media;
    if (this.closed) return;
    let leg = this.legs.get(peerId);
    if (leg && leg.generation !== generation) {
      this.closeLeg(peerId);
      leg = undefined;
    }
    if (!leg) leg = this.openLeg(peerId, generation, stream);

    await leg.pc.setRemoteDescription({ type: "offer", sdp });
    leg.described = true;
    for (const candidate of leg.pending.splice(0)) await addCandidate(leg.pc, candidate);
    const answer = await leg.pc.createAnswer();
    await leg.pc.setLocalDescription(answer);
    this.send({ type: "call.answer", callId: this.callId, peerId, sdp: leg.pc.localDescription?.sdp ?? answer.sdp });
  }

  private openLeg(peerId: string, generation: number, stream: MediaStream | null): Leg {
    const pc = new RTCPeerConnection(this.rtcConfig());
    if (stream) for (const track of stream.getTracks()) pc.addTrack(track, stream);
    const video = el("video", { "data-testid": "assist-remote-video", "data-peer-id": peerId });
    video.autoplay = true;
    video.playsInline = true;
    this.remotes.append(video);
    pc.addEventListener("track", (event) => {
      video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    });
    pc.addEventListener("icecandidate", (event) => {
      this.send({ type: "call.ice", callId: this.callId, peerId, candidate: event.candidate ? event.candidate.toJSON() : null });
    });
    const leg: Leg = { pc, generation, pending: [], described: false, video };
    this.legs.set(peerId, leg);
    return leg;
  }

  private closeLeg(peerId: string): void {
    const leg = this.legs.get(peerId);
    if (!leg) return;
    this.legs.delete(peerId);
    leg.pc.close();
    leg.video.remove();
  }

  private toggle(kind: "audio" | "video"): void {
    if (kind === "audio") this.audio = !this.audio;
    else this.video = !this.video;
    void this.media.then((stream) => {
      const tracks = kind === "audio" ? stream?.getAudioTracks() : stream?.getVideoTracks();
      for (const track of tracks ?? []) track.enabled = kind === "audio" ? this.audio : this.video;
    });
    this.muteButton.textContent = this.audio ? "Mute" : "Unmute";
    this.cameraButton.textContent = this.video ? "Camera off" : "Camera on";
    this.send({ type: "call.media", callId: this.callId, audio: this.audio, video: this.video });
  }
}

/** Adds a trickled candidate; null or an empty candidate is the end of candidates. */
export async function addCandidate(pc: RTCPeerConnection, candidate: RTCIceCandidateInit | null): Promise<void> {
  try {
    if (candidate === null || !candidate.candidate) await pc.addIceCandidate();
    else await pc.addIceCandidate(candidate);
  } catch (error) {
    console.warn("[tandem assist] An ICE candidate was not added.", error);
  }
}
