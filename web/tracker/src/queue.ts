// The bounded in-memory queue of serialized events waiting to be sent.
import {
  EVENT_FULL_SNAPSHOT,
  EVENT_INCREMENTAL_SNAPSHOT,
  EVENT_META,
  SOURCE_MUTATION,
  customEvent,
  type RecordedEvent,
} from "./events";
import { MutationCompactor, type CompactableEvent } from "./compaction";

/** One event, serialized once when it is queued. */
export interface QueuedEvent {
  json: string;
  /** UTF-8 length of `json`. */
  bytes: number;
  /** The rrweb event type; for a `tandem.part` event, the type of the event it was cut from. */
  type: number;
  timestamp: number;
  isMutation: boolean;
  /** Added, removed and changed nodes of a mutation event; 0 for other events. */
  mutationRecords: number;
  /** True for the `tandem.dropped` event that counts events the queue dropped. */
  isDropMarker?: boolean;
  /** The mutation event itself, kept so that later values can be removed from it; see compaction.ts. */
  mutation?: CompactableEvent;
}

/** Limits of the queue: it never contains more than `maxEvents` events nor `maxBytes` bytes. */
export interface QueueLimits {
  maxEvents: number;
  maxBytes: number;
}

/** Limits of one batch taken from the queue. */
export interface BatchLimits {
  /** Largest batch body, in bytes. */
  maxBytes: number;
  /** Bytes of the batch envelope, counted once. */
  overheadBytes: number;
  /** Maximum mutation records in one batch; the rest waits for the next batch. */
  maxMutationRecords: number;
  /** Rule for a first unit larger than `maxBytes`. */
  oversize: OversizeRule;
  /** Largest event JSON sent whole; a larger event is cut into `tandem.part` events of at most this size. */
  partBytes: number;
}

const encoder = new TextEncoder();
const NON_ASCII = /[^\x00-\x7f]/;

/** Returns the UTF-8 length of `text`. ASCII text, the usual case, is not encoded, which saves a copy per event. */
function utf8Length(text: string): number {
  return NON_ASCII.test(text) ? encoder.encode(text).length : text.length;
}

function mutationRecords(data: unknown): number {
  const mutation = data as { adds?: unknown[]; removes?: unknown[]; texts?: unknown[]; attributes?: unknown[] };
  let count = 0;
  for (const list of [mutation.adds, mutation.removes, mutation.texts, mutation.attributes]) {
    if (Array.isArray(list)) count += list.length;
  }
  return count;
}

export function toQueuedEvent(event: RecordedEvent): QueuedEvent {
  const json = JSON.stringify(event);
  const data = event.data as { source?: unknown } | null;
  const isMutation = event.type === EVENT_INCREMENTAL_SNAPSHOT && data?.source === SOURCE_MUTATION;
  return {
    json,
    bytes: utf8Length(json),
    type: event.type,
    timestamp: event.timestamp,
    isMutation,
    mutationRecords: isMutation ? mutationRecords(data) : 0,
    mutation: isMutation ? { event, stale: false } : undefined,
  };
}

/** Bytes of a part event besides its slice of JSON, with room to spare. */
const PART_ENVELOPE_BYTES = 200;

/**
 * Cuts an event into `tandem.part` custom events of at most `partBytes` bytes
 * each, whose `data` strings joined are the event's JSON (docs/PROTOCOL.md).
 * Each part keeps the event's type in the queue, so that the queue treats the
 * parts of a FullSnapshot as the snapshot.
 */
export function splitEvent(item: QueuedEvent, partBytes: number): QueuedEvent[] {
  const json = item.json;
  const budget = partBytes - PART_ENVELOPE_BYTES;
  const slices: string[] = [];
  let size = budget;
  for (let start = 0; start < json.length; ) {
    let end = start + size;
    // Never between the two halves of a surrogate pair, so that each slice is valid Unicode. Past the
    // end of `json`, charCodeAt returns NaN, which the test takes as no surrogate.
    if ((json.charCodeAt(end - 1) & 0xfc00) === 0xd800) end--;
    const slice = json.slice(start, end);
    // Escaped quotes and backslashes take two bytes, and non-ASCII characters two to four in UTF-8:
    // a slice over budget is cut again, shorter by the ratio of its size to the budget.
    const bytes = utf8Length(JSON.stringify(slice));
    if (bytes > budget) {
      size = ((size * budget) / bytes) | 0;
      continue;
    }
    slices.push(slice);
    start = end;
    size = budget;
  }
  const id = Math.random().toString(36).slice(2);
  return slices.map((data, index) => {
    const part = toQueuedEvent(customEvent("tandem.part", { id, index, count: slices.length, data }, item.timestamp));
    part.type = item.type;
    return part;
  });
}

