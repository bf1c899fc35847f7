// The error fence. The tracker wraps its rrweb emit callback, timers, event
// listeners and public methods with these helpers, so that an exception in the
// tracker is logged once instead of reaching the host page.

const warned = new Set<string>();

/** Logs a warning the first time `key` is seen on this page, and ignores repeats. */
export function warnOnce(key: string, ...details: unknown[]): void {
  if (warned.has(key)) return;
  warned.add(key);
  try {
    console.warn("[tandem]", ...details);
  } catch {
    // A host page may replace console; there is nowhere else to report.
  }
}

/** Logs an exception caught by the fence. Repeats of the same message are dropped. */
export function reportError(error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  warnOnce(`error:${message}`, "Internal error, the tracker keeps running:", error);
}

/** Wraps `callback` so that it returns `undefined` instead of throwing. */
export function fenced<Args extends unknown[], Result>(
  callback: (...args: Args) => Result,
): (...args: Args) => Result | undefined {
  return function (this: unknown, ...args: Args): Result | undefined {
    try {
      return callback.apply(this, args);
    } catch (error) {
      reportError(error);
      return undefined;
    }
  };
}

/** `setTimeout` with a fenced callback. */
export function fencedTimeout(callback: () => void, delayMs: number): ReturnType<typeof setTimeout> {
  return setTimeout(fenced(callback), delayMs);
}

/** Adds a fenced event listener and returns the function that removes it. */
export function listen(
  target: EventTarget,
  type: string,
  callback: (event: Event) => void,
  options?: AddEventListenerOptions,
): () => void {
  const listener = fenced(callback);
  target.addEventListener(type, listener, options);
  return () => target.removeEventListener(type, listener, options);
}

/** Runs `callback` at once behind the fence; returns `fallback` if it throws. */
export function runFenced<Result>(callback: () => Result, fallback: Result): Result {
  try {
    return callback();
  } catch (error) {
    reportError(error);
    return fallback;
  }
}
