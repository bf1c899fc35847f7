// The public Tracker class: session lifecycle, identity, custom events and plugins.
import { record } from "@rrweb/record";
import type { RecordedEvent } from "./events";
import { installConsent } from "./consent";
import { fenced, reportError, runFenced, warnOnce } from "./fence";
import { observePageHide, observeRestoreFromCache, observeVisibility } from "./observers";
import { observeClicks, observeConsole, observeErrors, type SignalOptions } from "./signals";
import { doNotTrackReason, type PrivacyOptions } from "./privacy";
import { Recorder } from "./recorder";
import { buildStartRequest, identity, requestStart, truncate, type StartedSession } from "./session";
import { TabStore, randomId, type TabState } from "./storage";
import { Transport } from "./transport";

export interface TrackerOptions extends PrivacyOptions, SignalOptions {
  /** The project's public key, as shown in the dashboard. */
  projectKey: string;
  /** Base URL of the ingest API, absolute or relative to the page. Defaults to "/ingest". */
  ingestPoint?: string;
}

export interface StartOptions {
  userID?: string;
  metadata?: Record<string, string>;
}

export type StartResult =
  | { success: true; sessionID: string; resumed: boolean }
  | { success: false; reason: string };

/** Session details passed to `onStart` listeners. */
export interface SessionInfo {
  sessionID: string;
  token: string;
  tabId: string;
  /** Absolute ingest URL, without a trailing slash. */
  ingestPoint: string;
  resumed: boolean;
  /** The project asks the user before an agent may watch (see consent.ts). */
  sessionConfirm: boolean;
}

export type TrackerPlugin<Result = unknown> = (tracker: Tracker) => Result;

type Status = "inactive" | "starting" | "active";

/** Custom events requested while no session is active, sent once one starts. */
const MAX_EARLY_EVENTS = 100;
/** New sessions started after 401 responses on one page, before the tracker gives up. */
const MAX_SESSION_RESTARTS = 3;
const MAX_METADATA_KEY_LENGTH = 128;
const MAX_METADATA_VALUE_LENGTH = 1024;
const ANOTHER_RECORDER = "Another Tracker on this page is already recording; stop it first.";

/**
 * Records the page with rrweb and streams the events to Tandem's ingest API.
 * No method throws: errors are logged once with console.warn.
 */
export class Tracker {
  private readonly options: TrackerOptions;
  private readonly disabledReason: string | null = null;
  private readonly ingestPoint: string = "";
  private readonly store: TabStore;
  private readonly transport: Transport;
  private readonly recorder: Recorder;
  /** Identifies this page instance in the tab state, to notice another page of the tab taking over. */
  private readonly pageId = randomId();

  private status: Status = "inactive";
  private startPromise: Promise<StartResult> | null = null;
  /** Incremented by stop() and restarts, so that a start request finishing late is ignored. */
  private generation = 0;
  private tabState: TabState | null = null;
  private session: StartedSession | null = null;
  private pageTeardowns: Array<() => void> = [];
  private sessionRestarts = 0;

  private userID: string | null = null;
  private userAnonymousID: string | null = null;
  private metadata: Record<string, string> = {};
  private earlyEvents: Array<[string, unknown]> = [];

  private readonly startListeners = new Set<(info: SessionInfo) => void>();
  private readonly stopListeners = new Set<() => void>();

  constructor(options: TrackerOptions) {
    this.options = { ...options };
    this.disabledReason = checkEnvironment(options);
    if (!this.disabledReason) {
      try {
        this.ingestPoint = new URL(options.ingestPoint ?? "/ingest", location.href).href.replace(/\/+$/, "");
      } catch {
        this.disabledReason = `ingestPoint ${JSON.stringify(options.ingestPoint)} is not a valid URL.`;
      }
    }
    if (this.disabledReason) warnOnce("disabled", `The tracker is disabled: ${this.disabledReason}`);

    this.store = new TabStore(String(options?.projectKey ?? ""));
    this.transport = new Transport(`${this.ingestPoint}/v1/web/i`, this.store, {
      saveSeq: (seq) => this.saveSeq(seq),
      onUnauthorized: (code) => this.handleUnauthorized(code),
      onDropReported: () => this.recorder.takeFullSnapshot(),
    });
    this.recorder = new Recorder(this.options, (event) => this.handleEvent(event));
    installConsent(this);
  }

  /**
   * Starts or resumes the tab's session and begins recording. Resolves, and
   * never rejects, once the server has responded or the attempts ran out.
   */
  start(options: StartOptions = {}): Promise<StartResult> {
    return runFenced(() => this.startNow(options), Promise.resolve(failure("The tracker hit an internal error.")));
  }

