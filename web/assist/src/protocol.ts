// Frames of the Assist WebSocket (`/signal/v1/ws`), as described in docs/PROTOCOL.md.

export type ConsentKind = "call" | "control";

export interface AgentPeer {
  peerId: string;
  agentId: string;
  name: string;
  color: string;
}

export interface ConsentRequest {
  requestId: string;
  kind: ConsentKind;
  peerId: string;
  agentId: string;
  agentName: string;
  requestedAt: number;
  expiresAt: number;
}

export interface CallLeg {
  peerId: string;
  agentId: string;
  agentName: string;
  state: "waiting" | "offered" | "connected";
  generation: number;
  audio: boolean;
  video: boolean;
}

export interface Call {
  callId: string;
  startedAt: number;
  legs: Record<string, CallLeg>;
  userAudio: boolean;
  userVideo: boolean;
}

export interface Control {
  peerId: string;
  agentId: string;
  agentName: string;
  color: string;
  startedAt: number;
}

export interface RoomState {
  projectId: string;
  sessionId: string;
  user: { connected: boolean; leftAt: number | null; generation: number };
  agents: Record<string, AgentPeer>;
  requests: ConsentRequest[];
  call: Call | null;
  control: Control | null;
  revision: number;
}

/** One input of the controlling agent, in CSS pixels of the user's viewport. */
export interface RemoteEvent {
  kind: "move" | "click" | "scroll" | "input" | "select";
  x: number;
  y: number;
  nodeId?: number;
  rx?: number;
  ry?: number;
  dx?: number;
  dy?: number;
  value?: string;
  index?: number;
  sentAt?: number;
}

export type ServerFrame =
  | { type: "hello"; role: string; peerId: string; iceServers: RTCIceServer[]; consentTimeoutMs: number; state: RoomState }
  | { type: "room.state"; state: RoomState }
  | { type: "consent.result"; requestId: string; kind: ConsentKind; outcome: string }
  | { type: "call.offer"; callId: string; peerId: string; generation: number; sdp: string }
  | { type: "call.answer"; callId: string; sdp: string }
  | { type: "call.ice"; callId: string; peerId?: string; candidate: RTCIceCandidateInit | null }
  | { type: "call.ended"; callId: string; reason: string }
  | { type: "control.event"; agentName: string; color: string; event: RemoteEvent }
  | { type: "control.ended"; agentName: string; reason: string }
  | { type: "annotate.draw"; peerId: string; color: string; agentName: string; points: Array<[number, number]> }
  | { type: "annotate.clear"; peerId: string }
  | { type: "pong"; serverTime: number }
  | { type: "error"; code: string; message: string; inReplyTo?: string };
