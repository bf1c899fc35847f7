// Compaction of queued mutations: a text or attribute value that a later queued
// mutation overwrites is removed before the batch is sent. A replay then skips
// intermediate values that lasted less than one flush delay (at most 2 s while
// the page is busy), and ends in the same state. Added and removed nodes are
// never touched, so the structure of the page replays change by change.
import type { RecordedEvent } from "./events";

interface MutationData {
  texts?: Array<{ id: number; value?: unknown }>;
  attributes?: Array<{ id: number; attributes: Record<string, unknown> }>;
}

/**
 * Attributes whose every value is kept, because a change of one has effects
 * that a later value does not undo. `checked` unchecks the other radios of its
 * group and `selected` the other options. `open` closes the other `<details>`
 * of the same name, `type` sanitizes a field's value, `name` and `form` move a
 * radio to another group, and `multiple` resets a select.
 */
const KEPT_ATTRIBUTES = new Set(["checked", "selected", "open", "rr_open_mode", "type", "name", "form", "multiple"]);

/** A queued mutation event whose JSON must be written again before it is sent. */
export interface CompactableEvent {
  event: RecordedEvent;
  /** True once a later mutation removed a value from `event`. */
  stale: boolean;
}

/** The latest value of a node's text or attribute: its event, the object that contains it, and its key there. */
type Latest = [CompactableEvent, Record<string, unknown>, string];

/**
 * An index of the text and attribute values in the queued mutation events, by
 * node id (and attribute name). `reset` must be called whenever an event leaves
 * the queue, so that a value is never removed from an event already sent.
 */
export class MutationCompactor {
  private readonly latest = new Map<string, Latest>();

  /** Indexes the values of `holder`, and removes the values of earlier events that they overwrite. */
  add(holder: CompactableEvent): void {
    const data = holder.event.data as MutationData;
    for (const change of data.texts ?? []) this.replace([holder, change, "value"], `${change.id}`);
    for (const change of data.attributes ?? []) {
      for (const name in change.attributes) {
        const value = change.attributes[name];
        const key = `${change.id} ${name}`;
        // rrweb sends a changed style attribute as an object of the changed properties
        // only: such a value adds to the earlier one instead of replacing it.
        if ((value && typeof value === "object") || KEPT_ATTRIBUTES.has(name.toLowerCase())) this.latest.delete(key);
        else this.replace([holder, change.attributes, name], key);
      }
    }
  }

  /** Removes the replaced values from `holder`'s event, and returns the event's new JSON. */
  compact(holder: CompactableEvent): string {
    const data = holder.event.data as MutationData;
    data.texts = data.texts?.filter((change) => "value" in change);
    data.attributes = data.attributes?.filter((change) => Object.keys(change.attributes).length > 0);
    holder.stale = false;
    return JSON.stringify(holder.event);
  }

  /** Forgets every indexed value. */
  reset(): void {
    this.latest.clear();
  }

  private replace(value: Latest, key: string): void {
    const earlier = this.latest.get(key);
    // A node can be listed twice in one event too: the later entry is the one that counts.
    if (earlier && earlier[1] !== value[1]) {
      delete earlier[1][earlier[2]];
      earlier[0].stale = true;
    }
    this.latest.set(key, value);
  }
}
