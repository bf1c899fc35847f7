// The Assist page: a table of the project's live sessions, kept up to date by
// `list.snapshot`, `list.upsert` and `list.remove` messages.
import type { ServerClock } from "./clock";
import { h } from "./dom";
import { formatBrowser, formatCountry, formatDuration, formatOs, formatStartTime, formatUser } from "./format";
import type { LiveSession, ServerMessage } from "./protocol";

const COLUMNS = ["User", "Started", "Duration", "Browser", "OS", "Country", "Page", "Status"];

export interface LiveListOptions {
  clock: ServerClock;
  onOpen: (session: LiveSession) => void;
}

export class LiveList {
  readonly element: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly summary: HTMLElement;
  private readonly sessions = new Map<string, LiveSession>();
  private readonly rows = new Map<string, HTMLTableRowElement>();
  private projectId = "";
  private loaded = false;

  constructor(private readonly options: LiveListOptions) {
    this.body = h("tbody");
    this.summary = h("p", { class: "list-summary" });
    const head = h("thead", {}, h("tr", {}, ...COLUMNS.map((name) => h("th", { scope: "col" }, name))));
    this.element = h(
      "section",
      { class: "live-list" },
      this.summary,
      h("div", { class: "table-scroll" }, h("table", { "data-testid": "live-list" }, head, this.body)),
    );
    this.body.addEventListener("click", (event) => this.openFromEvent(event));
    this.body.addEventListener("keydown", (event) => {
      if (event.key === "Enter") this.openFromEvent(event);
    });
  }

  /** Returns a session of the current project that is in the list now. */
  get(sessionId: string): LiveSession | undefined {
    return this.sessions.get(sessionId);
  }

  /** Empties the table until the snapshot of the new project arrives. */
  setProject(projectId: string): void {
    this.projectId = projectId;
    this.loaded = false;
    this.sessions.clear();
    this.rows.clear();
    this.render();
  }

  handle(message: ServerMessage): void {
    switch (message.type) {
      case "list.snapshot":
        if (message.projectId === this.projectId) this.replaceAll(message.sessions);
        break;
      case "list.upsert":
        if (message.session.projectId === this.projectId) this.upsert(message.session);
        break;
      case "list.remove":
        this.remove(message.sessionId);
        break;
    }
  }

  /** Updates the durations, which count on from `startedAt` in server time. */
  tick(): void {
    const now = this.options.clock.now();
    for (const [sessionId, row] of this.rows) {
      const session = this.sessions.get(sessionId);
      const cell = row.querySelector<HTMLElement>("[data-field=duration]");
      if (session && cell) cell.textContent = formatDuration(now - session.startedAt);
    }
  }

  private replaceAll(sessions: LiveSession[]): void {
    this.loaded = true;
    this.sessions.clear();
    this.rows.clear();
    for (const session of sessions) this.sessions.set(session.sessionId, session);
    this.render();
  }

  private upsert(session: LiveSession): void {
    this.sessions.set(session.sessionId, session);
    const row = this.rows.get(session.sessionId);
    if (row) {
      this.fillRow(row, session);
      return;
    }
    // A new session goes at its place in the newest-first order, without redrawing the others.
    const newRow = this.createRow(session);
    this.rows.set(session.sessionId, newRow);
    const next = this.sortedSessions().find(
      (other) => other.sessionId !== session.sessionId && compareNewestFirst(session, other) < 0,
    );
    const nextRow = next ? this.rows.get(next.sessionId) : undefined;
    this.body.insertBefore(newRow, nextRow ?? null);
    this.renderSummary();
  }

  private remove(sessionId: string): void {
    if (!this.sessions.delete(sessionId)) return;
    this.rows.get(sessionId)?.remove();
    this.rows.delete(sessionId);
    this.renderSummary();
  }

  private render(): void {
    this.body.replaceChildren();
    for (const session of this.sortedSessions()) {
      const row = this.createRow(session);
      this.rows.set(session.sessionId, row);
      this.body.append(row);
    }
    this.renderSummary();
  }

  private renderSummary(): void {
    const count = this.sessions.size;
    if (!this.loaded) {
      this.summary.textContent = `Loading the live sessions of project “${this.projectId}”…`;
    } else if (count === 0) {
      this.summary.textContent = `No live sessions in project “${this.projectId}” right now. New sessions appear here as they start.`;
    } else {
      this.summary.textContent = `${count} live ${count === 1 ? "session" : "sessions"} in project “${this.projectId}”. Click a row to watch it.`;
    }
    this.element.classList.toggle("is-empty", count === 0);
  }

  private sortedSessions(): LiveSession[] {
    return [...this.sessions.values()].sort(compareNewestFirst);
  }

  private createRow(session: LiveSession): HTMLTableRowElement {
    const row = h("tr", { "data-testid": "live-row", tabindex: 0 });
    this.fillRow(row, session);
    return row;
  }

  private fillRow(row: HTMLTableRowElement, session: LiveSession): void {
    row.dataset.sessionId = session.sessionId;
    row.dataset.userId = session.userId ?? "";
    row.classList.toggle("is-inactive", !session.active);
    row.replaceChildren(
      h("td", { class: "cell-user" }, formatUser(session)),
      h("td", { title: new Date(session.startedAt).toISOString() }, formatStartTime(session.startedAt)),
      h("td", { class: "cell-duration", "data-field": "duration" }, formatDuration(this.options.clock.now() - session.startedAt)),
      h("td", {}, formatBrowser(session)),
      h("td", {}, formatOs(session)),
      h("td", { title: session.country }, formatCountry(session.country)),
      h(
        "td",
        { class: "cell-page", title: session.url },
        h("span", { class: "page-title" }, session.title || "Untitled page"),
        h("span", { class: "page-url" }, session.url),
      ),
      h("td", {}, activityMarker(session.active)),
    );
  }

  private openFromEvent(event: Event): void {
    const row = (event.target as Element).closest<HTMLTableRowElement>("tr[data-session-id]");
    const session = row ? this.sessions.get(row.dataset.sessionId ?? "") : undefined;
    if (session) this.options.onOpen(session);
  }
}

/** Creates the "Active" or "Inactive" badge of `LiveSession.active`. */
export function activityMarker(active: boolean): HTMLElement {
  return h(
    "span",
    { class: `activity ${active ? "is-active" : "is-inactive"}`, "data-active": String(active) },
    active ? "Active" : "Inactive",
  );
}

function compareNewestFirst(a: LiveSession, b: LiveSession): number {
  return b.startedAt - a.startedAt || a.sessionId.localeCompare(b.sessionId);
}
