// Sends queued events to `POST {ingestPoint}/v1/web/i` in numbered batches.
import { isRetryableStatus, parseRetryAfter, readErrorCode, retryDelay } from "./backoff";
import { canCompress, gzip } from "./compressor";
import type { RecordedEvent } from "./events";
import { fencedTimeout, reportError, warnOnce } from "./fence";
import { isOffline, onceOnline } from "./online";
import { FlushPacer } from "./pacing";
import { EventQueue, toQueuedEvent, type OversizeRule, type QueuedEvent } from "./queue";
import type { PendingEvents, TabStore } from "./storage";

const MAX_QUEUE_EVENTS = 5000;
/** Bytes of JSON the queue may hold: about what sessionStorage accepts, so that it can keep it all on pagehide. */
const MAX_QUEUE_BYTES = 4 * 1024 * 1024;
/** Mutation records (added, removed, changed nodes) in one batch; more wait for the next batch. */
const MAX_MUTATION_RECORDS_PER_BATCH = 10_000;
/** Bodies larger than this are sent gzip-compressed, where the browser has CompressionStream. */
const GZIP_MIN_BYTES = 2048;
/**
 * Largest body sent with `keepalive`. The Fetch standard fails a keepalive
 * request once the bodies of those in flight from one page would exceed 64 KiB.
 */
const KEEPALIVE_MAX_BYTES = 60 * 1024;
const REQUEST_TIMEOUT_MS = 30_000;
/** Room left in a batch beside one part of a split event: the envelope, and the Meta event that goes with part 0. */
const PART_HEADROOM_BYTES = 4096;
/**
 * Quiet time after which an empty batch is sent. The server drops a session
 * from the live list when it has sent no batch for 30 s.
 */
const HEARTBEAT_INTERVAL_MS = 10_000;

export interface TransportSession {
  sessionID: string;
  tabId: string;
  token: string;
  maxBatchBytes: number;
}

export interface TransportHooks {
  /** Persists the first batch number that the tab's next page may use. */
  saveSeq(seq: number): void;
  /** Handles a 401: the token is invalid or the session has ended. `code` is the error code. */
  onUnauthorized(code: string): void;
  /**
   * Called once a batch reporting dropped events was delivered. A replay has
   * gaps from the drop on, until the next full snapshot.
   */
  onDropReported(): void;
}

interface Batch {
  seq: number;
  events: QueuedEvent[];
  body: string;
  bytes: number;
  /** The gzip-compressed body; null when compression failed, undefined before it was tried. */
  gzipped?: Uint8Array<ArrayBuffer> | null;
}

/** Bytes that go on the wire for a batch: compressed if it was compressed. */
function wireBytes(batch: Batch): number {
  return batch.gzipped ? batch.gzipped.byteLength : batch.bytes;
}

function envelope(tabId: string, seq: number, events: string): string {
  return `{"version":1,"tabId":${JSON.stringify(tabId)},"seq":${seq},"events":[${events}]}`;
}

/**
 * Batches, numbers and sends events, one request at a time. Network errors,
 * timeouts, 429 and 5xx are retried with backoff, keeping the batch and its
 * number. Any other 4xx drops the batch and gives its number to the next one,
 * since the server stored nothing under it. While the browser is offline
 * nothing is sent, and sending resumes on the `online` event. Bodies over
 * 2 KiB are gzip-compressed, except at pagehide, where there is no time to wait.
 *
 * Batch numbers must never repeat, because the server drops a batch whose
 * number it has already seen. The next page of the tab may read sessionStorage
 * before this page's pagehide handler has written to it, as Chromium 156 does
 * when going back to a page in the back-forward cache (see the test
 * test_back_forward_cache_resumes). So while
 * the page lives, the stored number stays one ahead of the next batch, which
 * reserves a number for the batch sent at pagehide, and no further batch is
 * formed after pagehide.
 */
export class Transport {
  private readonly queue = new EventQueue({ maxEvents: MAX_QUEUE_EVENTS, maxBytes: MAX_QUEUE_BYTES });
  /** The wait before sending: 50 ms, or 1 to 2 s while the page is busy (pacing.ts). */
  private readonly pacer = new FlushPacer();
  private session: TransportSession | null = null;
  private nextSeq = 0;
  /** The batch being sent or waiting for a retry. Only one exists at a time, so batches arrive in order. */
  private batch: Batch | null = null;
  /**
   * The request in flight, or the compression before it (`compressing`).
   * `beforeHide` marks a keepalive request made before pagehide.
   */
  private inFlight: { keepalive: boolean; compressing?: boolean; beforeHide?: boolean } | null = null;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private failedAttempts = 0;
  /** Incremented by `reset`, so that responses to an earlier session's requests are ignored. */
  private generation = 0;
  /** True while sessionStorage contains a copy of the unsent events. */
  private pendingStored = false;
  /** True after `finish()`: no more heartbeats. */
  private finishing = false;
  /** True from pagehide until the page returns from the back-forward cache: no new batches. */
  private unloading = false;
  /** Cancels the wait for the `online` event, while the browser is offline. */
  private offlineWait: (() => void) | null = null;