  /** Stops recording. Events already queued are still sent. */
  stop(): void {
    runFenced(() => this.stopNow(), undefined);
  }

  setUserID(id: string): void {
    runFenced(() => {
      this.userID = identity(id);
      this.emitIdentity("tandem.user", { userID: this.userID });
    }, undefined);
  }

  setUserAnonymousID(id: string): void {
    runFenced(() => {
      this.userAnonymousID = identity(id);
      this.emitIdentity("tandem.anonymous", { userAnonymousID: this.userAnonymousID });
    }, undefined);
  }

  /** Sets one metadata value. Values are strings; others are converted with String(). */
  setMetadata(key: string, value: string): void {
    runFenced(() => {
      if (typeof key !== "string" || key.length === 0 || key.length > MAX_METADATA_KEY_LENGTH) {
        const message = `setMetadata: the key must be a string of 1 to 128 characters, got ${JSON.stringify(key)}.`;
        warnOnce(`metadata-key:${key}`, message);
        return;
      }
      const text = truncate(String(value), MAX_METADATA_VALUE_LENGTH);
      this.metadata[key] = text;
      this.emitIdentity("tandem.metadata", { key, value: text });
    }, undefined);
  }

  /** Records a named event with a JSON-serializable payload. */
  event(name: string, payload?: unknown): void {
    runFenced(() => this.emitNamed("tandem.event", name, payload), undefined);
  }

  /** Records a named issue (something that went wrong for the user) with a JSON-serializable payload. */
  issue(name: string, payload?: unknown): void {
    runFenced(() => this.emitNamed("tandem.issue", name, payload), undefined);
  }

  isActive(): boolean {
    return this.status === "active";
  }

  getSessionID(): string | null {
    return this.status === "active" && this.session ? this.session.sessionID : null;
  }

  getSessionToken(): string | null {
    return this.status === "active" && this.session ? this.session.token : null;
  }

  getIngestPoint(): string {
    return this.ingestPoint;
  }

  /** Returns the page's node with rrweb id `id` in the running recording, or null. Plugins use it to find what an agent's replay shows. */
  getNode(id: number): Node | null {
    return runFenced(() => record.mirror.getNode(id), null);
  }

  /** Calls `plugin(this)` and returns what it returns, or undefined if it throws. */
  use<Result>(plugin: TrackerPlugin<Result>): Result | undefined {
    if (typeof plugin !== "function") {
      warnOnce("plugin", "use() expects a function (tracker) => any.");
      return undefined;
    }
    return fenced(plugin)(this);
  }

  /**
   * Calls `listener` each time a session starts, and at once if one is active.
   * A new session after a 401 calls it again. Returns the unsubscribe function.
   */
  onStart(listener: (info: SessionInfo) => void): () => void {
    const fencedListener = fenced(listener);
    this.startListeners.add(fencedListener);
    const info = this.sessionInfo();
    if (info) fencedListener(info);
    return () => this.startListeners.delete(fencedListener);
  }

  /** Calls `listener` each time recording stops or the session is replaced. Returns the unsubscribe function. */
  onStop(listener: () => void): () => void {
    const fencedListener = fenced(listener);
    this.stopListeners.add(fencedListener);
    return () => this.stopListeners.delete(fencedListener);
  }

  // Lifecycle -------------------------------------------------------------------------------

  private startNow(options: StartOptions): Promise<StartResult> {
    if (this.disabledReason) return Promise.resolve(failure(this.disabledReason));
    if (options.userID !== undefined) this.setUserID(options.userID);
    for (const [key, value] of Object.entries(options.metadata ?? {})) this.setMetadata(key, value);

    if (this.status === "active" && this.session) {
      return Promise.resolve({ success: true, sessionID: this.session.sessionID, resumed: this.session.resumed });
    }
    if (this.startPromise) return this.startPromise;
    if (!this.recorder.canStart()) return Promise.resolve(failure(ANOTHER_RECORDER));

    // After stop(), unsent events go through sessionStorage into the next session, if it resumes.
    this.transport.savePending();
    this.transport.reset();
    return this.beginStart(false);
  }

  private beginStart(forceNewSession: boolean): Promise<StartResult> {
    this.status = "starting";
    const promise = this.startSession(forceNewSession).catch((error: unknown) => {
      reportError(error);
      this.status = "inactive";
      return failure("The tracker hit an internal error.");
    });
    this.startPromise = promise;
    void promise.then(() => {
      if (this.startPromise === promise) this.startPromise = null;
    });
    return promise;
  }

