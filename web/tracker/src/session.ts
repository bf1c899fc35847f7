// The start request (`POST {ingestPoint}/v1/web/start`) and the server clock offset.
import { isRetryableStatus, parseRetryAfter, readErrorCode, retryDelay } from "./backoff";
import { fencedTimeout } from "./fence";
import { isOffline, whenOnline } from "./online";
import { TRACKER_VERSION } from "./version";

/** Body of the start request, as in docs/PROTOCOL.md. */
export interface StartRequestBody {
  version: 1;
  projectKey: string;
  trackerVersion: string;
  tabId: string;
  token: string | null;
  url: string;
  title: string;
  referrer: string;
  userID: string | null;
  userAnonymousID: string | null;
  metadata: Record<string, string>;
  screen: { width: number; height: number };
  viewport: { width: number; height: number };
  timezone: string;
  language: string;
  timestamp: number;
}

/** A session the server accepted. */
export interface StartedSession {
  sessionID: string;
  projectID: string;
  token: string;
  resumed: boolean;
  maxBatchBytes: number;
  /** Milliseconds to add to a local `Date.now()` to get the server's clock. */
  clockOffset: number;
  /** Agents may watch only after the user accepts in a dialog (see consent.ts). */
  sessionConfirm: boolean;
}

export type StartOutcome = { ok: true; session: StartedSession } | { ok: false; reason: string };

/** The server checks these lengths; longer strings make the whole request invalid. */
const MAX_TEXT_LENGTH = 2048;
const MAX_IDENTITY_LENGTH = 256;
const MAX_ATTEMPTS = 5;
const REQUEST_TIMEOUT_MS = 15_000;

export function truncate(text: string, maxLength: number): string {
  return text.length > maxLength ? text.slice(0, maxLength) : text;
}

/** Returns a user id or anonymous id cut to the length the server accepts. */
export function identity(value: string | null): string | null {
  return value === null ? null : truncate(String(value), MAX_IDENTITY_LENGTH);
}

/** Returns the page's url, title and referrer, cut to the length the server accepts. */
export function pageInfo(): { url: string; title: string; referrer: string } {
  return {
    url: truncate(location.href, MAX_TEXT_LENGTH),
    title: truncate(document.title, MAX_TEXT_LENGTH),
    referrer: truncate(document.referrer, MAX_TEXT_LENGTH),
  };
}

/** Returns the device fields of the start request. */
export function deviceInfo(): Pick<StartRequestBody, "screen" | "viewport" | "timezone" | "language"> {
  let timezone = "";
  try {
    timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch {
    // Old engines without Intl time zones send an empty string.
  }
  return {
    screen: { width: screen.width, height: screen.height },
    viewport: { width: window.innerWidth, height: window.innerHeight },
    timezone: truncate(timezone, 64),
    language: truncate(navigator.language || "", 64),
  };
}

export function buildStartRequest(
  fields: Pick<StartRequestBody, "projectKey" | "tabId" | "token" | "userID" | "userAnonymousID" | "metadata">,
): StartRequestBody {
  return {
    version: 1,
    trackerVersion: TRACKER_VERSION,
    ...fields,
    ...pageInfo(),
    ...deviceInfo(),
    timestamp: Date.now(),
  };
}

function sleep(delayMs: number): Promise<void> {
  return new Promise((resolve) => fencedTimeout(resolve, delayMs));
}

function parseStartResponse(body: unknown, sentAt: number, receivedAt: number): StartedSession | null {
  const data = body as Partial<Record<string, unknown>> | null;
  if (!data || typeof data.sessionID !== "string" || typeof data.token !== "string") return null;
  if (typeof data.timestamp !== "number") return null;
  const maxBatchBytes = typeof data.maxBatchBytes === "number" && data.maxBatchBytes > 0 ? data.maxBatchBytes : 0;
  if (!maxBatchBytes) return null;
  return {
    sessionID: data.sessionID,
    projectID: typeof data.projectID === "string" ? data.projectID : "",
    token: data.token,
    resumed: data.resumed === true,
    maxBatchBytes,
    // The server read its clock about halfway through the round trip.
    clockOffset: Math.round(data.timestamp - (sentAt + receivedAt) / 2),
    sessionConfirm: data.sessionConfirm === true,
  };
}

/**
 * Sends the start request. Network errors, timeouts, 429 and 5xx are retried
 * with backoff, up to 5 attempts; any other error status fails at once. While
 * the browser is offline it waits for the network, and attempts that fail
 * offline do not count. `isCancelled` is checked between attempts so that
 * `stop()` ends the loop.
 */
export async function requestStart(
  endpoint: string,
  body: StartRequestBody,
  isCancelled: () => boolean,
): Promise<StartOutcome> {
  let reason = "";
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    if (isCancelled()) return { ok: false, reason: "stopped" };
    if (isOffline()) {
      await whenOnline();
      if (isCancelled()) return { ok: false, reason: "stopped" };
    }

    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = fencedTimeout(() => controller?.abort(), REQUEST_TIMEOUT_MS);
    const sentAt = Date.now();
    let retryAfterMs: number | null = null;
    try {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...body, timestamp: sentAt }),
        credentials: "omit",
        signal: controller?.signal,
      });
      const receivedAt = Date.now();
      if (response.ok) {
        const body = (await response.json()) as { record?: unknown } | null;
        // The project records a sample of tabs, and this tab is not in it: record nothing.
        if (body?.record === false) return { ok: false, reason: "This tab is not in the project's sample of recorded tabs." };
        const session = parseStartResponse(body, sentAt, receivedAt);
        if (session) return { ok: true, session };
        return { ok: false, reason: "The start response is missing sessionID, token, timestamp or maxBatchBytes." };
      }
      const code = await readErrorCode(response);
      reason = `The start request failed with HTTP ${response.status}${code ? ` (${code})` : ""}.`;
      if (!isRetryableStatus(response.status)) return { ok: false, reason };
      retryAfterMs = parseRetryAfter(response.headers.get("Retry-After"));
    } catch (error) {
      reason = `The start request failed: ${error instanceof Error ? error.message : String(error)}.`;
      if (isOffline()) {
        attempt--; // The network went away: wait for it at the top of the loop, without counting this attempt.
        continue;
      }
    } finally {
      clearTimeout(timer);
    }
    if (attempt + 1 < MAX_ATTEMPTS) await sleep(retryDelay(attempt, retryAfterMs));
  }
  return { ok: false, reason: `${reason} Gave up after ${MAX_ATTEMPTS} attempts.` };
}
