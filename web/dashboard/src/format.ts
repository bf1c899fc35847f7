// Text shown for the fields of a live session.
import type { LiveSession } from "./protocol";

/** Text of a field that the tracker did not report. */
export const PLACEHOLDER = "—";

/** Formats a duration in milliseconds as `m:ss`, or `h:mm:ss` from one hour on. */
export function formatDuration(milliseconds: number): string {
  const totalSeconds = Math.max(0, Math.floor(milliseconds / 1000));
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = String(totalSeconds % 60).padStart(2, "0");
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, "0")}:${seconds}`;
  return `${minutes}:${seconds}`;
}

/** Formats a start time as the local time of day, with the date when it is not today. */
export function formatStartTime(timestamp: number): string {
  const date = new Date(timestamp);
  const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (date.toDateString() === new Date().toDateString()) return time;
  return `${date.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

export function formatUser(session: LiveSession): string {
  return session.userId || session.userAnonymousId || "Anonymous";
}

export function formatBrowser(session: LiveSession): string {
  return [session.browser, session.browserVersion].filter(Boolean).join(" ") || PLACEHOLDER;
}

export function formatOs(session: LiveSession): string {
  return [session.os, session.osVersion].filter(Boolean).join(" ") || PLACEHOLDER;
}

/** Returns the English name of an ISO 3166-1 alpha-2 country code, or the code when it is unknown. */
export function formatCountry(code: string): string {
  if (!code) return PLACEHOLDER;
  try {
    return new Intl.DisplayNames(["en"], { type: "region" }).of(code.toUpperCase()) ?? code;
  } catch {
    // Intl.DisplayNames throws a RangeError on a code that is not well-formed.
    return code;
  }
}
