// The recorded-session API (docs/SEARCH.md): search, one session with its markers, and its event pages.
import { ApiError, type AuthState } from "../api";

/** A recorded session's summary, as `GET /api/v1/sessions` returns it. */
export interface RecordedSession {
  sessionId: string;
  projectId: string;
  userId: string | null;
  userAnonymousId: string | null;
  metadata: Record<string, string>;
  browser: string;
  browserVersion: string;
  os: string;
  osVersion: string;
  device: string;
  country: string;
  firstUrl: string;
  startedAt: number;
  endedAt: number;
  durationMs: number;
  pages: number;
  events: number;
  errors: number;
  clicks: number;
  ended: boolean;
}

/** A point on the player's timeline: a page view, click, error, console message, custom event or issue. */
export interface Marker {
  kind: "page" | "click" | "error" | "console" | "custom" | "issue";
  timestamp: number;
  name?: string;
  text?: string;
  selector?: string;
  url?: string;
  payload?: string;
}

export interface SearchResult {
  sessions: RecordedSession[];
  total: number;
  page: number;
  limit: number;
}

export interface SearchRequest {
  projectId: string;
  q: string;
  /** Earliest start time of a listed session, in epoch milliseconds. Without it, the search has no lower bound. */
  from?: number;
  sort: string;
  order: "asc" | "desc";
  page: number;
  limit: number;
}

/** An rrweb event: the player takes them as they come. */
export interface RecordedEvent {
  type: number;
  timestamp: number;
  data: unknown;
}

export interface EventsPage {
  events: RecordedEvent[];
  next: string | null;
}

/** A query the server rejected, with the character position the error message points at. */
export class QueryError extends ApiError {
  constructor(
    message: string,
    readonly position: number,
  ) {
    super(message, 400, "invalid_query");
  }
}

export class RecordingsApi {
  constructor(private readonly auth: AuthState) {}

  search(request: SearchRequest): Promise<SearchResult> {
    const params = new URLSearchParams({
      projectId: request.projectId,
      q: request.q,
      sort: request.sort,
      order: request.order,
      page: String(request.page),
      limit: String(request.limit),
    });
    if (request.from !== undefined) params.set("from", String(request.from));
    return this.get<SearchResult>(`/api/v1/sessions?${params}`);
  }

  session(sessionId: string): Promise<{ session: RecordedSession; markers: Marker[] }> {
    return this.get(`/api/v1/sessions/${encodeURIComponent(sessionId)}`);
  }

  events(sessionId: string, after: string | null, limit: number): Promise<EventsPage> {
    const params = new URLSearchParams({ limit: String(limit) });
    if (after) params.set("after", after);
    return this.get(`/api/v1/sessions/${encodeURIComponent(sessionId)}/events?${params}`);
  }

  /** Returns the whole recording as a JSON array of rrweb events, which any rrweb player accepts. */
  async exportBlob(sessionId: string): Promise<Blob> {
    const response = await this.fetch(`/api/v1/sessions/${encodeURIComponent(sessionId)}/export`);
    return response.blob();
  }

  private async get<T>(path: string): Promise<T> {
    return (await (await this.fetch(path)).json()) as T;
  }

  private async fetch(path: string): Promise<Response> {
    let response: Response;
    try {
      response = await fetch(path, { headers: { Authorization: `Bearer ${this.auth.token}` } });
    } catch (error) {
      throw new ApiError(`The server is unreachable (${String(error)}). Try again.`, 0, "network_error");
    }
    if (response.ok) return response;
    let body: { error?: { code?: string; message?: string; details?: { position?: number } } } = {};
    try {
      body = await response.json();
    } catch {
      // Not JSON, for example a proxy's HTML error page.
    }
    const message = body.error?.message ?? `HTTP ${response.status} ${response.statusText}.`;
    if (body.error?.code === "invalid_query") throw new QueryError(message, body.error.details?.position ?? 0);
    throw new ApiError(message, response.status, body.error?.code ?? "");
  }
}
