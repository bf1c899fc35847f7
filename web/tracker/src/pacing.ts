// How long the transport waits before sending what is queued. A quiet page's
// events go out 50 ms after the first one, so that an agent watching live gets
// them at once. While the page changes a lot (more than 64 KiB of incremental
// events a second, a long table updating, say), events wait up to 1 s, and in a
// storm (more than 128 KiB a second) up to 2 s. One request and one compressed
// body then carry twenty to forty times as much, and a value that changed
// several times in that time is sent once (compaction.ts). The page pays for
// fewer requests and bytes, and an agent watching live gets the changes up to
// 2 s late while the storm lasts.
import { EVENT_INCREMENTAL_SNAPSHOT } from "./events";

export const QUIET_FLUSH_DELAY_MS = 50;
export const BUSY_FLUSH_DELAY_MS = 1000;
export const STORM_FLUSH_DELAY_MS = 2000;
/** Bytes of incremental events queued in one second above which the page counts as busy. */
const BUSY_BYTES_PER_SECOND = 64 * 1024;
/** Bytes of incremental events queued in one second above which the page is in a storm. */
const STORM_BYTES_PER_SECOND = 128 * 1024;
const WINDOW_MS = 1000;

/**
 * Measures the rate of incremental events (mutations, input, mouse) in
 * one-second windows. Full snapshots do not count, so the first snapshot of a
 * page still goes out within 50 ms.
 */
export class FlushPacer {
  private windowStart = 0;
  private windowBytes = 0;
  /** Bytes of the last whole window, or 0 when it ended more than a window ago. */
  private previousBytes = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** Counts an event that was just queued. */
  note(type: number, bytes: number): void {
    if (type !== EVENT_INCREMENTAL_SNAPSHOT) return;
    this.roll(this.now());
    this.windowBytes += bytes;
  }

  /** Tells whether the page is busy: this window or the last one went over the rate. */
  isBusy(): boolean {
    return this.rate() > BUSY_BYTES_PER_SECOND;
  }

  /** Returns the delay before the next send, in milliseconds. */
  delay(): number {
    const rate = this.rate();
    if (rate > STORM_BYTES_PER_SECOND) return STORM_FLUSH_DELAY_MS;
    return rate > BUSY_BYTES_PER_SECOND ? BUSY_FLUSH_DELAY_MS : QUIET_FLUSH_DELAY_MS;
  }

  /** Returns the bytes of this window or the last one, whichever is larger. */
  private rate(): number {
    this.roll(this.now());
    return Math.max(this.windowBytes, this.previousBytes);
  }

  private roll(now: number): void {
    const elapsed = now - this.windowStart;
    if (elapsed < WINDOW_MS) return;
    this.previousBytes = elapsed < 2 * WINDOW_MS ? this.windowBytes : 0;
    this.windowStart = now;
    this.windowBytes = 0;
  }
}