/** Rule for `takeBatch` when the first unit alone is larger than the limit. */
export type OversizeRule = "send-alone" | "keep";

/**
 * A FIFO of events, bounded in count and in bytes. A Meta event and the
 * FullSnapshot right after it form one unit that is never split between
 * batches, because the server treats a batch with a Meta event as a point from
 * which the page can be rebuilt. An event too large for a batch is cut into
 * parts when it reaches the head; a FullSnapshot's part 0 then forms the unit.
 *
 * When a new event does not fit, old ones are dropped first: the oldest
 * mutation, else the oldest other incremental event, else a page snapshot that
 * a later snapshot replaces, else the oldest event. Dropped events are counted
 * in one `tandem.dropped` custom event (reason `queue_full`) that takes the
 * place of the first event dropped.
 */
export class EventQueue {
  private items: QueuedEvent[] = [];
  private totalBytes = 0;
  private dropMarker: { item: QueuedEvent; count: number } | null = null;
  private readonly compactor = new MutationCompactor();

  constructor(private readonly limits: QueueLimits) {}

  get length(): number {
    return this.items.length;
  }

  /** Bytes of the queued events' JSON. */
  get bytes(): number {
    return this.totalBytes;
  }

  push(item: QueuedEvent): void {
    if (item.bytes > this.limits.maxBytes) {
      this.countDrop(item, 1); // Larger than the whole queue: it could never be sent.
      return;
    }
    // The first drop inserts the tandem.dropped marker, so it frees no room by itself.
    while (this.items.length > 0 && this.isFull(item.bytes)) this.dropOne();
    this.append(item);
  }

  /** Puts events back at the head, for example those restored from the previous page. */
  unshift(items: QueuedEvent[]): void {
    this.items.unshift(...items);
    for (const item of items) this.totalBytes += item.bytes;
    while (this.items.length > 1 && this.isOver()) this.dropOne();
  }

  /** Returns every queued event, oldest first, without removing them. */
  peekAll(): QueuedEvent[] {
    this.compact();
    return this.items.slice();
  }

  clear(): void {
    this.compactor.reset();
    this.items = [];
    this.totalBytes = 0;
    this.dropMarker = null;
  }

  /**
   * Removes and returns the longest run of whole units from the head that fits
   * the batch limits, counting the envelope and a comma between events.
   * Returns an empty array when nothing can go.
   */
  takeBatch(limits: BatchLimits): QueuedEvent[] {
    this.compact();
    let bytes = limits.overheadBytes;
    let records = 0;
    let end = 0;
    while (end < this.items.length) {
      const unitEnd = this.unitEnd(end);
      if (unitEnd === null) break; // A Meta event whose FullSnapshot is still being taken.
      // A part keeps the type of its event, so the unit keeps its length and the Meta event goes with part 0.
      for (let i = end; i < unitEnd; i++) if (this.items[i].bytes > limits.partBytes) this.split(i, limits.partBytes);

      let unitBytes = 0;
      let unitRecords = 0;
      for (let i = end; i < unitEnd; i++) {
        unitBytes += this.items[i].bytes + 1;
        unitRecords += this.items[i].mutationRecords;
      }
      const tooLarge = bytes + unitBytes > limits.maxBytes;
      if (tooLarge || (end > 0 && records + unitRecords > limits.maxMutationRecords)) {
        if (end === 0 && limits.oversize === "send-alone") end = unitEnd;
        break;
      }
      bytes += unitBytes;
      records += unitRecords;
      end = unitEnd;
    }

    const batch = this.items.splice(0, end);
    // The index must not point into events that have left the queue.
    if (end > 0) this.compactor.reset();
    for (const item of batch) this.totalBytes -= item.bytes;
    if (this.dropMarker && batch.includes(this.dropMarker.item)) this.dropMarker = null;
    return batch;
  }