  constructor(
    private readonly endpoint: string,
    private readonly store: TabStore,
    private readonly hooks: TransportHooks,
  ) {}

  /** Queues an event; once a session has begun, it is sent within 50 ms, or 1 to 2 s while the page is busy. */
  push(event: RecordedEvent): void {
    const queued = toQueuedEvent(event);
    this.pacer.note(queued.type, queued.bytes);
    this.queue.push(queued);
    this.scheduleFlush();
  }

  /**
   * Starts sending for `session`, first the events a previous page left behind.
   * Their copy in sessionStorage is removed now, when this page takes them over.
   */
  begin(session: TransportSession, nextSeq: number, restored: PendingEvents<RecordedEvent> | null): void {
    this.store.clearPending();
    this.session = session;
    this.nextSeq = nextSeq;
    this.failedAttempts = 0;
    if (restored?.batch) {
      const { seq, events } = restored.batch;
      this.batch = this.buildBatch(seq, events.map(toQueuedEvent));
      this.nextSeq = Math.max(this.nextSeq, seq + 1);
    }
    if (restored?.events.length) this.queue.unshift(restored.events.map(toQueuedEvent));
    this.saveSeq();
    this.scheduleFlush();
    this.armHeartbeat();
  }

  /** Forgets the session and every unsent event. */
  reset(): void {
    this.generation++;
    this.session = null;
    this.batch = null;
    this.inFlight = null;
    this.failedAttempts = 0;
    this.pendingStored = false;
    this.finishing = false;
    this.unloading = false;
    this.queue.clear();
    this.clearTimers();
    this.offlineWait?.();
    this.offlineWait = null;
  }

  /**
   * Sends what is queued without waiting for the flush delay, and stops the
   * heartbeat, so that the session leaves the live list once the queue is empty.
   */
  finish(): void {
    this.clearFlushTimer();
    this.clearHeartbeatTimer();
    this.finishing = true;
    this.flush();
  }

  /**
   * Sends one keepalive batch of at most 60 KiB if no request is in flight and
   * the browser is online, and copies what is left to sessionStorage for the
   * tab's next page. Pass `unloading` true on pagehide, and false when the page
   * is only hidden.
   */
  flushOnHide(unloading: boolean): void {
    this.clearFlushTimer();
    // A batch still being compressed goes now, uncompressed, because the page may be gone before the worker finishes.
    const requestInFlight = this.inFlight && !this.inFlight.compressing;
    const canSend = this.session && !requestInFlight && !this.unloading && !isOffline();
    if (unloading) {
      this.unloading = true;
      this.clearHeartbeatTimer();
    }
    if (canSend) {
      if (this.batch && wireBytes(this.batch) <= KEEPALIVE_MAX_BYTES) {
        this.clearRetryTimer();
        this.post(this.batch, true);
      } else if (!this.batch) {
        const batch = this.formBatch(KEEPALIVE_MAX_BYTES, "keep");
        if (batch) this.post(batch, true);
      }
    }
    this.savePending();
  }

  /** Sends again after the page returned from the back-forward cache with its tab state unchanged. */
  resumeAfterRestore(): void {
    if (!this.unloading) return;
    this.unloading = false;
    this.saveSeq();
    this.scheduleFlush();
    this.armHeartbeat();
  }

  /** Removes the sessionStorage copy of unsent events, once the page is visible again. */
  reclaimPending(): void {
    if (!this.pendingStored) return;
    this.store.clearPending();
    this.pendingStored = false;
  }

  /**
   * Copies unsent events to sessionStorage. A batch in flight with keepalive
   * counts as sent, because the browser completes it after the page unloads.
   */
  savePending(): void {
    if (!this.session) return;
    const batch = this.batch && !this.inFlight?.keepalive ? this.batch : null;
    const events = this.queue.peekAll();
    if (!batch && events.length === 0) {
      this.reclaimPending();
      return;
    }

    const pending: PendingEvents<string> = {
      sessionID: this.session.sessionID,
      batch: batch && { seq: batch.seq, events: batch.events.map((event) => event.json) },
      events: events.map((event) => event.json),
    };
    this.pendingStored = this.store.savePending(pending);
    if (!this.pendingStored) {
      const count = events.length + (batch ? batch.events.length : 0);
      warnOnce("storage-full", `sessionStorage rejected ${count} unsent events; they are lost if the page unloads.`);
    }
  }

