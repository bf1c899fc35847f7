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
  /** City name in English, or an empty string when the server's database has none. */
  city?: string;
  referrer?: string;
  screen?: { width: number; height: number } | null;
  timezone?: string;
  language?: string;
  utmSource?: string;
  utmMedium?: string;
  utmCampaign?: string;
  utmTerm?: string;
  utmContent?: string;
  active: boolean;
  /** Server time of the tab's pagehide; the session leaves the list unless the tab sends again soon. */
  closingAt?: number | null;
}

/** What the live list shows: a search in the search-bar syntax, an order and a page. */
export interface ListQuery {
  query: string;
  sort: "startedAt" | "duration";
  order: "asc" | "desc";
  limit: number;
  offset: number;
}

/** Values of one filter menu with the number of matching sessions, most frequent first. */
export type FacetValues = Array<{ value: string; count: number }>;

/** Filter menus by field name as the search bar writes it: "browser", "country", "meta.plan"… */
export type Facets = Record<string, FacetValues>;

export type ClientMessage =
  | { type: "auth"; token: string }
  | ({ type: "list.subscribe"; projectId: string } & Partial<ListQuery>)
  | { type: "watch"; sessionId: string }
  | { type: "unwatch"; sessionId: string };

export type ServerMessage =
  | { type: "hello"; agentId: string; serverTime: number }
  | ({ type: "list.snapshot"; projectId: string; sessions: LiveSession[]; total?: number; facets?: Facets } & Partial<ListQuery>)
  | { type: "list.upsert"; session: LiveSession }
  /** `reason` is "ended" when the session left the registry, "filtered" when it only left this page or filter. */
  | { type: "list.remove"; sessionId: string; reason?: "ended" | "filtered" }
  | { type: "list.counts"; projectId: string; total: number; facets: Facets }
  /** A watched session changed, whether or not it is on the agent's list page. */
  | { type: "session.update"; session: LiveSession }
  | { type: "session.ended"; sessionId: string }
  | { type: "watch.started"; sessionId: string }
  | { type: "watch.pending"; sessionId: string; requestId: string; expiresAt: number }
  | { type: "watch.stopped"; sessionId: string; reason?: "consent_withdrawn" | "disconnected" }
  | { type: "events"; sessionId: string; seq?: number; events: RrwebEvent[] }
  | { type: "pong"; serverTime: number }
  | { type: "error"; code: string; message: string; details?: Record<string, unknown> };

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
