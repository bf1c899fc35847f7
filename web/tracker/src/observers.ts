// Page lifecycle signals. Each observer adds one fenced listener and returns its teardown.
import { listen } from "./fence";

/** Calls `callback` with the new state on every `visibilitychange`. */
export function observeVisibility(callback: (visible: boolean) => void): () => void {
  return listen(document, "visibilitychange", () => callback(document.visibilityState !== "hidden"));
}

/**
 * Calls `callback` on `pagehide`, the last event a page reliably gets before
 * it unloads or enters the back-forward cache.
 */
export function observePageHide(callback: () => void): () => void {
  return listen(window, "pagehide", () => callback());
}

/** Calls `callback` when the page comes back from the back-forward cache. */
export function observeRestoreFromCache(callback: () => void): () => void {
  return listen(window, "pageshow", (event) => {
    if ((event as PageTransitionEvent).persisted) callback();
  });
}
