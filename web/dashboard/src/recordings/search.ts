// The recordings search page: a query bar, a time range, a sortable results table and pages.
// Its state lives in the hash (`#/recordings?q=…&range=…&sort=…&order=…&page=…`), so that a search can be shared.
import { h } from "../dom";
import { PLACEHOLDER, formatDuration, formatStartTime } from "../format";
import { QueryError, type RecordedSession, type RecordingsApi, type SearchRequest } from "./api";

const PAGE_SIZE = 50;
const DAY_MS = 24 * 60 * 60 * 1000;

/**
 * The choices of the range select. A search sends `from` = now minus `durationMs`, so the server
 * bounds its scans to sessions that started since then. "All time" (`durationMs` null) sends no `from`.
 */
const RANGES = [
  { value: "24h", label: "Last 24 hours", durationMs: DAY_MS },
  { value: "7d", label: "Last 7 days", durationMs: 7 * DAY_MS },
  { value: "30d", label: "Last 30 days", durationMs: 30 * DAY_MS },
  { value: "all", label: "All time", durationMs: null },
] as const;
type TimeRange = (typeof RANGES)[number];
type RangeValue = TimeRange["value"];
/** The range of a hash without a valid `range`, which is the last 7 days. */
const DEFAULT_RANGE: TimeRange = RANGES[1];
const EXAMPLE = 'user:alice browser:firefox duration>1m clicked:"Place order" then error:*';
const COLUMNS: Array<{ label: string; sort?: string; cell: (s: RecordedSession) => string }> = [
  { label: "User", sort: "user", cell: (s) => s.userId || s.userAnonymousId || "Anonymous" },
  { label: "Started", sort: "startedAt", cell: (s) => formatStartTime(s.startedAt) },
  { label: "Duration", sort: "duration", cell: (s) => formatDuration(s.durationMs) },
  { label: "Pages", sort: "pages", cell: (s) => String(s.pages) },
  { label: "Clicks", sort: "clicks", cell: (s) => String(s.clicks) },
  { label: "Errors", sort: "errors", cell: (s) => String(s.errors) },
  { label: "Browser", cell: (s) => s.browser || PLACEHOLDER },
  { label: "OS", cell: (s) => s.os || PLACEHOLDER },
  { label: "Country", cell: (s) => s.country || PLACEHOLDER },
  { label: "First page", cell: (s) => s.firstUrl || PLACEHOLDER },
];

export type SearchState = Omit<SearchRequest, "projectId" | "limit" | "from"> & { range: RangeValue };

export function searchStateFromHash(query: string): SearchState {
  const params = new URLSearchParams(query);
  return {
    q: params.get("q") ?? "",
    range: rangeOf(params.get("range")).value,
    sort: params.get("sort") ?? "startedAt",
    order: params.get("order") === "asc" ? "asc" : "desc",
    page: Math.max(1, Number(params.get("page")) || 1),
  };
}

function hashOf(state: SearchState): string {
  const params = new URLSearchParams({
    q: state.q,
    range: state.range,
    sort: state.sort,
    order: state.order,
    page: String(state.page),
  });
  return `#/recordings?${params}`;
}

/** Returns the range named `value`, or the default range for a missing or unknown value. */
function rangeOf(value: string | null): TimeRange {
  return RANGES.find((range) => range.value === value) ?? DEFAULT_RANGE;
}

/** Returns the summary line of a search that found nothing, naming the range so that the user can widen it. */
function emptyMessage(state: SearchState, projectId: string): string {
  const range = rangeOf(state.range);
  const searching = state.q !== "";
  if (range.durationMs === null) {
    return searching ? "No sessions match the search." : `No sessions recorded in project “${projectId}” yet.`;
  }
  const within = `in the ${range.label.toLowerCase()}`;
  return searching ? `No sessions ${within} match the search. Try a wider range.` : `No sessions ${within}. Try a wider range.`;
}

export class SearchPage {
  readonly element: HTMLElement;
  private readonly input: HTMLInputElement;
  private readonly rangeSelect: HTMLSelectElement;
  private readonly problem: HTMLElement;
  private readonly summary: HTMLElement;
  private readonly body: HTMLTableSectionElement;
  private readonly headRow: HTMLTableRowElement;
  private readonly previous: HTMLButtonElement;
  private readonly next: HTMLButtonElement;
  private state: SearchState = searchStateFromHash("");
  private request = 0;