  private scheduleFlush(): void {
    if (!this.session || this.unloading || this.flushTimer || this.inFlight || this.retryTimer) return;
    if (!this.batch && this.queue.length === 0) return;
    if (isOffline()) {
      this.waitForNetwork();
      return;
    }
    this.flushTimer = fencedTimeout(() => {
      this.flushTimer = null;
      this.flush();
    }, this.pacer.delay());
  }

  private flush(): void {
    if (!this.session || this.unloading || this.inFlight || this.retryTimer) return;
    if (isOffline()) {
      this.waitForNetwork();
      return;
    }
    const batch = this.batch ?? this.formBatch(this.session.maxBatchBytes, "send-alone");
    if (batch) this.send(batch);
  }

  /** Sends nothing until the browser is back online, then sends at once, with the backoff reset. */
  private waitForNetwork(): void {
    if (this.offlineWait) return;
    const generation = this.generation;
    this.offlineWait = onceOnline(() => {
      this.offlineWait = null;
      if (generation !== this.generation) return;
      this.failedAttempts = 0;
      this.clearRetryTimer();
      this.flush();
    });
  }

  /** Takes events from the queue into a new numbered batch, or returns null when none can go. */
  private formBatch(maxBytes: number, oversize: OversizeRule): Batch | null {
    const session = this.session as TransportSession;
    const events = this.queue.takeBatch({
      maxBytes: Math.min(maxBytes, session.maxBatchBytes),
      overheadBytes: envelope(session.tabId, this.nextSeq, "").length,
      maxMutationRecords: MAX_MUTATION_RECORDS_PER_BATCH,
      oversize,
      partBytes: Math.max(session.maxBatchBytes - PART_HEADROOM_BYTES, 1024),
    });
    if (events.length === 0) return null;

    this.batch = this.buildBatch(this.nextSeq, events);
    this.nextSeq++;
    this.saveSeq();
    return this.batch;
  }

  /**
   * Persists the next batch number plus the one reserved for pagehide. After pagehide the stored number
   * is already right, and a page restored from the back-forward cache may have taken over the tab state.
   */
  private saveSeq(): void {
    if (!this.unloading) this.hooks.saveSeq(this.nextSeq + 1);
  }

  private buildBatch(seq: number, events: QueuedEvent[]): Batch {
    const tabId = (this.session as TransportSession).tabId;
    const body = envelope(tabId, seq, events.map((event) => event.json).join(","));
    let bytes = envelope(tabId, seq, "").length + Math.max(0, events.length - 1);
    for (const event of events) bytes += event.bytes;
    return { seq, events, body, bytes };
  }

  /** Sends a batch, first compressing it when it is large enough and the browser can. */
  private send(batch: Batch): void {
    if (batch.gzipped !== undefined || batch.bytes < GZIP_MIN_BYTES || !canCompress()) {
      this.post(batch, wireBytes(batch) <= KEEPALIVE_MAX_BYTES);
      return;
    }
    // In flight while compressing: nothing else is sent. Pagehide sends the batch uncompressed instead,
    // or stores it for the next page when it is too large for a keepalive request.
    const generation = this.generation;
    const compressing = { keepalive: false, compressing: true };
    this.inFlight = compressing;
    gzip(batch.body)
      .then(
        (bytes) => {
          batch.gzipped = bytes;
        },
        (error: unknown) => {
          batch.gzipped = null;
          warnOnce("gzip", "Compressing a batch failed; batches are sent uncompressed.", error);
        },
      )
      .then(() => {
        if (generation !== this.generation || this.inFlight !== compressing) return;
        this.inFlight = null;
        // After pagehide the batch waits in sessionStorage for the next page, or for a return from the cache.
        if (!this.unloading) this.post(batch, wireBytes(batch) <= KEEPALIVE_MAX_BYTES);
      })
      .catch(reportError);
  }

