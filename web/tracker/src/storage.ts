// Per-tab state kept in sessionStorage, so that a session continues across the
// page loads of one tab. sessionStorage can be missing or full (private modes,
// quotas, sandboxed iframes); then every read returns nothing and writes are lost.
import type { RecordedEvent } from "./events";

/** The tab's session, written whenever one of its fields changes. */
export interface TabState {
  tabId: string;
  token: string | null;
  sessionID: string | null;
  /** First batch number that the tab's next page may use (see Transport). */
  seq: number;
  /** Id of the page instance that wrote the state last. */
  owner: string;
}

/**
 * Events that a page could not send before it was hidden or unloaded. `T` is
 * `string` (JSON texts) when saving and `RecordedEvent` when restoring.
 */
export interface PendingEvents<T> {
  sessionID: string;
  /** A batch that already has a number; it is resent first, with that number. */
  batch: { seq: number; events: T[] } | null;
  events: T[];
}

function isRecordedEvent(value: unknown): value is RecordedEvent {
  const event = value as Partial<RecordedEvent> | null;
  if (typeof event !== "object" || event === null) return false;
  return typeof event.type === "number" && typeof event.timestamp === "number";
}

const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** Returns a random id of `length` characters from [a-z0-9]. */
export function randomId(length = 16): string {
  const bytes = new Uint8Array(length);
  crypto.getRandomValues(bytes);
  let id = "";
  for (const byte of bytes) id += ID_ALPHABET[byte % ID_ALPHABET.length];
  return id;
}

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null; // Access throws in sandboxed frames and with storage blocked.
  }
}

function read(key: string): unknown {
  try {
    const text = storage()?.getItem(key);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function write(key: string, text: string): boolean {
  try {
    storage()?.setItem(key, text);
    return true;
  } catch {
    return false; // QuotaExceededError, or storage blocked.
  }
}

function remove(key: string): void {
  try {
    storage()?.removeItem(key);
  } catch {
    // Nothing was stored then.
  }
}

/** Tab state and pending events of one project, stored under two sessionStorage keys. */
export class TabStore {
  private readonly stateKey: string;
  private readonly pendingKey: string;

  constructor(projectKey: string) {
    this.stateKey = `tandem:${projectKey}:tab`;
    this.pendingKey = `tandem:${projectKey}:pending`;
  }

  /** Returns the stored state, or a new tab with no session. */
  loadState(owner: string): TabState {
    const stored = read(this.stateKey) as Partial<TabState> | null;
    const valid =
      stored !== null &&
      typeof stored.tabId === "string" &&
      /^[a-z0-9]{1,128}$/.test(stored.tabId) &&
      typeof stored.seq === "number" &&
      stored.seq >= 0;
    if (!valid) {
      return { tabId: randomId(), token: null, sessionID: null, seq: 0, owner };
    }
    return {
      tabId: stored.tabId as string,
      token: typeof stored.token === "string" ? stored.token : null,
      sessionID: typeof stored.sessionID === "string" ? stored.sessionID : null,
      seq: Math.floor(stored.seq as number),
      owner: typeof stored.owner === "string" ? stored.owner : "",
    };
  }

  /** Returns the owner id written last, or null when there is no state. */
  storedOwner(): string | null {
    const stored = read(this.stateKey) as Partial<TabState> | null;
    return stored && typeof stored.owner === "string" ? stored.owner : null;
  }

  saveState(state: TabState): void {
    write(this.stateKey, JSON.stringify(state));
  }

  /**
   * Stores pending events, which are already JSON texts. Returns false when
   * sessionStorage rejected them (usually its quota of a few megabytes).
   */
  savePending(pending: PendingEvents<string>): boolean {
    const batch = pending.batch
      ? `{"seq":${pending.batch.seq},"events":[${pending.batch.events.join(",")}]}`
      : "null";
    const text =
      `{"sessionID":${JSON.stringify(pending.sessionID)},"batch":${batch},` +
      `"events":[${pending.events.join(",")}]}`;
    if (write(this.pendingKey, text)) return true;
    remove(this.pendingKey);
    return false;
  }

  /**
   * Returns the stored pending events, leaving them stored: a page that
   * unloads before its session starts (offline, say) leaves them for the next
   * one. The Transport removes them when it takes them over.
   */
  readPending(): PendingEvents<RecordedEvent> | null {
    const stored = read(this.pendingKey) as {
      sessionID?: unknown;
      batch?: { seq?: unknown; events?: unknown } | null;
      events?: unknown;
    } | null;
    if (!stored || typeof stored.sessionID !== "string" || !Array.isArray(stored.events)) return null;

    let batch: PendingEvents<RecordedEvent>["batch"] = null;
    if (stored.batch && typeof stored.batch.seq === "number" && Array.isArray(stored.batch.events)) {
      batch = { seq: stored.batch.seq, events: stored.batch.events.filter(isRecordedEvent) };
    }
    return { sessionID: stored.sessionID, batch, events: stored.events.filter(isRecordedEvent) };
  }

  clearPending(): void {
    remove(this.pendingKey);
  }
}
