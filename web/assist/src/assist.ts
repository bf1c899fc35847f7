// The tracker's assist plugin: `tracker.use(trackerAssist(options))`. It joins
// the session's room on the signal service, asks the user's consent for calls
// and remote control, and runs them.
import { Annotations, type NodeLookup, RemoteControl } from "./control";
import { UserCall } from "./call";
import type { AgentPeer, ConsentRequest, Control, RoomState, ServerFrame } from "./protocol";
import { SignalSocket } from "./socket";
import { AssistLayer, type ConfirmOption, type ConfirmText } from "./ui";

/** A callback's optional return value: called when the thing it reported ends. */
type Cleanup = void | (() => void);

export interface AgentInfo {
  name: string;
  agentId: string;
  peerId: string;
}

export interface AssistOptions {
  /** Text of the call consent dialog: a string, or {title, text, acceptText, declineText}. `{agent}` is the agent's name. */
  callConfirm?: ConfirmOption;
  /** Text of the remote-control consent dialog, in the same form as callConfirm. */
  controlConfirm?: ConfirmOption;
  onAgentConnect?: (agent: AgentInfo) => Cleanup;
  onCallStart?: (agent: AgentInfo) => Cleanup;
  onRemoteControlStart?: (agent: AgentInfo) => Cleanup;
  /** RTCConfiguration for calls; its iceServers are added to the server's. */
  config?: RTCConfiguration;
  /** WebSocket URL of the signal service. Defaults to `/signal/v1/ws` beside the tracker's ingest point. */
  signalPoint?: string;
}

/** The part of the tracker that the plugin uses: its public API, plus the rrweb node lookup. */
export interface AssistTracker {
  onStart(listener: (info: { sessionID: string; token: string; ingestPoint: string }) => void): () => void;
  onStop(listener: () => void): () => void;
  getNode?: NodeLookup;
}

export interface AssistHandle {
  /** Leaves the room and removes the plugin's elements. */
  stop(): void;
}

const CALL_DEFAULTS: Required<ConfirmText> = {
  title: "Call from support",
  text: "{agent} would like to start a call with you.",
  acceptText: "Answer",
  declineText: "Decline",
};
const CONTROL_DEFAULTS: Required<ConfirmText> = {
  title: "Remote control",
  text: "{agent} asks to control this page to guide you. You can stop at any time with Esc.",
  acceptText: "Allow",
  declineText: "Deny",
};

export function trackerAssist(options: AssistOptions = {}): (tracker: AssistTracker) => AssistHandle {
  return (tracker) => new Assist(tracker, options);
}

class Assist implements AssistHandle {
  private readonly layer = new AssistLayer();
  private socket: SignalSocket | null = null;
  private state: RoomState | null = null;
  private iceServers: RTCIceServer[] = [];
  private readonly dialogs = new Map<string, () => void>();
  private readonly agentCleanups = new Map<string, Cleanup>();
  private call: UserCall | null = null;
  private callCleanup: Cleanup = undefined;
  private control: RemoteControl | null = null;
  private controlCleanup: Cleanup = undefined;
  private annotations: Annotations | null = null;
  private readonly unsubscribe: Array<() => void>;

  constructor(
    private readonly tracker: AssistTracker,
    private readonly options: AssistOptions,
  ) {
    this.unsubscribe = [
      tracker.onStart((info) => this.join(info.token, info.ingestPoint)),
      tracker.onStop(() => this.leave()),
    ];
  }

  stop(): void {
    for (const unsubscribe of this.unsubscribe) unsubscribe();
    this.leave();
  }

  private join(token: string, ingestPoint: string): void {
    this.leave();
    const url = this.options.signalPoint ?? signalUrl(ingestPoint);
    this.socket = new SignalSocket({
      url,
      auth: () => ({ token }),
      onFrame: (frame) => this.receive(frame),
    });
    this.socket.connect();
  }

  private leave(): void {
    this.socket?.close();
    this.socket = null;
    this.state = null;
    this.endCall();
    this.endControl();
    for (const close of this.dialogs.values()) close();
    this.dialogs.clear();
    for (const cleanup of this.agentCleanups.values()) if (typeof cleanup === "function") cleanup();
    this.agentCleanups.clear();
    this.annotations?.close();
    this.annotations = null;
    this.layer.unmount();
  }

  private send = (frame: Record<string, unknown>): void => {
    this.socket?.send(frame);
  };

