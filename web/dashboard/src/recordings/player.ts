// The player of a recorded session: rrweb's Replayer, a timeline with markers, the event list,
// speeds, skipping inactivity, and `#/recordings/<id>?t=<seconds>` to open at a given time.
import { Replayer } from "@rrweb/replay";
import { h } from "../dom";
import { EventPartJoiner } from "../event-parts";
import { PLACEHOLDER, formatDuration, formatStartTime } from "../format";
import type { Marker, RecordedSession, RecordingsApi } from "./api";

const FIRST_PAGE_EVENTS = 2000;
const NEXT_PAGE_EVENTS = 20_000;
/** Pages loaded after the first while a split event is incomplete; each page carries at least one part. */
const MAX_PART_PAGES = 8;
const SPEEDS = [1, 2, 4, 8];
const MARKER_LABELS: Record<Marker["kind"], string> = {
  page: "Page",
  click: "Click",
  error: "Error",
  console: "Console",
  custom: "Event",
  issue: "Issue",
};

function markerText(marker: Marker): string {
  if (marker.kind === "page") return marker.url || marker.text || "";
  if (marker.kind === "custom" || marker.kind === "issue") return marker.name || "";
  if (marker.kind === "console") return `${marker.name || "log"}: ${marker.text || ""}`;
  return marker.text || marker.selector || "";
}

export class PlayerPage {
  readonly element: HTMLElement;
  private replayer: Replayer | null = null;
  private startTime = 0;
  private totalTime = 0;
  private playing = false;
  private frame = 0;
  private closed = false;
  private readonly stage = h("div", { class: "player-stage", "data-testid": "player-stage" });
  private readonly header = h("div", { class: "player-header" });
  private readonly status = h("p", { class: "list-summary", role: "status", "data-testid": "player-status" }, "Loading…");
  private readonly playButton = h("button", { type: "button", class: "button button-primary", "data-testid": "player-play" }, "Play");
  private readonly clock = h("span", { class: "player-clock", "data-testid": "player-clock" }, "0:00 / 0:00");
  private readonly timeline = h("div", { class: "player-timeline", "data-testid": "player-timeline" });
  private readonly progress = h("div", { class: "player-progress" });
  private readonly eventList = h("ol", { class: "player-events", "data-testid": "player-events" });
  private readonly skipInactive = h("input", { type: "checkbox", checked: true, "data-testid": "player-skip" });
  private readonly speed = h(
    "select",
    { "aria-label": "Speed", "data-testid": "player-speed" },
    ...SPEEDS.map((value) => h("option", { value }, `${value}x`)),
  );

  constructor(
    private readonly api: RecordingsApi,
    private readonly sessionId: string,
    private readonly startAtSeconds: number,
  ) {
    this.timeline.append(this.progress);
    this.playButton.addEventListener("click", () => (this.playing ? this.pause() : this.play()));
    this.speed.addEventListener("change", () => this.replayer?.setConfig({ speed: Number(this.speed.value) }));
    this.skipInactive.addEventListener("change", () => this.replayer?.setConfig({ skipInactive: this.skipInactive.checked }));
    this.timeline.addEventListener("click", (event) => {
      const box = this.timeline.getBoundingClientRect();
      this.seek(((event.clientX - box.left) / box.width) * this.totalTime);
    });
    const controls = h(
      "div",
      { class: "player-controls" },
      this.playButton,
      this.clock,
      this.speed,
      h("label", { class: "player-skip" }, this.skipInactive, " Skip inactivity"),
    );
    this.element = h(
      "section",
      { class: "player-page", "data-testid": "player-page" },
      this.header,
      this.status,
      h("div", { class: "player-layout" }, h("div", { class: "player-main" }, this.stage, this.timeline, controls), this.eventList),
    );
    void this.load();
  }

  close(): void {
    this.closed = true;
    cancelAnimationFrame(this.frame);
    this.replayer?.pause();
    this.replayer?.destroy();
    this.replayer = null;
  }

  private async load(): Promise<void> {
    try {
      const { session, markers } = await this.api.session(this.sessionId);
      this.renderHeader(session);
      const parts = new EventPartJoiner();
      const first = await this.api.events(this.sessionId, null, FIRST_PAGE_EVENTS);
      const events = parts.join(first.events);
      let after = first.next;
      // A page that ends inside a split event (a large FullSnapshot) would leave the Replayer without it.
      // The tracker's largest event spans at most six batches, so a group still open after
      // MAX_PART_PAGES more pages never ends, and the player starts without it.
      let extraPages = 0;
      while (parts.pending && after && !this.closed && extraPages++ < MAX_PART_PAGES) {
        const page = await this.api.events(this.sessionId, after, NEXT_PAGE_EVENTS);
        for (const event of parts.join(page.events)) events.push(event);
        after = page.next;
      }
      if (this.closed) return;
      if (events.length === 0) throw new Error("The recording has no events yet. Try again in a few seconds.");
      this.replayer = new Replayer(events, {
        root: this.stage,
        skipInactive: this.skipInactive.checked,
        showWarning: false,
        mouseTail: false,
      });
      this.replayer.on("finish", () => this.setPlaying(false));
      this.replayer.on("resize", () => this.fit());
      this.updateTimes();
      this.seek(this.startAtSeconds * 1000);
      this.status.textContent = after ? "Loading the rest of the recording…" : "";
      while (after && !this.closed) {
        const page = await this.api.events(this.sessionId, after, NEXT_PAGE_EVENTS);
        for (const event of parts.join(page.events)) this.replayer?.addEvent(event);
        after = page.next;
        this.updateTimes();
      }
      this.status.textContent = "";
      this.renderMarkers(markers);
    } catch (error) {
      this.status.textContent = error instanceof Error ? error.message : String(error);
    }
  }

