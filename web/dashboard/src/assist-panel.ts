// The live view's Assist panel: call the user, request remote control, draw,
// and the consent state at all times. It holds its own socket to the signal
// service (`/signal/v1/ws`), one per watched session.
import type { ConsentKind, RoomState, ServerFrame } from "../../assist/src/protocol";
import { SignalSocket } from "../../assist/src/socket";
import { AgentCall } from "./agent-call";
import { ControlOverlay, type ReplaySurface } from "./control-overlay";
import { h } from "./dom";

export interface AssistPanelOptions {
  sessionId: string;
  projectId: string;
  token: string;
  surface: ReplaySurface;
}

const OUTCOME_TEXT: Record<string, Record<string, string>> = {
  call: { declined: "The user declined the call.", timeout: "The user did not answer the call.", cancelled: "The call request was cancelled." },
  control: {
    declined: "The user declined remote control.",
    timeout: "The user did not answer the control request.",
    cancelled: "The control request was cancelled.",
  },
};

export class AssistPanel {
  readonly element: HTMLElement;
  private readonly socket: SignalSocket;
  private readonly overlay: ControlOverlay;
  private readonly status: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly callButton: HTMLButtonElement;
  private readonly muteButton: HTMLButtonElement;
  private readonly cameraButton: HTMLButtonElement;
  private readonly reconnectButton: HTMLButtonElement;
  private readonly controlButton: HTMLButtonElement;
  private readonly drawButton: HTMLButtonElement;
  private readonly clearButton: HTMLButtonElement;
  private readonly localVideo: HTMLVideoElement;
  private readonly remoteVideo: HTMLVideoElement;
  private peerId = "";
  private iceServers: RTCIceServer[] = [];
  private state: RoomState | null = null;
  private media: MediaStream | null = null;
  private call: AgentCall | null = null;
  private drawing = false;
  private audio = true;
  private video = true;