  constructor(
    private readonly api: RecordingsApi,
    private readonly projectId: () => string,
  ) {
    this.input = h("input", {
      class: "recordings-query",
      type: "search",
      placeholder: EXAMPLE,
      spellcheck: false,
      "aria-label": "Search query",
      "data-testid": "recordings-query",
    });
    this.rangeSelect = h(
      "select",
      { class: "recordings-range", "aria-label": "Time range", "data-testid": "recordings-range" },
      ...RANGES.map((range) => h("option", { value: range.value }, range.label)),
    );
    const form = h(
      "form",
      { class: "recordings-search", role: "search" },
      this.input,
      h("button", { type: "submit", class: "button button-primary", "data-testid": "recordings-search" }, "Search"),
      this.rangeSelect,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.navigate({ ...this.state, q: this.input.value.trim(), page: 1 });
    });
    // A new range runs the search with the text in the bar, as the Search button does.
    this.rangeSelect.addEventListener("change", () => {
      this.navigate({ ...this.state, q: this.input.value.trim(), range: rangeOf(this.rangeSelect.value).value, page: 1 });
    });
    this.problem = h("div", { class: "recordings-problem", role: "alert", hidden: true, "data-testid": "recordings-problem" });
    const help = h(
      "details",
      { class: "recordings-help" },
      h("summary", {}, "Query syntax"),
      h(
        "p",
        {},
        "Fields: user, anon, meta.KEY, browser, os, device, country, duration (>1m), date (>=2025-01-31), pages, clicks, errors; ",
        "events: url, clicked, error, event:NAME[field=value], issue. Combine with AND (or a space), OR, NOT, ( ) ",
        "and 'then' for events in order. Quote values with spaces; * is a wildcard. Example: ",
        h("code", {}, EXAMPLE),
      ),
    );
    this.headRow = h("tr", {});
    this.body = h("tbody", {});
    this.summary = h("p", { class: "list-summary", "data-testid": "recordings-summary" });
    this.previous = h("button", { type: "button", class: "button", "data-testid": "recordings-previous" }, "Previous");
    this.next = h("button", { type: "button", class: "button", "data-testid": "recordings-next" }, "Next");
    this.previous.addEventListener("click", () => this.navigate({ ...this.state, page: this.state.page - 1 }));
    this.next.addEventListener("click", () => this.navigate({ ...this.state, page: this.state.page + 1 }));
    this.element = h(
      "section",
      { class: "recordings-page", "data-testid": "recordings-page" },
      form,
      this.problem,
      help,
      this.summary,
      h("div", { class: "table-scroll" }, h("table", {}, h("thead", {}, this.headRow), this.body)),
      h("div", { class: "recordings-pager" }, this.previous, this.next),
    );
  }

  /** Shows the search of `state` (from the hash) and runs it. */
  async show(state: SearchState): Promise<void> {
    this.state = state;
    this.input.value = state.q;
    this.rangeSelect.value = state.range;
    this.renderHead();
    const request = ++this.request;
    this.problem.hidden = true;
    this.summary.textContent = "Searching…";
    // `from` is computed as each search runs, so that a page left open still searches the latest range.
    const { range, ...query } = state;
    const durationMs = rangeOf(range).durationMs;
    const from = durationMs === null ? undefined : Date.now() - durationMs;
    const projectId = this.projectId();
    try {
      const result = await this.api.search({ ...query, from, projectId, limit: PAGE_SIZE });
      if (request !== this.request) return;
      this.renderRows(result.sessions);
      const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
      this.summary.textContent =
        result.total === 0
          ? emptyMessage(state, projectId)
          : `${result.total} session${result.total === 1 ? "" : "s"} · page ${state.page} of ${pages}`;
      this.previous.disabled = state.page <= 1;
      this.next.disabled = state.page >= pages;
    } catch (error) {
      if (request !== this.request) return;
      this.renderRows([]);
      this.summary.textContent = "";
      this.showProblem(error);
    }
  }

  private navigate(state: SearchState): void {
    const hash = hashOf(state);
    // Setting the hash to its current value fires no hashchange, so run the same search here.
    if (location.hash === hash) void this.show(state);
    else location.hash = hash;
  }

  private showProblem(error: unknown): void {
    this.problem.hidden = false;
    if (error instanceof QueryError) {
      // Point at the character the server named, under a copy of the query.
      const before = this.state.q.slice(0, error.position);
      this.problem.replaceChildren(
        h("div", {}, error.message),
        h("pre", { class: "recordings-caret" }, `${this.state.q}\n${" ".repeat(before.length)}^`),
      );
      this.input.focus();
      this.input.setSelectionRange(error.position, error.position);
    } else {
      this.problem.replaceChildren(error instanceof Error ? error.message : String(error));
    }
  }

  private renderHead(): void {
    this.headRow.replaceChildren(
      ...COLUMNS.map((column) => {
        if (!column.sort) return h("th", {}, column.label);
        const current = this.state.sort === column.sort;
        const descending = this.state.order === "desc";
        let arrow = "";
        let ariaSort: string | null = null;
        if (current) {
          arrow = descending ? " ↓" : " ↑";
          ariaSort = descending ? "descending" : "ascending";
        }
        const button = h("button", { type: "button", class: "sort-button", "data-sort": column.sort }, column.label + arrow);
        button.addEventListener("click", () => {
          const order = current && descending ? "asc" : "desc";
          this.navigate({ ...this.state, sort: column.sort as string, order, page: 1 });
        });
        return h("th", { "aria-sort": ariaSort }, button);
      }),
    );
  }

  private renderRows(sessions: RecordedSession[]): void {
    this.body.replaceChildren(
      ...sessions.map((session) => {
        const row = h(
          "tr",
          { "data-testid": "recording-row", "data-session-id": session.sessionId },
          ...COLUMNS.map((column) => h("td", {}, column.cell(session))),
        );
        row.addEventListener("click", () => {
          location.hash = `#/recordings/${encodeURIComponent(session.sessionId)}`;
        });
        return row;
      }),
    );
  }
}