  private async startSession(forceNewSession: boolean): Promise<StartResult> {
    const generation = ++this.generation;
    const cancelled = (): boolean => generation !== this.generation;
    const state = this.claimTabState(forceNewSession);

    const request = this.recorder.privacy.maskPage(
      buildStartRequest({
        projectKey: this.options.projectKey,
        tabId: state.tabId,
        token: state.token,
        userID: this.userID,
        userAnonymousID: this.userAnonymousID,
        metadata: { ...this.metadata },
      }),
    );
    const outcome = await requestStart(`${this.ingestPoint}/v1/web/start`, request, cancelled);

    if (cancelled()) return failure("stop() was called before the session started.");
    if (!outcome.ok) {
      this.status = "inactive";
      warnOnce(`start:${outcome.reason}`, outcome.reason);
      return failure(outcome.reason);
    }
    return this.activate(outcome.session, state);
  }

  /** Loads the tab state and marks this page as its owner. */
  private claimTabState(forceNewSession: boolean): TabState {
    const state = this.store.loadState(this.pageId);
    if (forceNewSession) Object.assign(state, { token: null, sessionID: null, seq: 0 });
    state.owner = this.pageId;
    this.store.saveState(state);
    this.tabState = state;
    return state;
  }

  /**
   * Starts sending and recording for a session the server accepted. The previous
   * page's unsent events are read only now: a page restored from the back-forward
   * cache starts while the page it replaces has not yet run its pagehide handler,
   * which stores them.
   * NOTE: that handler ran before the start request returned in every test with
   * Chromium 156. Events it stores later wait for the tab's next page, and are
   * lost if this page stores its own unsent events first.
   */
  private activate(session: StartedSession, state: TabState): StartResult {
    // The previous page's events and batch numbers carry over only into the same session.
    const continues = session.resumed && session.sessionID === state.sessionID;
    Object.assign(state, { token: session.token, sessionID: session.sessionID });
    if (!continues) state.seq = 0;
    this.store.saveState(state);
    this.session = session;

    const pending = this.store.readPending();
    const restored = continues && pending?.sessionID === session.sessionID ? pending : null;
    this.transport.begin(
      { sessionID: session.sessionID, tabId: state.tabId, token: session.token, maxBatchBytes: session.maxBatchBytes },
      state.seq,
      restored,
    );

    this.status = "active";
    if (!this.recorder.start()) {
      this.stopNow();
      return failure(ANOTHER_RECORDER);
    }
    this.observePage();
    this.sendEarlyEvents();
    this.notifyStart();
    return { success: true, sessionID: session.sessionID, resumed: session.resumed };
  }

  private stopNow(): void {
    this.generation++;
    const wasActive = this.status === "active";
    this.status = "inactive";
    this.startPromise = null;
    this.recorder.stop();
    this.stopObservingPage();
    this.transport.finish();
    if (wasActive) this.notifyStop();
  }

  /**
   * Replaces the session: after a 401, or when another page of the tab ran
   * while this one was in the back-forward cache.
   */
  private restartSession(forceNewSession: boolean): void {
    const wasActive = this.status === "active";
    this.recorder.stop();
    this.stopObservingPage();
    this.transport.reset();
    this.session = null;
    if (wasActive) this.notifyStop();
    void this.beginStart(forceNewSession);
  }

  private handleUnauthorized(code: string): void {
    if (this.status === "inactive") {
      this.transport.reset(); // Stopped while the last batches were going out: drop them.
      return;
    }
    if (this.sessionRestarts >= MAX_SESSION_RESTARTS) {
      warnOnce("restarts", `The server rejected the session token again (${code || "HTTP 401"}); the tracker stops.`);
      this.stopNow();
      return;
    }
    this.sessionRestarts++;
    this.restartSession(true);
  }

  private saveSeq(seq: number): void {
    if (!this.tabState) return;
    this.tabState.seq = seq;
    this.store.saveState(this.tabState);
  }

  // Page lifecycle --------------------------------------------------------------------------

  private observePage(): void {
    this.pageTeardowns.push(
      observeVisibility((visible) => this.handleVisibility(visible)),
      observePageHide(() => {
        this.recorder.addCustomEvent("tandem.pagehide", {});
        this.transport.flushOnHide(true);
      }),
      observeRestoreFromCache(() => this.handleRestoreFromCache()),
    );
    this.observeSignals();
  }

  private observeSignals(): void {
    const privacy = this.recorder.privacy;
    const emit = (tag: string, payload: Record<string, unknown>) => {
      if (this.status === "active") this.recorder.addCustomEvent(tag, payload);
    };
    this.pageTeardowns.push(observeClicks(privacy, emit));
    if (this.options.captureExceptions !== false) this.pageTeardowns.push(observeErrors(privacy, emit));
    const levels = this.options.consoleLevels ?? ["error", "warn"];
    if (levels.length > 0) this.pageTeardowns.push(observeConsole(privacy, emit, levels));
  }

