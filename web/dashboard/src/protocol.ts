// Types of the agent WebSocket messages and HTTP bodies, as described in docs/PROTOCOL.md.
import type { eventWithTime } from "@rrweb/types";

export type RrwebEvent = eventWithTime;

/** A tab that is recording now, as the live list shows it. */
export interface LiveSession {
  sessionId: string;
  projectId: string;
  tabId: string;
  userId: string | null;
  userAnonymousId: string | null;
  metadata: Record<string, unknown>;
  /** Milliseconds since the epoch, in server time. */
  startedAt: number;
  /** Milliseconds since the epoch, in server time. */
  lastSeenAt: number;
  url: string;
  title: string;
  browser: string;
  browserVersion: string;
  os: string;
  osVersion: string;
  device: string;
  /** Country code, or an empty string when unknown. `formatCountry` expects ISO 3166-1 alpha-2. */
  country: string;
  active: boolean;
}

export type ClientMessage =
  | { type: "auth"; token: string }
  | { type: "list.subscribe"; projectId: string }
  | { type: "watch"; sessionId: string }
  | { type: "unwatch"; sessionId: string };

export type ServerMessage =
  | { type: "hello"; agentId: string; serverTime: number }
  | { type: "list.snapshot"; projectId: string; sessions: LiveSession[] }
  | { type: "list.upsert"; session: LiveSession }
  | { type: "list.remove"; sessionId: string }
  | { type: "watch.started"; sessionId: string }
  | { type: "watch.stopped"; sessionId: string }
  | { type: "events"; sessionId: string; seq?: number; events: RrwebEvent[] }
  | { type: "pong"; serverTime: number }
  | { type: "error"; code: string; message: string };

/** The body of every HTTP error response. */
export interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

export interface Agent {
  id: string;
  name: string;
  role: string;
}

/** The response of `POST /api/v1/auth/login`. */
export interface LoginResponse {
  token: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  agent: Agent;
}
