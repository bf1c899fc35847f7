// The live view of one session: the rrweb Replayer in live mode, fed by the
// `events` messages of a `watch`, and scaled to fit its container.
import { Replayer } from "@rrweb/replay";
import { loadAuth } from "./api";
import { AssistPanel } from "./assist-panel";
import "./assist.css";
import type { ServerClock } from "./clock";
import { h } from "./dom";
import { EventPartJoiner } from "./event-parts";
import { PLACEHOLDER, formatBrowser, formatOs, formatUser } from "./format";
import { activityMarker } from "./live-list";
import type { LiveSession, ServerMessage } from "./protocol";

/**
 * How far before the agent's current server time the live replay starts, in ms.
 * Events older than this baseline are applied at once and newer ones are
 * played when their time comes.
 */
const LIVE_BASELINE_LAG_MS = 100;

export interface LiveViewOptions {
  sessionId: string;
  /** The session from the live list, or undefined until a list message brings it. */
  session: LiveSession | undefined;
  clock: ServerClock;
  onBack: () => void;
}

/** Width and height of the recorded page's viewport, in its CSS pixels. */
export interface ViewportSize {
  width: number;
  height: number;
}

export class LiveView {
  readonly element: HTMLElement;
  readonly sessionId: string;
  private readonly header: HTMLElement;
  private readonly container: HTMLElement;
  private readonly waiting: HTMLElement;
  private readonly endedNotice: HTMLElement;
  private readonly replayer: Replayer;
  private readonly resizeObserver: ResizeObserver;
  private readonly stageElement: HTMLElement;
  private readonly assist: AssistPanel | null = null;
  /** Rebuilds the events that arrive in parts, such as a large page's FullSnapshot. */
  private readonly parts = new EventPartJoiner();
  private viewportSize: ViewportSize | null = null;
  private scaleFactor = 1;

  /** Creates the view inside `parent` and starts the live replay: call before sending `watch`. */
  constructor(parent: HTMLElement, options: LiveViewOptions) {
    this.sessionId = options.sessionId;
    this.header = h("div", { class: "view-session" });
    this.container = h("div", { class: "replay-container", "data-testid": "replay-container" });
    this.waiting = h("div", { class: "replay-waiting" }, "Waiting for the page…");
    this.endedNotice = h("p", { class: "notice notice-info", hidden: true }, "The session ended. This is the last state of the page.");
    const backButton = h("button", { type: "button", class: "button", "data-testid": "back-to-list" }, "Back to list");
    backButton.addEventListener("click", () => options.onBack());

    this.stageElement = h("div", { class: "replay-stage" }, this.container, this.waiting);
    const body = h("div", { class: "live-body" }, this.stageElement);
    this.element = h(
      "section",
      { class: "live-view", "data-testid": "live-view", "data-session-id": options.sessionId },
      h("header", { class: "view-header" }, backButton, this.header),
      this.endedNotice,
      body,
    );
    this.renderHeader(options.session);

    // The Replayer's sandboxed iframe needs a root that is already in the document.
    parent.append(this.element);
    // useVirtualDom is off because rrweb 2.1.6 applies events older than the live baseline
    // (the catch-up from the last snapshot, or a batch that took long to arrive) to its
    // virtual DOM, which live mode never flushes to the iframe.
    this.replayer = new Replayer([], { root: this.container, liveMode: true, mouseTail: false, useVirtualDom: false });
    this.replayer.on("resize", (dimension) => this.handleResize(dimension as ViewportSize));
    this.replayer.on("fullsnapshot-rebuilded", () => {
      this.waiting.hidden = true;
    });
    this.replayer.startLive(options.clock.now() - LIVE_BASELINE_LAG_MS);

    this.resizeObserver = new ResizeObserver(() => this.applyScale());
    this.resizeObserver.observe(this.container);

    const auth = loadAuth();
    if (auth !== null) {
      const projectId = options.session?.projectId ?? localStorage.getItem("tandem.projectId") ?? "demo";
      this.assist = new AssistPanel({ sessionId: options.sessionId, projectId, token: auth.token, surface: this });
      body.append(this.assist.element);
    }
  }

  /** The element around the replay, which the Assist overlay covers. */
  get stage(): HTMLElement {
    return this.stageElement;
  }