  private renderHeader(session: RecordedSession): void {
    const exportButton = h("button", { type: "button", class: "button", "data-testid": "player-export" }, "Export rrweb JSON");
    exportButton.addEventListener("click", () => void this.download());
    this.header.replaceChildren(
      h("a", { href: "#/recordings", class: "button button-quiet" }, "← Recordings"),
      h("strong", { "data-testid": "player-user" }, session.userId || session.userAnonymousId || "Anonymous"),
      h("span", {}, formatStartTime(session.startedAt)),
      h("span", {}, formatDuration(session.durationMs)),
      h("span", {}, [session.browser, session.os, session.country].filter(Boolean).join(" · ") || PLACEHOLDER),
      exportButton,
    );
    document.title = `${session.userId || "Recording"} · Tandem`;
  }

  private renderMarkers(markers: Marker[]): void {
    this.timeline.replaceChildren(this.progress);
    this.eventList.replaceChildren();
    for (const marker of markers) {
      const offset = Math.max(0, marker.timestamp - this.startTime);
      const left = this.totalTime > 0 ? Math.min(100, (offset / this.totalTime) * 100) : 0;
      const title = `${MARKER_LABELS[marker.kind]} ${markerText(marker)}`.trim();
      this.timeline.append(h("span", { class: `player-marker marker-${marker.kind}`, style: `left: ${left}%`, title }));
      const item = h(
        "li",
        { class: `marker-${marker.kind}`, "data-testid": "player-event", "data-kind": marker.kind },
        h("span", { class: "player-event-time" }, formatDuration(offset)),
        h("span", { class: "player-event-kind" }, MARKER_LABELS[marker.kind]),
        h("span", { class: "player-event-text" }, markerText(marker)),
      );
      item.addEventListener("click", () => this.seek(offset));
      this.eventList.append(item);
    }
  }

  private updateTimes(): void {
    if (!this.replayer) return;
    const meta = this.replayer.getMetaData();
    this.startTime = meta.startTime;
    this.totalTime = meta.totalTime;
    this.renderClock();
  }

  private play(): void {
    this.replayer?.play(this.replayer.getCurrentTime());
    this.setPlaying(true);
  }

  private pause(): void {
    this.replayer?.pause();
    this.setPlaying(false);
  }

  private seek(offsetMs: number): void {
    const offset = Math.max(0, Math.min(this.totalTime, offsetMs));
    if (this.playing) this.replayer?.play(offset);
    else this.replayer?.pause(offset);
    this.renderClock();
    this.rememberTime(offset);
  }

  private setPlaying(playing: boolean): void {
    this.playing = playing;
    this.playButton.textContent = playing ? "Pause" : "Play";
    cancelAnimationFrame(this.frame);
    if (playing) this.tick();
    else if (this.replayer) this.rememberTime(this.replayer.getCurrentTime());
  }

  private tick(): void {
    this.renderClock();
    this.frame = requestAnimationFrame(() => this.tick());
  }

  private renderClock(): void {
    const current = this.replayer ? Math.min(this.replayer.getCurrentTime(), this.totalTime) : 0;
    this.clock.textContent = `${formatDuration(current)} / ${formatDuration(this.totalTime)}`;
    this.progress.style.width = this.totalTime > 0 ? `${(current / this.totalTime) * 100}%` : "0";
  }

  /** Keeps the time in the hash without adding a history entry, so that the link opens here. */
  private rememberTime(offsetMs: number): void {
    const hash = `#/recordings/${encodeURIComponent(this.sessionId)}?t=${Math.floor(offsetMs / 1000)}`;
    history.replaceState(null, "", hash);
  }

  /** Scales the replayed page down to the stage's width. */
  private fit(): void {
    const wrapper = this.stage.querySelector<HTMLElement>(".replayer-wrapper");
    const iframe = this.stage.querySelector("iframe");
    if (!wrapper || !iframe) return;
    const scale = Math.min(1, this.stage.clientWidth / Number(iframe.width || 1));
    wrapper.style.transform = `scale(${scale})`;
    wrapper.style.transformOrigin = "top left";
    this.stage.style.height = `${Number(iframe.height || 0) * scale}px`;
  }

  private async download(): Promise<void> {
    try {
      const blob = await this.api.exportBlob(this.sessionId);
      const link = h("a", { href: URL.createObjectURL(blob), download: `session-${this.sessionId}.json` });
      link.click();
      URL.revokeObjectURL(link.href);
    } catch (error) {
      this.status.textContent = `The export failed: ${error instanceof Error ? error.message : String(error)}`;
    }
  }
}
