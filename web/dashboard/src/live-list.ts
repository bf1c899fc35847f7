// The Assist page's table: one page of the project's live sessions that match
// the agent's search, kept up to date by `list.snapshot`, `list.upsert`,
// `list.remove` and `list.counts` messages. The live service filters, sorts
// and pages; this table only keeps the rows in the requested order.
import type { ServerClock } from "./clock";
import { h } from "./dom";
import { formatBrowser, formatCountry, formatDuration, formatOs, formatStartTime, formatUser, PLACEHOLDER } from "./format";
import "./live-list.css";
import type { ListQuery, LiveSession, ServerMessage } from "./protocol";

const COLUMNS = ["Grid", "User", "Started", "Duration", "Browser", "OS", "Device", "Country", "Page", "Status"];

export const DEFAULT_LIST_QUERY: ListQuery = { query: "", sort: "startedAt", order: "desc", limit: 50, offset: 0 };

export interface LiveListOptions {
  clock: ServerClock;
  onOpen: (session: LiveSession) => void;
  /** Called when the agent moves to another page of the list. */
  onPage: (offset: number) => void;
  /** Tells whether a session is in the grid. */
  inGrid: (sessionId: string) => boolean;
  /** Adds the session to the grid or removes it; returns false when the grid is full. */
  onToggleGrid: (session: LiveSession) => boolean;
}

export class LiveList {
  readonly element: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly summary: HTMLElement;
  private readonly previousButton: HTMLButtonElement;
  private readonly nextButton: HTMLButtonElement;
  private readonly sessions = new Map<string, LiveSession>();
  private readonly rows = new Map<string, HTMLTableRowElement>();
  private projectId = "";
  private query: ListQuery = { ...DEFAULT_LIST_QUERY };
  private total = 0;
  private loaded = false;

