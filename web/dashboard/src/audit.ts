// The audit page (admins): who watched, called and controlled which session,
// when, for how long, and what users answered; with totals per agent.
import { labelled, section, table } from "./admin";
import { ApiError, type AuthState, apiRequest } from "./api";
import { h } from "./dom";
import { formatDuration, PLACEHOLDER } from "./format";

interface AuditEvent {
  eventId: string;
  projectId: string;
  sessionId: string;
  kind: string;
  agentId: string;
  agentName: string;
  consentKind: string;
  outcome: string;
  reason: string;
  at: number;
  durationMs: number | null;
}

interface AgentTotals {
  agentId: string;
  agentName: string;
  sessions: number;
  watches: number;
  watchMs: number;
  calls: number;
  callMs: number;
  controls: number;
  controlMs: number;
  consentRequests: number;
  consentAccepted: number;
  consentDeclined: number;
  consentUnanswered: number;
}

const PAGE_SIZE = 100;
const FILTERS = ["agent", "session", "project", "from", "to"] as const;

export class AuditPage {
  readonly element: HTMLElement;
  private readonly inputs: Record<(typeof FILTERS)[number], HTMLInputElement>;
  private readonly problem = h("p", { class: "admin-problem", role: "alert", hidden: true });
  private readonly events = h("tbody", { "data-testid": "audit-events" });
  private readonly totals = h("tbody", { "data-testid": "audit-totals" });
  private readonly summary = h("p", { class: "list-summary" });

  constructor(private readonly auth: AuthState) {
    this.inputs = {
      agent: h("input", { name: "agent", placeholder: "name or id" }),
      session: h("input", { name: "session", placeholder: "session id" }),
      project: h("input", { name: "project", placeholder: "project id" }),
      from: h("input", { name: "from", type: "date" }),
      to: h("input", { name: "to", type: "date" }),
    };
    const form = h(
      "form",
      { class: "admin-form", "data-testid": "audit-filters" },
      ...FILTERS.map((name) => labelled(name[0].toUpperCase() + name.slice(1), this.inputs[name])),
      h("button", { type: "submit", class: "button button-primary" }, "Show"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      location.hash = `#/audit?${this.filterParams()}`;
    });
    this.element = h(
      "div",
      { class: "admin-page", "data-testid": "audit-page" },
      form,
      this.problem,
      section(
        "Per agent",
        table(["Agent", "Sessions", "Watches", "Watch time", "Calls", "Call time", "Controls", "Control time", "Consent asked / yes / no / no answer"], this.totals),
      ),
      section(
        "Events",
        this.summary,
        table(["Time", "Event", "Agent", "Project", "Session", "Outcome", "Duration"], this.events),
      ),
    );
  }

  /** Loads the events and totals for the filters in the route (`#/audit?agent=…`). */
  async show(): Promise<void> {
    const params = new URLSearchParams(location.hash.split("?")[1] ?? "");
    for (const name of FILTERS) this.inputs[name].value = (params.get(name) ?? "").replace(/T23:59:59\.999$/, "");
    const query = this.filterParams();
    this.problem.hidden = true;
    try {
      const [page, totals] = await Promise.all([
        apiRequest<{ events: AuditEvent[]; total: number }>(this.auth, "GET", `/api/v1/audit?${query}&limit=${PAGE_SIZE}`),
        apiRequest<{ agents: AgentTotals[] }>(this.auth, "GET", `/api/v1/audit/totals?${query}`),
      ]);
      this.summary.textContent = `${page.total} events${page.total > PAGE_SIZE ? `, the latest ${PAGE_SIZE} shown` : ""}.`;
      this.events.replaceChildren(...page.events.map(eventRow));
      this.totals.replaceChildren(...totals.agents.map(totalsRow));
    } catch (error) {
      this.problem.textContent = error instanceof ApiError ? error.message : String(error);
      this.problem.hidden = false;
    }
  }

  private filterParams(): URLSearchParams {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = this.inputs[name].value.trim();
      // A date in `to` means the whole day: the server takes times before `to`.
      if (value) params.set(name, name === "to" && /^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T23:59:59.999` : value);
    }
    return params;
  }
}

function eventRow(event: AuditEvent): HTMLElement {
  const what = event.consentKind ? `${event.kind} (${event.consentKind})` : event.kind;
  const outcome = [event.outcome, event.reason].filter(Boolean).join(", ") || PLACEHOLDER;
  const sessionLink = h("a", { href: `#/recordings/${encodeURIComponent(event.sessionId)}` }, event.sessionId);
  return h(
    "tr",
    { "data-kind": event.kind },
    h("td", {}, new Date(event.at).toLocaleString()),
    h("td", {}, what),
    h("td", {}, event.agentName || event.agentId || PLACEHOLDER),
    h("td", {}, event.projectId),
    h("td", {}, sessionLink),
    h("td", {}, outcome),
    h("td", {}, event.durationMs === null ? PLACEHOLDER : formatDuration(event.durationMs)),
  );
}

function totalsRow(row: AgentTotals): HTMLElement {
  const consent = [row.consentRequests, row.consentAccepted, row.consentDeclined, row.consentUnanswered].join(" / ");
  return h(
    "tr",
    { "data-agent-id": row.agentId },
    h("td", {}, row.agentName),
    h("td", {}, String(row.sessions)),
    h("td", {}, String(row.watches)),
    h("td", {}, formatDuration(row.watchMs)),
    h("td", {}, String(row.calls)),
    h("td", {}, formatDuration(row.callMs)),
    h("td", {}, String(row.controls)),
    h("td", {}, formatDuration(row.controlMs)),
    h("td", {}, consent),
  );
}
