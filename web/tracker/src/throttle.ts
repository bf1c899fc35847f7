// Limits on rrweb mutation events, so that a runaway page (a loop rewriting one
// attribute, a list growing by thousands of nodes a second) neither floods the
// server nor makes the tracker the slowest thing on the page.
import { EVENT_FULL_SNAPSHOT, EVENT_INCREMENTAL_SNAPSHOT, SOURCE_MUTATION, type RecordedEvent } from "./events";
import { fencedTimeout } from "./fence";

export interface MutationLimits {
  /** Length of a window, in milliseconds. */
  windowMs: number;
  /** Attribute and text changes of one node recorded per window; later ones keep only its latest value. */
  nodeChanges: number;
  /** Mutation records (added, removed and changed nodes) recorded per window; more are dropped. */
  records: number;
  /** Minimum time between two full snapshots taken to repair a replay after a drop, doubled while drops go on. */
  snapshotMs: number;
  /** Maximum time between two such snapshots. */
  maxSnapshotMs: number;
}

export const DEFAULT_MUTATION_LIMITS: MutationLimits = {
  windowMs: 1000,
  nodeChanges: 30,
  records: 10_000,
  snapshotMs: 5000,
  maxSnapshotMs: 60_000,
};

export interface ThrottleHooks {
  /** Records an event the throttle made: the latest values of nodes that changed too often. */
  emit(event: RecordedEvent): void;
  /** Records a `tandem.dropped` marker: `count` mutation records were left out, for `reason`. */
  dropped(count: number, reason: "node_rate" | "mutation_rate"): void;
  /** Takes a full snapshot, which makes the replay whole again after dropped mutations. */
  resnapshot(): void;
}

interface MutationData {
  source: number;
  texts: Array<{ id: number; value: unknown }>;
  attributes: Array<{ id: number; attributes: Record<string, unknown> }>;
  removes: Array<{ id: number }>;
  adds: Array<{ node?: { id?: number } }>;
  [key: string]: unknown;
}

/** The latest values of a node whose changes were held back in this window. */
interface Held {
  text?: unknown;
  hasText: boolean;
  attributes: Record<string, unknown>;
}

/**
 * Filters mutation events in fixed windows. Past `nodeChanges` changes of a node
 * in one window, its changes are coalesced: the node's latest text and
 * attribute values are recorded once when the window ends, so that the replay
 * still ends in the right state. Past `records` records in one window, whole
 * mutation events are dropped, which breaks the replay until the next full
 * snapshot, so one is taken once the storm has calmed (or every `snapshotMs`,
 * doubling, while it goes on). Each window with something left out records
 * one `tandem.dropped` marker per reason.
 */
