// The agent HTTP API and the sign-in state kept in sessionStorage.
import type { Agent, ErrorBody, LoginResponse } from "./protocol";

const STORAGE_KEY = "tandem.auth";

/** A signed-in agent: the token for the API and the WebSocket. */
export interface AuthState {
  token: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
  agent: Agent;
}

/** A failed API call, with the message of the JSON error body when the server sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** Signs in with `POST /api/v1/auth/login` and stores the token in sessionStorage. */
export async function login(username: string, password: string): Promise<AuthState> {
  let response: Response;
  try {
    response = await fetch("/api/v1/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
  } catch (error) {
    throw new ApiError(`Sign-in failed: the server is unreachable (${String(error)}).`, 0, "network_error");
  }

  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  const body = (await response.json()) as LoginResponse;
  const auth: AuthState = { token: body.token, expiresAt: body.expiresAt, agent: body.agent };
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(auth));
  return auth;
}

/** Returns the stored sign-in, or null when there is none or its token has expired. */
export function loadAuth(): AuthState | null {
  const raw = sessionStorage.getItem(STORAGE_KEY);
  if (raw === null) return null;

  let auth: AuthState;
  try {
    auth = JSON.parse(raw) as AuthState;
  } catch {
    clearAuth();
    return null;
  }
  if (typeof auth.token !== "string" || typeof auth.expiresAt !== "number" || auth.expiresAt <= Date.now()) {
    clearAuth();
    return null;
  }
  return auth;
}

export function clearAuth(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

async function errorFromResponse(response: Response, what = "Sign-in failed"): Promise<ApiError> {
  const fallback = `${what}: HTTP ${response.status} ${response.statusText}`.trim() + ".";
  try {
    const body = (await response.json()) as Partial<ErrorBody>;
    if (body.error && typeof body.error.message === "string") {
      return new ApiError(body.error.message, response.status, body.error.code ?? "");
    }
  } catch {
    // The body is not JSON, for example a proxy's HTML error page.
  }
  return new ApiError(fallback, response.status, "http_error");
}

/**
 * Sends a request to the agent HTTP API with the signed-in agent's token and
 * returns the JSON body, or null for an empty one (204). A failure throws an
 * ApiError with the server's message.
 */
export async function apiRequest<T>(auth: AuthState, method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Authorization: `Bearer ${auth.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(`The server is unreachable (${String(error)}). Try again.`, 0, "network_error");
  }
  if (!response.ok) throw await errorFromResponse(response, `${method} ${path} failed`);
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}