  /** Returns the rrweb id of a node of the replayed page (the same id as on the user's page), or -1. */
  nodeId(node: Node): number {
    return this.replayer.getMirror().getId(node);
  }

  /** Dashboard CSS pixels per CSS pixel of the recorded page: below 1 when the page is shrunk to fit. */
  get scale(): number {
    return this.scaleFactor;
  }

  /** The recorded page's viewport, or null before the first Meta event. */
  get viewport(): ViewportSize | null {
    return this.viewportSize;
  }

  /** The Replayer's iframe, which contains the rebuilt page. */
  get iframe(): HTMLIFrameElement {
    return this.replayer.iframe;
  }

  /**
   * Converts a point of the dashboard's viewport, such as a MouseEvent's
   * clientX and clientY, to a point of the recorded page's viewport. Returns
   * null when the point is outside the replayed page.
   */
  clientToPage(clientX: number, clientY: number): { x: number; y: number } | null {
    if (this.viewportSize === null) return null;
    const rect = this.replayer.iframe.getBoundingClientRect();
    const x = (clientX - rect.left) / this.scaleFactor;
    const y = (clientY - rect.top) / this.scaleFactor;
    if (x < 0 || y < 0 || x > this.viewportSize.width || y > this.viewportSize.height) return null;
    return { x, y };
  }

  handle(message: ServerMessage): void {
    switch (message.type) {
      case "events":
        if (message.sessionId !== this.sessionId) return;
        // NOTE: the Replayer of rrweb 2.1.6 keeps every added event in memory, so the
        // memory of a watch grows with its length until the view is destroyed.
        for (const event of this.parts.join(message.events)) this.replayer.addEvent(event);
        break;
      case "list.snapshot": {
        const session = message.sessions.find((candidate) => candidate.sessionId === this.sessionId);
        if (session) this.renderHeader(session);
        break;
      }
      case "list.upsert":
        if (message.session.sessionId === this.sessionId) this.renderHeader(message.session);
        break;
      case "list.remove":
        if (message.sessionId === this.sessionId) this.endedNotice.hidden = false;
        break;
      case "watch.started":
        if (message.sessionId === this.sessionId) this.endedNotice.hidden = true;
        break;
    }
  }

  destroy(): void {
    this.assist?.destroy();
    this.resizeObserver.disconnect();
    this.replayer.destroy();
    this.element.remove();
  }

  private renderHeader(session: LiveSession | undefined): void {
    if (session === undefined) {
      this.header.replaceChildren(
        h("span", { class: "view-user", "data-testid": "live-view-user" }, "Loading…"),
        h("span", { class: "view-detail" }, `Session ${this.sessionId}`),
      );
      return;
    }
    this.header.replaceChildren(
      h("span", { class: "view-user", "data-testid": "live-view-user" }, formatUser(session)),
      activityMarker(session.active),
      ...[formatBrowser(session), formatOs(session)]
        .filter((detail) => detail !== PLACEHOLDER)
        .map((detail) => h("span", { class: "view-detail" }, detail)),
      h(
        "span",
        { class: "view-page", title: session.url },
        h("span", { class: "page-title" }, session.title || "Untitled page"),
        h("span", { class: "page-url" }, session.url),
      ),
    );
  }

  private handleResize(dimension: ViewportSize): void {
    this.viewportSize = { width: dimension.width, height: dimension.height };
    this.applyScale();
  }

  /** Shrinks or grows the Replayer's wrapper with a CSS transform to fit the container, centered. */
  private applyScale(): void {
    if (this.viewportSize === null) return;
    const { width, height } = this.viewportSize;
    const availableWidth = this.container.clientWidth;
    const availableHeight = this.container.clientHeight;
    if (width <= 0 || height <= 0 || availableWidth <= 0 || availableHeight <= 0) return;

    this.scaleFactor = Math.min(availableWidth / width, availableHeight / height);
    const left = (availableWidth - width * this.scaleFactor) / 2;
    const top = (availableHeight - height * this.scaleFactor) / 2;
    const wrapper = this.replayer.wrapper;
    wrapper.style.width = `${width}px`;
    wrapper.style.height = `${height}px`;
    wrapper.style.transform = `translate(${left}px, ${top}px) scale(${this.scaleFactor})`;
  }
}