export class MutationThrottle {
  private windowStart = 0;
  private records = 0;
  private readonly changes = new Map<number, number>();
  private readonly held = new Map<number, Held>();
  private coalesced = 0;
  private droppedRecords = 0;
  /** True when mutations were dropped since the last full snapshot. */
  private broken = false;
  private snapshotDelayMs: number;
  private lastSnapshotAt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly hooks: ThrottleHooks,
    private readonly limits: MutationLimits = DEFAULT_MUTATION_LIMITS,
    private readonly now: () => number = Date.now,
  ) {
    this.snapshotDelayMs = limits.snapshotMs;
  }

  /** Returns the event to record, with fewer changes if some were held back, or null to drop it. */
  filter(event: RecordedEvent): RecordedEvent | null {
    const now = this.now();
    if (now - this.windowStart >= this.limits.windowMs) this.endWindow(now);
    if (event.type === EVENT_FULL_SNAPSHOT) {
      this.held.clear(); // The snapshot has every node's current values.
      this.broken = false;
      this.lastSnapshotAt = now;
      return event;
    }
    const data = event.data as MutationData | null;
    if (event.type !== EVENT_INCREMENTAL_SNAPSHOT || !data || data.source !== SOURCE_MUTATION) return event;

    this.forgetReplaced(data);
    const texts = Array.isArray(data.texts) ? data.texts.filter((text) => this.admitText(text)) : [];
    const attributes = Array.isArray(data.attributes)
      ? data.attributes.filter((change) => this.admitAttributes(change))
      : [];
    const count = texts.length + attributes.length + lengthOf(data.adds) + lengthOf(data.removes);
    if (count === 0) return null; // Everything was held back for the end of the window.
    if (this.records + count > this.limits.records) {
      this.droppedRecords += count;
      this.broken = true;
      this.armTimer();
      return null;
    }
    this.records += count;
    const kept = texts.length === lengthOf(data.texts) && attributes.length === lengthOf(data.attributes);
    return kept ? event : { ...event, data: { ...data, texts, attributes } };
  }

  /** Forgets every count and held value, and stops the timer. */
  reset(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.windowStart = 0;
    this.records = 0;
    this.changes.clear();
    this.held.clear();
    this.coalesced = 0;
    this.droppedRecords = 0;
    this.broken = false;
    this.snapshotDelayMs = this.limits.snapshotMs;
    this.lastSnapshotAt = 0;
  }

  private admitText(text: { id: number; value: unknown }): boolean {
    if (this.countChange(text.id)) return true;
    const held = this.holdFor(text.id);
    held.text = text.value;
    held.hasText = true;
    return false;
  }

  private admitAttributes(change: { id: number; attributes: Record<string, unknown> }): boolean {
    if (this.countChange(change.id)) return true;
    const held = this.holdFor(change.id);
    for (const [name, value] of Object.entries(change.attributes ?? {})) {
      const before = held.attributes[name];
      // rrweb sends `style` as a diff of properties; later diffs add to earlier ones.
      const bothDiffs = isPlainObject(before) && isPlainObject(value);
      held.attributes[name] = bothDiffs ? { ...before, ...value } : value;
    }
    return false;
  }

  /** Counts a change of `id`; returns false once the node is over its limit for this window. */
  private countChange(id: number): boolean {
    const count = (this.changes.get(id) ?? 0) + 1;
    this.changes.set(id, count);
    if (count <= this.limits.nodeChanges) return true;
    this.coalesced++;
    return false;
  }

  private holdFor(id: number): Held {
    let held = this.held.get(id);
    if (!held) {
      held = { hasText: false, attributes: {} };
      this.held.set(id, held);
      this.armTimer();
    }
    return held;
  }

  /** Drops held values of nodes that this event adds (with their current values) or removes. */
  private forgetReplaced(data: MutationData): void {
    if (this.held.size === 0) return;
    for (const removed of Array.isArray(data.removes) ? data.removes : []) this.held.delete(removed.id);
    for (const added of Array.isArray(data.adds) ? data.adds : []) {
      if (typeof added.node?.id === "number") this.held.delete(added.node.id);
    }
  }

  private armTimer(): void {
    if (this.timer) return;
    const due = Math.max(0, this.windowStart + this.limits.windowMs - this.now());
    this.timer = fencedTimeout(() => {
      this.timer = null;
      this.endWindow(this.now());
    }, due);
  }

  /** Records the held values and the markers of the window that ends, and opens the next one. */
  private endWindow(now: number): void {
    if (this.held.size > 0) {
      const texts: MutationData["texts"] = [];
      const attributes: MutationData["attributes"] = [];
      for (const [id, held] of this.held) {
        if (held.hasText) texts.push({ id, value: held.text });
        if (Object.keys(held.attributes).length > 0) attributes.push({ id, attributes: held.attributes });
      }
      this.held.clear();
      const data = { source: SOURCE_MUTATION, texts, attributes, removes: [], adds: [] };
      this.hooks.emit({ type: EVENT_INCREMENTAL_SNAPSHOT, timestamp: now, data });
    }
    const coalesced = this.coalesced;
    const droppedRecords = this.droppedRecords;
    this.coalesced = 0;
    this.droppedRecords = 0;
    this.records = 0;
    this.changes.clear();
    this.windowStart = now;

    let resnapshot = false;
    if (!this.broken) {
      if (droppedRecords === 0) this.snapshotDelayMs = this.limits.snapshotMs;
    } else if (now - this.lastSnapshotAt >= this.snapshotDelayMs) {
      // Repair the replay: at once after the first storm, then less and less often while storms go on.
      this.lastSnapshotAt = now;
      this.snapshotDelayMs = Math.min(this.snapshotDelayMs * 2, this.limits.maxSnapshotMs);
      resnapshot = true;
    } else {
      this.armTimer(); // Look again when the next window ends.
    }
    if (coalesced === 0 && droppedRecords === 0 && !resnapshot) return;
    // Markers and snapshots go through rrweb, which may be emitting the event being filtered: do it after.
    fencedTimeout(() => {
      if (coalesced > 0) this.hooks.dropped(coalesced, "node_rate");
      if (droppedRecords > 0) this.hooks.dropped(droppedRecords, "mutation_rate");
      if (resnapshot) this.hooks.resnapshot();
    }, 0);
  }
}

function lengthOf(list: unknown): number {
  return Array.isArray(list) ? list.length : 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
