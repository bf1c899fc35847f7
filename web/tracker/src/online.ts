// Network state. While the browser reports itself offline, the tracker sends
// nothing: requests would fail at once, and retrying them only burns the backoff.
import { fencedTimeout, listen } from "./fence";

/** Fallback check of `navigator.onLine`, in case an `online` event is missed. */
const POLL_INTERVAL_MS = 2000;

/** Returns true when `navigator.onLine` is false; a browser without it counts as online. */
export function isOffline(): boolean {
  return typeof navigator !== "undefined" && navigator.onLine === false;
}

/**
 * Calls `callback` once the browser is back online, from the `online` event or
 * the fallback poll. Returns a function that cancels the wait.
 */
export function onceOnline(callback: () => void): () => void {
  let done = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let unlisten: () => void = () => undefined;
  const finish = (): void => {
    if (done) return;
    done = true;
    cancel();
    callback();
  };
  const cancel = (): void => {
    done = true;
    unlisten();
    if (timer) clearTimeout(timer);
    timer = null;
  };
  const poll = (): void => {
    timer = null;
    if (!isOffline()) finish();
    else if (!done) timer = fencedTimeout(poll, POLL_INTERVAL_MS);
  };
  unlisten = listen(window, "online", finish);
  timer = fencedTimeout(poll, POLL_INTERVAL_MS);
  return cancel;
}

/** Resolves once the browser is online, at once if it is. */
export function whenOnline(): Promise<void> {
  if (!isOffline()) return Promise.resolve();
  return new Promise((resolve) => {
    onceOnline(resolve);
  });
}
