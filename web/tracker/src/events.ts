// rrweb event numbers used by the tracker, from @rrweb/types 2.x (`EventType`,
// `IncrementalSource`). Kept as plain constants so that the enums stay out of the bundle.

export const EVENT_FULL_SNAPSHOT = 2;
export const EVENT_INCREMENTAL_SNAPSHOT = 3;
export const EVENT_META = 4;
export const EVENT_CUSTOM = 5;

export const SOURCE_MUTATION = 0;

/** An rrweb `eventWithTime`, with only the fields the tracker reads. */
export interface RecordedEvent {
  type: number;
  timestamp: number;
  data: unknown;
}

/** Returns an rrweb custom event (type 5). */
export function customEvent(tag: string, payload: unknown, timestamp: number): RecordedEvent {
  return { type: EVENT_CUSTOM, timestamp, data: { tag, payload } };
}