  private receive(frame: ServerFrame): void {
    switch (frame.type) {
      case "hello":
        this.iceServers = frame.iceServers;
        this.apply(frame.state, true);
        break;
      case "room.state":
        this.apply(frame.state, false);
        break;
      case "call.offer":
      case "call.ice":
        void this.call?.handle(frame).catch((error: unknown) => console.warn("[tandem assist] Call signalling failed.", error));
        break;
      case "control.event":
        this.control?.apply(frame.event);
        break;
      case "annotate.draw":
        this.drawing().draw(frame.points, frame.color);
        break;
      case "annotate.clear":
        this.annotations?.clear();
        break;
      case "error":
        console.warn("[tandem assist]", frame.message);
        break;
    }
  }

  private apply(state: RoomState, fresh: boolean): void {
    if (!fresh && this.state && state.revision < this.state.revision) return;
    this.state = state;
    this.syncAgents(state.agents);
    this.syncDialogs(state.requests);
    this.syncCall(state);
    this.syncControl(state.control);
  }

  private syncAgents(agents: Record<string, AgentPeer>): void {
    for (const [peerId, cleanup] of [...this.agentCleanups]) {
      if (peerId in agents) continue;
      this.agentCleanups.delete(peerId);
      if (typeof cleanup === "function") cleanup();
    }
    for (const agent of Object.values(agents)) {
      if (this.agentCleanups.has(agent.peerId)) continue;
      this.agentCleanups.set(agent.peerId, this.options.onAgentConnect?.(info(agent)));
    }
  }

  private syncDialogs(requests: ConsentRequest[]): void {
    const waiting = new Set(requests.map((request) => request.requestId));
    for (const [requestId, close] of [...this.dialogs]) {
      if (waiting.has(requestId)) continue;
      close();
      this.dialogs.delete(requestId);
    }
    for (const request of requests) {
      if (this.dialogs.has(request.requestId)) continue;
      const isCall = request.kind === "call";
      const close = this.layer.confirm(
        isCall ? this.options.callConfirm : this.options.controlConfirm,
        isCall ? CALL_DEFAULTS : CONTROL_DEFAULTS,
        request.agentName,
        isCall ? "assist-call-confirm" : "assist-control-confirm",
        (accepted) => this.send({ type: "consent.answer", requestId: request.requestId, accepted }),
      );
      this.dialogs.set(request.requestId, close);
    }
  }

  private syncCall(state: RoomState): void {
    const call = state.call;
    if (call === null || (this.call && this.call.callId !== call.callId)) this.endCall();
    if (call === null) return;
    if (this.call === null) {
      this.call = new UserCall(call, this.layer, this.send, () => this.rtcConfig(), () => this.endCall());
      const first = Object.values(call.legs)[0];
      this.callCleanup = this.options.onCallStart?.(first ? { name: first.agentName, agentId: first.agentId, peerId: first.peerId } : noAgent());
    }
    this.call.sync(call);
  }

  private syncControl(control: Control | null): void {
    if (control === null || (this.control && this.control.agentPeerId !== control.peerId)) this.endControl();
    if (control === null || this.control !== null) return;
    const findNode: NodeLookup = (id) => this.tracker.getNode?.(id) ?? null;
    this.control = new RemoteControl(control, this.layer, findNode, () => this.send({ type: "control.end" }));
    this.controlCleanup = this.options.onRemoteControlStart?.({ name: control.agentName, agentId: control.agentId, peerId: control.peerId });
  }

  private endCall(): void {
    if (this.call === null) return;
    this.call.close();
    this.call = null;
    if (typeof this.callCleanup === "function") this.callCleanup();
    this.callCleanup = undefined;
  }

  private endControl(): void {
    if (this.control === null) return;
    this.control.close();
    this.control = null;
    if (typeof this.controlCleanup === "function") this.controlCleanup();
    this.controlCleanup = undefined;
  }

  private drawing(): Annotations {
    this.annotations ??= new Annotations(this.layer);
    return this.annotations;
  }

  private rtcConfig(): RTCConfiguration {
    const extra = this.options.config ?? {};
    return { ...extra, iceServers: [...this.iceServers, ...(extra.iceServers ?? [])] };
  }
}

function info(agent: AgentPeer): AgentInfo {
  return { name: agent.name, agentId: agent.agentId, peerId: agent.peerId };
}

function noAgent(): AgentInfo {
  return { name: "", agentId: "", peerId: "" };
}

/** `https://host/ingest` → `wss://host/signal/v1/ws`. */
export function signalUrl(ingestPoint: string): string {
  const url = new URL("../signal/v1/ws", ingestPoint.replace(/\/?$/, "/"));
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}
