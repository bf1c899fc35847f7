// Rebuilds the events that the tracker sent in parts. The tracker cuts an event
// whose JSON would not fit in one batch (a large page's FullSnapshot) into
// consecutive `tandem.part` custom events, each carrying a slice of the JSON
// (docs/PROTOCOL.md, "Events larger than a batch").

/** The fields of an rrweb event that the joiner reads. */
interface EventEnvelope {
  type: number;
  timestamp: number;
  data: unknown;
}

const EVENT_CUSTOM = 5;
export const PART_TAG = "tandem.part";
/**
 * Largest event rebuilt, in characters of JSON: a longer group of parts is
 * dropped. It is twice the largest event the tracker sends, 4 MiB, the size of
 * its queue, and bounds what a group that never ends holds.
 */
const MAX_EVENT_CHARS = 8 * 1024 * 1024;

/** The payload of a `tandem.part` event. */
interface Part {
  id: string;
  index: number;
  count: number;
  data: string;
}

function isPart(event: EventEnvelope): boolean {
  return event.type === EVENT_CUSTOM && (event.data as { tag?: unknown } | null)?.tag === PART_TAG;
}

/** Returns the payload of a `tandem.part` event, or null when it is not valid. */
function payloadOf(event: EventEnvelope): Part | null {
  const payload = (event.data as { payload?: Partial<Part> }).payload;
  const valid =
    typeof payload?.id === "string" &&
    Number.isInteger(payload.index) &&
    Number.isInteger(payload.count) &&
    typeof payload.data === "string";
  return valid ? (payload as Part) : null;
}

/**
 * Replaces each complete group of `tandem.part` events by the event it
 * carries, at the place of the group's last part. Other events pass through
 * unchanged and in order. Groups may span several calls, such as several
 * `events` messages or pages of a recording. A group that misses a part (the
 * tracker dropped it, or the stream starts in the middle of the group) is
 * dropped, and so are parts that are not valid. A new part 0 drops the group
 * begun before, so a stream that starts again needs no reset.
 */
export class EventPartJoiner {
  private group: { id: string; count: number; slices: string[]; chars: number } | null = null;

  /** True while a group has begun and not ended: the event it carries is still missing. */
  get pending(): boolean {
    return this.group !== null;
  }

  join<E extends EventEnvelope>(events: E[]): E[] {
    const joined: E[] = [];
    for (const event of events) {
      if (!isPart(event)) {
        joined.push(event);
        continue;
      }
      const rebuilt = this.add(payloadOf(event));
      if (rebuilt !== null) joined.push(rebuilt as E);
    }
    return joined;
  }

  private add(part: Part | null): EventEnvelope | null {
    if (part === null) {
      this.group = null;
      return null;
    }
    if (part.index === 0) {
      this.group = { id: part.id, count: part.count, slices: [], chars: 0 };
    }
    const group = this.group;
    const expected = group !== null && group.id === part.id && group.count === part.count && group.slices.length === part.index;
    if (!expected || group.chars + part.data.length > MAX_EVENT_CHARS) {
      this.group = null;
      return null;
    }
    group.slices.push(part.data);
    group.chars += part.data.length;
    if (group.slices.length < group.count) return null;

    this.group = null;
    return parseEvent(group.slices.join(""));
  }
}

function parseEvent(json: string): EventEnvelope | null {
  try {
    const event = JSON.parse(json) as EventEnvelope;
    // Integers only, as the server's joiner (tandem_protocol/parts.py) and the ingest's checks want them.
    return Number.isSafeInteger(event?.type) && Number.isSafeInteger(event.timestamp) ? event : null;
  } catch {
    return null;
  }
}