  constructor(private readonly options: LiveListOptions) {
    this.body = h("tbody");
    this.summary = h("p", { class: "list-summary", "data-testid": "live-summary" });
    this.previousButton = h("button", { type: "button", class: "button", "data-testid": "live-previous" }, "Previous");
    this.nextButton = h("button", { type: "button", class: "button", "data-testid": "live-next" }, "Next");
    this.previousButton.addEventListener("click", () => this.options.onPage(Math.max(0, this.query.offset - this.query.limit)));
    this.nextButton.addEventListener("click", () => this.options.onPage(this.query.offset + this.query.limit));

    const head = h("thead", {}, h("tr", {}, ...COLUMNS.map((name) => h("th", { scope: "col" }, name))));
    this.element = h(
      "section",
      { class: "live-list" },
      h("div", { class: "list-bar" }, this.summary, h("div", { class: "list-pager" }, this.previousButton, this.nextButton)),
      h("div", { class: "table-scroll" }, h("table", { "data-testid": "live-list" }, head, this.body)),
    );
    this.body.addEventListener("click", (event) => this.handleClick(event));
    this.body.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !(event.target as Element).closest("input")) this.openFromEvent(event);
    });
  }

  /** Returns a session of the current page. */
  get(sessionId: string): LiveSession | undefined {
    return this.sessions.get(sessionId);
  }

  /** Empties the table until the snapshot of the new project or search arrives. */
  setProject(projectId: string, query: ListQuery): void {
    this.projectId = projectId;
    this.query = { ...query };
    this.loaded = false;
    this.sessions.clear();
    this.rows.clear();
    this.render();
  }

  handle(message: ServerMessage): void {
    switch (message.type) {
      case "list.snapshot":
        if (message.projectId === this.projectId) this.replaceAll(message.sessions, message.total ?? message.sessions.length);
        break;
      case "list.upsert":
        if (message.session.projectId === this.projectId) this.upsert(message.session);
        break;
      case "list.remove":
        this.remove(message.sessionId);
        break;
      case "list.counts":
        if (message.projectId === this.projectId) {
          this.total = message.total;
          this.renderSummary();
        }
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

  /** Redraws the grid checkboxes, after the grid changed elsewhere. */
  refreshGridMarks(): void {
    for (const [sessionId, row] of this.rows) {
      const checkbox = row.querySelector<HTMLInputElement>("input[data-testid=grid-toggle]");
      if (checkbox) checkbox.checked = this.options.inGrid(sessionId);
    }
  }

  private replaceAll(sessions: LiveSession[], total: number): void {
    this.loaded = true;
    this.total = total;
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
    // A new row goes at its place in the page's order, without redrawing the others.
    const newRow = this.createRow(session);
    this.rows.set(session.sessionId, newRow);
    const compare = comparator(this.query);
    const next = this.sortedSessions().find((other) => other.sessionId !== session.sessionId && compare(session, other) < 0);
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
    const shown = this.sessions.size;
    const searching = this.query.query.trim() !== "";
    if (!this.loaded) {
      this.summary.textContent = `Loading the live sessions of project “${this.projectId}”…`;
    } else if (this.total === 0) {
      this.summary.textContent = searching
        ? `No live session of project “${this.projectId}” matches the search.`
        : `No live sessions in project “${this.projectId}” right now. New sessions appear here as they start.`;
    } else {
      const first = shown === 0 ? 0 : this.query.offset + 1;
      const last = this.query.offset + shown;
      const noun = this.total === 1 ? "session" : "sessions";
      const matching = searching ? " matching the search" : "";
      this.summary.textContent = `${this.total} live ${noun}${matching} in project “${this.projectId}”, showing ${first}–${last}. Click a row to watch it.`;
    }
    this.element.dataset.total = String(this.total);
    this.element.classList.toggle("is-empty", shown === 0);
    this.previousButton.disabled = this.query.offset === 0;
    this.nextButton.disabled = this.query.offset + this.query.limit >= this.total;
  }

  private sortedSessions(): LiveSession[] {
    return [...this.sessions.values()].sort(comparator(this.query));
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
    const checkbox = h("input", {
      type: "checkbox",
      "data-testid": "grid-toggle",
      "aria-label": `Watch ${formatUser(session)} in the grid`,
      title: "Watch in the grid (up to four sessions)",
    });
    checkbox.checked = this.options.inGrid(session.sessionId);
    const place = session.city ? `${formatCountry(session.country)}, ${session.city}` : formatCountry(session.country);
    row.replaceChildren(
      h("td", { class: "cell-grid" }, checkbox),
      h("td", { class: "cell-user" }, formatUser(session)),
      h("td", { title: new Date(session.startedAt).toISOString() }, formatStartTime(session.startedAt)),
      h("td", { class: "cell-duration", "data-field": "duration" }, formatDuration(this.options.clock.now() - session.startedAt)),
      h("td", {}, formatBrowser(session)),
      h("td", {}, formatOs(session)),
      h("td", {}, session.device || PLACEHOLDER),
      h("td", { title: session.country }, place),
      h(
        "td",
        { class: "cell-page", title: session.url },
        h("span", { class: "page-title" }, session.title || "Untitled page"),
        h("span", { class: "page-url" }, session.url),
      ),
      h("td", {}, activityMarker(session.active)),
    );
  }

  private handleClick(event: Event): void {
    const checkbox = (event.target as Element).closest<HTMLInputElement>("input[data-testid=grid-toggle]");
    if (checkbox === null) {
      this.openFromEvent(event);
      return;
    }
    const row = checkbox.closest<HTMLTableRowElement>("tr[data-session-id]");
    const session = row ? this.sessions.get(row.dataset.sessionId ?? "") : undefined;
    if (session && !this.options.onToggleGrid(session)) checkbox.checked = false;
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

/** Orders sessions as the live service does: a longer duration is an earlier start. */
function comparator(query: ListQuery): (a: LiveSession, b: LiveSession) => number {
  const newestFirst = (query.sort === "startedAt") === (query.order === "desc");
  return (a, b) => {
    const byStart = newestFirst ? b.startedAt - a.startedAt : a.startedAt - b.startedAt;
    return byStart || (newestFirst ? b.sessionId.localeCompare(a.sessionId) : a.sessionId.localeCompare(b.sessionId));
  };
}