  private split(index: number, partBytes: number): void {
    const item = this.items[index];
    const parts = splitEvent(item, partBytes);
    this.items.splice(index, 1, ...parts);
    for (const part of parts) this.totalBytes += part.bytes;
    this.totalBytes -= item.bytes;
  }

  private isFull(incomingBytes: number): boolean {
    return this.items.length >= this.limits.maxEvents || this.totalBytes + incomingBytes > this.limits.maxBytes;
  }

  private isOver(): boolean {
    return this.items.length > this.limits.maxEvents || this.totalBytes > this.limits.maxBytes;
  }

  private append(item: QueuedEvent): void {
    this.items.push(item);
    this.totalBytes += item.bytes;
    if (item.mutation) this.compactor.add(item.mutation);
  }

  /** Writes again the JSON of the mutation events that later ones made stale. */
  private compact(): void {
    for (const item of this.items) {
      if (!item.mutation?.stale) continue;
      item.json = this.compactor.compact(item.mutation);
      this.totalBytes -= item.bytes;
      item.bytes = utf8Length(item.json);
      this.totalBytes += item.bytes;
      item.mutationRecords = mutationRecords(item.mutation.event.data);
    }
  }

  /** Returns the index after the unit that starts at `start`, or null when the unit is incomplete. */
  private unitEnd(start: number): number | null {
    if (this.items[start].type !== EVENT_META) return start + 1;
    const next = this.items[start + 1];
    if (!next) return null;
    return next.type === EVENT_FULL_SNAPSHOT ? start + 2 : start + 1;
  }

  private dropOne(): void {
    const index = this.indexToDrop();
    const [dropped] = this.items.splice(index, 1);
    this.totalBytes -= dropped.bytes;
    this.compactor.reset();
    if (dropped === this.dropMarker?.item) {
      this.dropMarker = null;
      return;
    }
    let count = 1;
    // The Meta event's FullSnapshot goes with it, in one piece or as all its parts.
    while (dropped.type === EVENT_META && this.items[index]?.type === EVENT_FULL_SNAPSHOT) {
      const [snapshot] = this.items.splice(index, 1);
      this.totalBytes -= snapshot.bytes;
      count = 2;
    }
    this.countDrop(dropped, count, index);
  }

  /** Counts dropped events in the marker, inserting the marker at `index` (or the end) if there is none. */
  private countDrop(dropped: QueuedEvent, count: number, index = this.items.length): void {
    if (this.dropMarker) {
      this.dropMarker.count += count;
      const updated = toQueuedEvent(
        customEvent("tandem.dropped", { count: this.dropMarker.count, reason: "queue_full" }, this.dropMarker.item.timestamp),
      );
      this.totalBytes += updated.bytes - this.dropMarker.item.bytes;
      Object.assign(this.dropMarker.item, updated);
      return;
    }
    const marker = toQueuedEvent(customEvent("tandem.dropped", { count, reason: "queue_full" }, dropped.timestamp));
    marker.isDropMarker = true;
    this.items.splice(index, 0, marker);
    this.totalBytes += marker.bytes;
    this.dropMarker = { item: marker, count };
  }

  private indexToDrop(): number {
    const items = this.items;
    const mutation = items.findIndex((item) => item.isMutation);
    if (mutation >= 0) return mutation;

    const incremental = items.findIndex((item) => item.type === EVENT_INCREMENTAL_SNAPSHOT);
    if (incremental >= 0) return incremental;

    const lastMeta = findLastIndex(items, (item) => item.type === EVENT_META);
    const olderMeta = items.findIndex((item, index) => item.type === EVENT_META && index < lastMeta);
    if (olderMeta >= 0) return olderMeta;

    const marker = this.dropMarker?.item;
    const other = items.findIndex(
      (item) => item !== marker && item.type !== EVENT_META && item.type !== EVENT_FULL_SNAPSHOT,
    );
    return other >= 0 ? other : 0;
  }
}

function findLastIndex<T>(items: T[], predicate: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (predicate(items[i])) return i;
  return -1;
}
