// The rrweb recorder, configured for live viewing, plus the tracker's custom events.
import { record } from "@rrweb/record";
import { EVENT_FULL_SNAPSHOT, EVENT_META, customEvent, type RecordedEvent } from "./events";
import { fenced, reportError } from "./fence";
import { Privacy, type PrivacyOptions } from "./privacy";
import { sanitizeCustomEvent, sanitizeEvent } from "./sanitizers";
import { pageInfo } from "./session";
import { MutationThrottle } from "./throttle";

/** rrweb keeps one recording per page (its node ids are module state), so only one Recorder may run. */
let runningRecorder: Recorder | null = null;

/**
 * Runs rrweb's `record()` and passes every event to `handleEvent`, in order.
 * After each page snapshot (a Meta event and its FullSnapshot) it adds a
 * `tandem.page` custom event with the page's url, title and referrer.
 */
export class Recorder {
  /** The masking rules; every event passes through them before `handleEvent` receives it. */
  readonly privacy: Privacy;
  private stopRecord: (() => void) | null = null;
  private awaitingSnapshot = false;
  /** Limits mutation storms; see throttle.ts. */
  private readonly throttle = new MutationThrottle({
    emit: (event) => this.handleEvent(event),
    dropped: (count, reason) => this.addCustomEvent("tandem.dropped", { count, reason }),
    resnapshot: () => this.takeFullSnapshot(),
  });

  constructor(
    privacyOptions: PrivacyOptions,
    private readonly handleEvent: (event: RecordedEvent) => void,
  ) {
    this.privacy = new Privacy(privacyOptions);
  }

  /** Tells whether no other Recorder on the page is running. */
  canStart(): boolean {
    return runningRecorder === null || runningRecorder === this;
  }

  /** Starts recording; returns false when another Recorder on the page is running. */
  start(): boolean {
    if (!this.canStart()) return false;
    if (this.stopRecord) return true;
    runningRecorder = this;
    this.awaitingSnapshot = false;
    this.throttle.reset();
    const stopObservingForms = this.privacy.observeForms(document);
    const stop = record({
      emit: fenced((event) => this.handleRecordedEvent(event as RecordedEvent)),
      ...this.privacy.recordOptions(),
      // rrweb sends mouse positions every 500 ms by default; live viewing needs about 50 ms.
      // Input stays at rrweb's default ("all"): "last" listens to `change` only, so an
      // agent would see typing only when the field loses focus.
      sampling: { mousemove: 50, mousemoveCallback: 50, scroll: 50 },
      // A fresh Meta and FullSnapshot every minute bound how far back a replay or a live viewer must start.
      checkoutEveryNms: 60_000,
      recordCrossOriginIframes: false,
      recordAfter: "DOMContentLoaded",
      errorHandler: (error: unknown) => {
        reportError(error);
        return true; // Handled: rrweb must not rethrow into the page.
      },
    });
    this.stopRecord = () => {
      stopObservingForms();
      stop?.();
    };
    return true;
  }

  stop(): void {
    if (!this.stopRecord) return;
    const stop = this.stopRecord;
    this.stopRecord = null;
    if (runningRecorder === this) runningRecorder = null;
    stop();
    this.throttle.reset();
  }

  /**
   * Adds a custom event (rrweb type 5). It goes through rrweb, so that it is
   * ordered with the recorded events, except before rrweb's first snapshot,
   * when `record.addCustomEvent` throws and the event is passed on directly.
   */
  addCustomEvent(tag: string, payload: unknown): void {
    if (this.stopRecord) {
      try {
        record.addCustomEvent(tag, payload);
        return;
      } catch {
        // Not recording yet: rrweb waits for DOMContentLoaded.
      }
    }
    const event = customEvent(tag, payload, Date.now());
    sanitizeCustomEvent(event.data as Record<string, unknown>, this.privacy);
    this.handleEvent(event);
  }

  /** Records a new Meta event and FullSnapshot, for example after the page returns from the back-forward cache. */
  takeFullSnapshot(): void {
    if (!this.stopRecord) return;
    try {
      record.takeFullSnapshot(true);
    } catch {
      // Not recording yet; the first snapshot is still to come.
    }
  }

  private handleRecordedEvent(event: RecordedEvent): void {
    try {
      // If masking throws, the fence drops the event: nothing unmasked is sent.
      sanitizeEvent(event, this.privacy, record.mirror);
    } finally {
      this.privacy.clearCache();
    }
    const kept = this.throttle.filter(event);
    if (!kept) return;
    this.handleEvent(kept);
    if (event.type === EVENT_META) {
      this.awaitingSnapshot = true;
    } else if (event.type === EVENT_FULL_SNAPSHOT && this.awaitingSnapshot) {
      this.awaitingSnapshot = false;
      this.addCustomEvent("tandem.page", pageInfo());
    }
  }
}