  constructor(options: AssistPanelOptions) {
    this.status = h("p", { class: "assist-status", "data-testid": "assist-status", role: "status" }, "Connecting to Assist…");
    this.notice = h("p", { class: "assist-notice", "data-testid": "assist-notice", role: "alert" });
    this.callButton = button("Call", "assist-call-button", () => this.toggleCall());
    this.muteButton = button("Mute", "assist-mute-button", () => this.toggleMedia("audio"));
    this.cameraButton = button("Camera off", "assist-camera-button", () => this.toggleMedia("video"));
    this.reconnectButton = button("Reconnect", "assist-reconnect-button", () =>
      this.call?.restartIce().catch((error: unknown) => console.warn("The ICE restart failed", error)),
    );
    this.reconnectButton.title = "Restart the call's connection (an ICE restart), for example when the video freezes";
    this.controlButton = button("Request control", "assist-control-button", () => this.toggleControl());
    this.drawButton = button("Draw", "assist-draw-button", () => this.toggleDrawing());
    this.clearButton = button("Clear drawing", "assist-clear-button", () => this.socket.send({ type: "annotate.clear" }));
    this.localVideo = video("assist-agent-local-video", true);
    this.remoteVideo = video("assist-agent-remote-video", false);
    this.element = h(
      "aside",
      { class: "assist-panel", "data-testid": "assist-panel" },
      h("h2", { class: "assist-title" }, "Assist"),
      this.status,
      this.notice,
      h("div", { class: "assist-videos" }, this.remoteVideo, this.localVideo),
      h("div", { class: "assist-buttons" }, this.callButton, this.muteButton, this.cameraButton, this.reconnectButton),
      h("div", { class: "assist-buttons" }, this.controlButton, this.drawButton, this.clearButton),
    );
    this.overlay = new ControlOverlay(options.surface, (frame) => this.socket.send(frame));
    this.socket = new SignalSocket({
      url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/signal/v1/ws`,
      auth: () => ({ token: options.token, projectId: options.projectId, sessionId: options.sessionId }),
      onFrame: (frame) => this.receive(frame),
      onDown: (reason) => this.showStatus(`Assist disconnected (${reason}), reconnecting…`),
    });
    this.render();
    this.socket.connect();
  }

  destroy(): void {
    this.endCallLocally();
    this.socket.close();
    this.overlay.destroy();
    this.element.remove();
  }

  private receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "hello":
        this.peerId = frame.peerId;
        this.iceServers = frame.iceServers;
        this.state = null;
        this.apply(frame.state);
        break;
      case "room.state":
        this.apply(frame.state);
        break;
      case "consent.result":
        this.showOutcome(frame.kind, frame.outcome);
        break;
      case "call.answer":
      case "call.ice":
        void this.call?.handle(frame).catch((error: unknown) => console.warn("Call signalling failed", error));
        break;
      case "call.ended":
        if (frame.reason === "user") this.showNotice("The user ended the call.");
        break;
      case "control.ended":
        if (frame.reason === "user") this.showNotice("The user took back control.");
        break;
      case "error":
        this.showNotice(frame.message);
        if (frame.inReplyTo === "call.request") this.stopMedia();
        break;
    }
  }

  private apply(state: RoomState): void {
    if (this.state && state.revision < this.state.revision) return;
    this.state = state;
    const leg = state.call?.legs[this.peerId];
    if (state.call && leg) {
      if (!this.call || this.call.callId !== state.call.callId) {
        this.call?.close();
        this.call = new AgentCall(state.call.callId, this.media, (frame) => this.socket.send(frame), { iceServers: this.iceServers }, this.remoteVideo);
      }
      void this.call.sync(leg).catch((error: unknown) => console.warn("The call offer failed", error));
    } else if (this.call) {
      this.endCallLocally();
    }
    this.overlay.setControlling(state.control?.peerId === this.peerId);
    this.render();
  }

  private async toggleCall(): Promise<void> {
    if (this.inCall() || this.pending("call")) {
      if (this.state?.call) this.socket.send({ type: "call.end", callId: this.state.call.callId });
      this.endCallLocally();
      return;
    }
    this.showNotice("");
    try {
      this.media = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      this.localVideo.srcObject = this.media;
    } catch (error) {
      this.media = null;
      this.showNotice(`No microphone or camera (${String(error)}); the call only receives.`);
    }
    this.socket.send({ type: "call.request" });
  }

  private toggleMedia(kind: "audio" | "video"): void {
    if (kind === "audio") this.audio = !this.audio;
    else this.video = !this.video;
    const tracks = kind === "audio" ? this.media?.getAudioTracks() : this.media?.getVideoTracks();
    for (const track of tracks ?? []) track.enabled = kind === "audio" ? this.audio : this.video;
    if (this.state?.call) this.socket.send({ type: "call.media", callId: this.state.call.callId, audio: this.audio, video: this.video });
    this.render();
  }

  private toggleControl(): void {
    if (this.state?.control?.peerId === this.peerId) {
      this.socket.send({ type: "control.release" });
    } else {
      this.showNotice("");
      this.socket.send({ type: "control.request" });
    }
  }

  private toggleDrawing(): void {
    this.drawing = !this.drawing;
    this.overlay.setDrawing(this.drawing);
    this.render();
  }

  private endCallLocally(): void {
    this.call?.close();
    this.call = null;
    this.stopMedia();
  }

  private stopMedia(): void {
    this.media?.getTracks().forEach((track) => track.stop());
    this.media = null;
    this.localVideo.srcObject = null;
  }

  private inCall(): boolean {
    return Boolean(this.state?.call?.legs[this.peerId]);
  }

  private pending(kind: ConsentKind): boolean {
    return Boolean(this.state?.requests.some((request) => request.kind === kind && request.peerId === this.peerId));
  }

  private showOutcome(kind: ConsentKind, outcome: string): void {
    const text = OUTCOME_TEXT[kind]?.[outcome];
    if (text) this.showNotice(text);
    if (kind === "call" && outcome !== "accepted") this.stopMedia();
  }

  private showNotice(text: string): void {
    this.notice.textContent = text;
    this.notice.hidden = text === "";
  }

  private showStatus(text: string): void {
    this.status.textContent = text;
  }

  private render(): void {
    const state = this.state;
    const controlling = state?.control?.peerId === this.peerId;
    const canAnnotate = this.inCall() || controlling;
    this.callButton.textContent = this.inCall() ? "End call" : this.pending("call") ? "Cancel call" : "Call";
    this.callButton.dataset.state = this.inCall() ? "in-call" : this.pending("call") ? "ringing" : "idle";
    this.muteButton.disabled = !this.inCall();
    this.cameraButton.disabled = !this.inCall();
    this.reconnectButton.hidden = state?.call?.legs[this.peerId]?.state !== "connected";
    this.muteButton.textContent = this.audio ? "Mute" : "Unmute";
    this.cameraButton.textContent = this.video ? "Camera off" : "Camera on";
    this.controlButton.textContent = controlling ? "Release control" : this.pending("control") ? "Waiting for the user…" : "Request control";
    this.controlButton.disabled = !controlling && this.pending("control");
    this.drawButton.disabled = !canAnnotate;
    this.clearButton.disabled = !canAnnotate;
    this.drawButton.textContent = this.drawing ? "Stop drawing" : "Draw";
    if (!canAnnotate && this.drawing) this.toggleDrawing();
    this.element.dataset.call = this.callButton.dataset.state ?? "idle";
    let control = "off";
    if (controlling) control = "granted";
    else if (this.pending("control")) control = "requested";
    else if (state?.control) control = "busy";
    this.element.dataset.control = control;
    if (state) this.showStatus(describe(state, this.peerId));
  }
}

/** Describes the consent state in words: the user's page, the call and the control. */
function describe(state: RoomState, peerId: string): string {
  const page = state.user.connected ? "User's page connected" : "User's page offline";
  const callRequest = state.requests.find((request) => request.kind === "call" && request.peerId === peerId);
  const leg = state.call?.legs[peerId];
  const call = leg
    ? leg.state === "connected"
      ? "Call: connected"
      : "Call: connecting"
    : callRequest
      ? "Call: waiting for the user to answer"
      : state.call
        ? "Call: other agents are in a call"
        : "Call: none";
  const controlRequest = state.requests.find((request) => request.kind === "control");
  const control = state.control
    ? state.control.peerId === peerId
      ? "Control: granted to you"
      : `Control: ${state.control.agentName} controls the page`
    : controlRequest
      ? controlRequest.peerId === peerId
        ? "Control: waiting for the user to answer"
        : `Control: ${controlRequest.agentName} is waiting for an answer`
      : "Control: off";
  return `${page} · ${call} · ${control}`;
}

function button(label: string, testId: string, onClick: () => unknown): HTMLButtonElement {
  const element = h("button", { type: "button", class: "button", "data-testid": testId }, label);
  element.addEventListener("click", () => void onClick());
  return element;
}

function video(testId: string, muted: boolean): HTMLVideoElement {
  const element = h("video", { class: "assist-video", "data-testid": testId, autoplay: true, playsinline: true });
  element.muted = muted;
  return element;
}