  /** Makes the request for a batch: its compressed body if it has one. */
  private post(batch: Batch, keepalive: boolean): void {
    const session = this.session as TransportSession;
    const generation = this.generation;
    this.inFlight = { keepalive, beforeHide: keepalive && !this.unloading };
    this.armHeartbeat();
    const headers: Record<string, string> = {
      Authorization: `Bearer ${session.token}`,
      "Content-Type": "application/json",
    };
    if (batch.gzipped) headers["Content-Encoding"] = "gzip";

    const controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = fencedTimeout(() => controller?.abort(), REQUEST_TIMEOUT_MS);
    let request: Promise<Response>;
    try {
      request = fetch(this.endpoint, {
        method: "POST",
        headers,
        body: batch.gzipped ?? batch.body,
        keepalive,
        credentials: "omit",
        signal: controller?.signal,
      });
    } catch (error) {
      request = Promise.reject(error); // A page may replace fetch with one that throws.
    }
    request
      .then(
        (response) => this.handleResponse(batch, response, generation),
        (error: unknown) => this.handleNetworkError(batch, error, generation),
      )
      .catch(reportError)
      .finally(() => clearTimeout(timer));
  }

  private async handleResponse(batch: Batch, response: Response, generation: number): Promise<void> {
    if (generation !== this.generation) return;
    if (response.ok) {
      this.inFlight = null;
      this.handleDelivered();
      return;
    }

    const status = response.status;
    const code = await readErrorCode(response);
    if (generation !== this.generation) return;
    this.inFlight = null;
    if (status === 401) {
      this.hooks.onUnauthorized(code);
      return;
    }
    if (isRetryableStatus(status)) {
      this.scheduleRetry(parseRetryAfter(response.headers.get("Retry-After")));
      return;
    }

    warnOnce(
      `batch-rejected:${status}`,
      `The server rejected batch ${batch.seq} (${batch.bytes} bytes) with HTTP ${status}` +
        `${code ? ` (${code})` : ""}; its ${batch.events.length} events are dropped.`,
    );
    this.batch = null;
    if (this.nextSeq === batch.seq + 1) {
      this.nextSeq = batch.seq;
      this.saveSeq();
    }
    this.handleSettled();
  }

  private handleNetworkError(batch: Batch, error: unknown, generation: number): void {
    if (generation !== this.generation) return;
    const request = this.inFlight;
    this.inFlight = null;
    // Chromium 156 rejects a keepalive fetch in flight when its page unloads, yet still sends the request.
    // Kept for a retry, the batch would reach sessionStorage and the next page would send it a second time.
    if (this.unloading && request?.beforeHide) {
      this.batch = null;
      return;
    }
    if (isOffline()) {
      this.waitForNetwork();
      return;
    }
    const message = error instanceof Error ? error.message : String(error);
    warnOnce("network", `Sending batch ${batch.seq} failed (${message}); retrying with backoff.`);
    this.scheduleRetry(null);
  }

  private handleDelivered(): void {
    const reportedDrop = this.batch?.events.some((event) => event.isDropMarker) ?? false;
    this.batch = null;
    this.failedAttempts = 0;
    this.handleSettled();
    if (reportedDrop) this.hooks.onDropReported();
  }

  /** Continues after a batch left the slot: refreshes the stored copy and sends what is queued. */
  private handleSettled(): void {
    if (this.pendingStored) this.savePending();
    if (this.queue.length === 0) return;
    // While the page is busy, what arrived during the request waits to fill a larger batch.
    if (this.pacer.isBusy()) this.scheduleFlush();
    else this.flush();
  }

  private scheduleRetry(retryAfterMs: number | null): void {
    const delay = retryDelay(this.failedAttempts, retryAfterMs);
    this.failedAttempts++;
    this.clearRetryTimer();
    this.retryTimer = fencedTimeout(() => {
      this.retryTimer = null;
      this.flush();
    }, delay);
  }

  private clearFlushTimer(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
  }

  private clearRetryTimer(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** Schedules an empty batch in 10 s; each request sent pushes it back. */
  private armHeartbeat(): void {
    this.clearHeartbeatTimer();
    if (this.finishing || this.unloading) return;
    this.heartbeatTimer = fencedTimeout(() => {
      this.heartbeatTimer = null;
      this.sendHeartbeat();
    }, HEARTBEAT_INTERVAL_MS);
  }

  private sendHeartbeat(): void {
    if (!this.session) return;
    const idle = !this.inFlight && !this.batch && !this.retryTimer && this.queue.length === 0;
    if (!idle || isOffline()) {
      this.armHeartbeat(); // Something is being sent or retried, or there is no network; look again later.
      return;
    }
    this.batch = this.buildBatch(this.nextSeq, []);
    this.nextSeq++;
    this.saveSeq();
    this.post(this.batch, true);
  }

  private clearHeartbeatTimer(): void {
    if (this.heartbeatTimer) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  private clearTimers(): void {
    this.clearFlushTimer();
    this.clearRetryTimer();
    this.clearHeartbeatTimer();
  }
}