  private stopObservingPage(): void {
    for (const teardown of this.pageTeardowns.splice(0)) teardown();
  }

  private handleVisibility(visible: boolean): void {
    this.recorder.addCustomEvent("tandem.visibility", { visible });
    if (!visible) {
      this.transport.flushOnHide(false);
    } else if (this.ownsTabState()) {
      this.transport.reclaimPending();
    }
  }

  /**
   * Handles a page restored from the back-forward cache, which still has the
   * state it had at pagehide. If another page of the tab ran meanwhile, that page sent this
   * one's stored events and moved `seq` on, so this page resumes the session
   * from sessionStorage. Otherwise it sends again and records a fresh snapshot.
   */
  private handleRestoreFromCache(): void {
    if (this.ownsTabState()) {
      this.transport.reclaimPending();
      this.transport.resumeAfterRestore();
      this.recorder.takeFullSnapshot();
    } else {
      this.restartSession(false);
    }
  }

  private ownsTabState(): boolean {
    return this.store.storedOwner() === this.pageId;
  }

  // Events ----------------------------------------------------------------------------------

  /** Shifts an event to the server's clock and queues it. */
  private handleEvent(event: RecordedEvent): void {
    if (this.status !== "active" || !this.session) return;
    const timestamp = Math.max(0, Math.round(event.timestamp + this.session.clockOffset));
    this.transport.push({ ...event, timestamp });
  }

  /** Sends a user id or metadata change; before a session exists, the start request carries it instead. */
  private emitIdentity(tag: string, payload: unknown): void {
    if (this.status === "active") this.recorder.addCustomEvent(tag, payload);
    else if (this.status === "starting") this.keepEarlyEvent(tag, payload);
  }

  private emitNamed(tag: string, name: string, payload: unknown): void {
    if (typeof name !== "string" || name.length === 0) {
      warnOnce(`${tag}:name`, `${tag.slice(7)}() expects a non-empty string name, got ${JSON.stringify(name)}.`);
      return;
    }
    const data = { name, payload: toJSONValue(payload, tag) };
    if (this.status === "active") this.recorder.addCustomEvent(tag, data);
    else this.keepEarlyEvent(tag, data);
  }

  private keepEarlyEvent(tag: string, payload: unknown): void {
    if (this.earlyEvents.length >= MAX_EARLY_EVENTS) {
      const message = `More than ${MAX_EARLY_EVENTS} events before the session started; later ones are dropped.`;
      warnOnce("early-events", message);
      return;
    }
    this.earlyEvents.push([tag, payload]);
  }

  private sendEarlyEvents(): void {
    for (const [tag, payload] of this.earlyEvents.splice(0)) this.recorder.addCustomEvent(tag, payload);
  }

  // Listeners -------------------------------------------------------------------------------

  private sessionInfo(): SessionInfo | null {
    if (this.status !== "active" || !this.session || !this.tabState) return null;
    return {
      sessionID: this.session.sessionID,
      token: this.session.token,
      tabId: this.tabState.tabId,
      ingestPoint: this.ingestPoint,
      resumed: this.session.resumed,
      sessionConfirm: this.session.sessionConfirm,
    };
  }

  private notifyStart(): void {
    const info = this.sessionInfo();
    if (!info) return;
    for (const listener of this.startListeners) listener(info);
  }

  private notifyStop(): void {
    for (const listener of this.stopListeners) listener();
  }
}

function failure(reason: string): StartResult {
  return { success: false, reason };
}

/** Returns why the tracker cannot run here, or null when it can. */
function checkEnvironment(options: TrackerOptions): string | null {
  if (typeof window === "undefined" || typeof document === "undefined") return "there is no browser window.";
  if (typeof fetch !== "function") return "this browser has no fetch().";
  if (!options || typeof options.projectKey !== "string" || options.projectKey.length === 0) {
    return "the projectKey option is missing.";
  }
  return doNotTrackReason(options);
}

/** Returns a JSON copy of `value`, or null (with a warning) when it cannot be serialized. */
function toJSONValue(value: unknown, tag: string): unknown {
  if (value === undefined) return null;
  try {
    return JSON.parse(JSON.stringify(value)) as unknown;
  } catch (error) {
    warnOnce(`${tag}:payload`, `The ${tag} payload is not JSON-serializable and is sent as null:`, error);
    return null;
  }
}
