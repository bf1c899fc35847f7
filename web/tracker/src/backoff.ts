// Retry timing shared by the start request and the batch transport.

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30_000;
/** Upper bound on a server's Retry-After, so that a bad header cannot stall a page for hours. */
const MAX_RETRY_AFTER_MS = 300_000;

/**
 * Returns the delay before retry number `attempt` (0 for the first retry):
 * exponential from 0.5 s, capped at 30 s, with the lower half jittered so that
 * many tabs do not retry in step. A Retry-After value is used when it is longer.
 */
export function retryDelay(attempt: number, retryAfterMs: number | null): number {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempt, 16));
  const jittered = ceiling / 2 + (Math.random() * ceiling) / 2;
  if (retryAfterMs === null) return jittered;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(retryAfterMs, jittered));
}

/** Parses a Retry-After header (delay in seconds or an HTTP date) into milliseconds. */
export function parseRetryAfter(header: string | null): number | null {
  if (!header) return null;
  const trimmed = header.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
}

/** Tells whether a response status is worth retrying: 429 and every 5xx. */
export function isRetryableStatus(status: number): boolean {
  return status === 429 || status >= 500;
}

/** Reads `error.code` from a Tandem error body, or returns "" when the body is not one. */
export async function readErrorCode(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: { code?: unknown } };
    return typeof body?.error?.code === "string" ? body.error.code : "";
  } catch {
    return "";
  }
}
