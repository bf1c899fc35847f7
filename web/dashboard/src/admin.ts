// Access control in the dashboard: the route `#/admin` (projects and agents for
// admins, API tokens for everyone) and `#/audit` (the audit trail, admins only).
// Like the recordings, the pages take the place of the dashboard's content
// while their route is open.
import "./admin.css";
import { ApiError, type AuthState, apiRequest } from "./api";
import { AuditPage } from "./audit";
import { h } from "./dom";

const ROUTES: Record<string, RegExp> = { admin: /^#\/admin$/, audit: /^#\/audit(?:\?.*)?$/ };

export interface Project {
  id: string;
  key: string;
  name: string;
  allowedOrigins: string[];
  sampleRate: number;
  retentionDays: number;
  sessionConfirm: boolean;
}

interface Agent {
  id: string;
  name: string;
  role: string;
  projects: string[];
  disabled: boolean;
}

interface ApiToken {
  id: string;
  name: string;
  agentName: string;
  projects: string[];
  createdAt: number;
  expiresAt: number;
}

// The routing of the last sign-in; a new sign-in replaces it.
let installedRoute: (() => void) | null = null;

/** Adds the Settings (and, for admins, Audit) links and routes to the dashboard rendered in `root`. */
export function installAdmin(root: HTMLElement, auth: AuthState): void {
  const isAdmin = auth.agent.role === "admin";
  const admin = new AdminPage(auth, isAdmin);
  const audit = isAdmin ? new AuditPage(auth) : null;
  const container = h("main", { class: "content admin", hidden: true });
  const links = {
    admin: h("a", { class: "nav-link", href: "#/admin", "data-testid": "nav-admin" }, "Settings"),
    audit: audit ? h("a", { class: "nav-link", href: "#/audit", "data-testid": "nav-audit" }, "Audit") : null,
  };
  const nav = root.querySelector(".top-bar .nav");
  if (links.audit) nav?.append(links.audit);
  nav?.append(links.admin);
  root.querySelector(".app")?.append(container);

  const route = (): void => {
    const open = Object.keys(ROUTES).find((name) => ROUTES[name].test(location.hash)) ?? null;
    container.hidden = open === null || (open === "audit" && audit === null);
    if (container.hidden) {
      links.admin.classList.remove("is-current");
      links.audit?.classList.remove("is-current");
      return;
    }
    // The other pages' route handlers ran first: hide their content and unmark their links.
    for (const other of root.querySelectorAll<HTMLElement>(".app > .content:not(.admin)")) other.hidden = true;
    for (const link of root.querySelectorAll(".top-bar .nav-link")) link.classList.remove("is-current");
    if (open === "audit" && audit) {
      links.audit?.classList.add("is-current");
      container.replaceChildren(audit.element);
      document.title = "Audit · Tandem";
      void audit.show();
    } else {
      links.admin.classList.add("is-current");
      container.replaceChildren(admin.element);
      document.title = "Settings · Tandem";
      void admin.show();
    }
  };
  if (installedRoute) window.removeEventListener("hashchange", installedRoute);
  installedRoute = route;
  window.addEventListener("hashchange", route);
  route();
}

/** Projects and agents (admins), and the signed-in agent's API tokens. */
class AdminPage {
  readonly element: HTMLElement;
  private readonly problem = h("p", { class: "admin-problem", role: "alert", hidden: true });
  private readonly projects = h("tbody");
  private readonly agents = h("tbody");
  private readonly tokens = h("tbody");
  private readonly newToken = h("p", { class: "admin-secret", hidden: true, "data-testid": "new-token" });

  constructor(
    private readonly auth: AuthState,
    private readonly isAdmin: boolean,
  ) {
    this.element = h(
      "div",
      { class: "admin-page", "data-testid": "admin-page" },
      this.problem,
      isAdmin ? this.projectsSection() : null,
      isAdmin ? this.agentsSection() : null,
      this.tokensSection(),
    );
  }

  async show(): Promise<void> {
    this.report("");
    try {
      const loads: Promise<void>[] = [this.loadTokens()];
      if (this.isAdmin) loads.push(this.loadProjects(), this.loadAgents());
      await Promise.all(loads);
    } catch (error) {
      this.report(error);
    }
  }

  /** Shows `error` above the tables, or hides the message when `error` is empty. */
  private report(error: unknown): void {
    let message = "";
    if (error instanceof ApiError) message = error.message;
    else if (error) message = String(error);
    this.problem.textContent = message;
    this.problem.hidden = message === "";
  }

  /** Runs `action`, shows its error if it fails, and reloads the page's tables. */
  private async act(action: () => Promise<unknown>): Promise<void> {
    try {
      await action();
      await this.show();
    } catch (error) {
      this.report(error);
    }
  }

  // Projects -------------------------------------------------------------------------------

  private projectsSection(): HTMLElement {
    const id = h("input", { name: "id", placeholder: "shop", required: true, pattern: "[A-Za-z0-9_-]{1,128}" });
    const origins = h("input", { name: "origins", placeholder: "https://shop.example.com, https://*.example.com" });
    const sample = h("input", { name: "sample", type: "number", min: 0, max: 1, step: 0.01, value: 1 });
    const retention = h("input", { name: "retention", type: "number", min: 0, max: 36500, value: 0 });
    const confirm = h("input", { name: "confirm", type: "checkbox" });
    const form = h(
      "form",
      { class: "admin-form", "data-testid": "project-form" },
      labelled("Id", id),
      labelled("Allowed origins", origins),
      labelled("Sample rate", sample),
      labelled("Retention (days, 0 keeps)", retention),
      labelled("Ask users before watching", confirm),
      h("button", { type: "submit", class: "button button-primary" }, "Create project"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.act(async () => {
        await apiRequest(this.auth, "POST", "/api/v1/projects", {
          id: id.value.trim(),
          allowedOrigins: splitList(origins.value),
          sampleRate: Number(sample.value),
          retentionDays: Number(retention.value),
          sessionConfirm: confirm.checked,
        });
        form.reset();
      });
    });
    return section(
      "Projects",
      table(["Id", "Key", "Allowed origins", "Sample rate", "Retention", "Ask users", ""], this.projects),
      form,
    );
  }

  private async loadProjects(): Promise<void> {
    const { projects } = await apiRequest<{ projects: Project[] }>(this.auth, "GET", "/api/v1/projects");
    this.projects.replaceChildren(...projects.map((project) => this.projectRow(project)));
  }

  private projectRow(project: Project): HTMLElement {
    const confirm = h("input", { type: "checkbox", "aria-label": `Ask users of ${project.id}`, checked: project.sessionConfirm });
    confirm.addEventListener("change", () =>
      this.act(() =>
        apiRequest(this.auth, "PATCH", `/api/v1/projects/${encodeURIComponent(project.id)}`, {
          sessionConfirm: confirm.checked,
        }),
      ),
    );
    const edit = h("button", { type: "button", class: "button button-quiet" }, "Edit origins");
    edit.addEventListener("click", () => {
      const answer = prompt(`Allowed origins of ${project.id}, comma-separated (empty allows any):`, project.allowedOrigins.join(", "));
      if (answer === null) return;
      void this.act(() =>
        apiRequest(this.auth, "PATCH", `/api/v1/projects/${encodeURIComponent(project.id)}`, {
          allowedOrigins: splitList(answer),
        }),
      );
    });
    return h(
      "tr",
      { "data-project-id": project.id },
      h("td", {}, project.id),
      h("td", {}, h("code", {}, project.key)),
      h("td", {}, project.allowedOrigins.join(", ") || "any"),
      h("td", {}, String(project.sampleRate)),
      h("td", {}, project.retentionDays ? `${project.retentionDays} days` : "default"),
      h("td", {}, confirm),
      h("td", {}, edit),
    );
  }

  // Agents ---------------------------------------------------------------------------------

  private agentsSection(): HTMLElement {
    const name = h("input", { name: "name", required: true, autocomplete: "off" });
    const password = h("input", { name: "password", type: "password", minlength: 12, required: true, autocomplete: "new-password" });
    const role = h("select", { name: "role" }, ...["agent", "viewer", "admin"].map((value) => h("option", { value }, value)));
    const projects = h("input", { name: "projects", placeholder: "* or shop, blog" });
    const form = h(
      "form",
      { class: "admin-form", "data-testid": "agent-form" },
      labelled("Name", name),
      labelled("Password (12+ characters)", password),
      labelled("Role", role),
      labelled("Projects", projects),
      h("button", { type: "submit", class: "button button-primary" }, "Create agent"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.act(async () => {
        await apiRequest(this.auth, "POST", "/api/v1/agents", {
          name: name.value.trim(),
          password: password.value,
          role: role.value,
          projects: splitList(projects.value).length ? splitList(projects.value) : ["*"],
        });
        form.reset();
      });
    });
    return section("Agents", table(["Name", "Role", "Projects", "State", ""], this.agents), form);
  }

  private async loadAgents(): Promise<void> {
    const { agents } = await apiRequest<{ agents: Agent[] }>(this.auth, "GET", "/api/v1/agents");
    this.agents.replaceChildren(...agents.map((agent) => this.agentRow(agent)));
  }

  private agentRow(agent: Agent): HTMLElement {
    const toggle = h("button", { type: "button", class: "button button-quiet" }, agent.disabled ? "Enable" : "Disable");
    toggle.addEventListener("click", () =>
      this.act(() =>
        apiRequest(this.auth, "PATCH", `/api/v1/agents/${encodeURIComponent(agent.name)}`, { disabled: !agent.disabled }),
      ),
    );
    return h(
      "tr",
      { "data-agent-name": agent.name },
      h("td", {}, agent.name),
      h("td", {}, agent.role),
      h("td", {}, agent.projects.join(", ")),
      h("td", {}, agent.disabled ? "disabled" : "enabled"),
      h("td", {}, toggle),
    );
  }

  // API tokens -----------------------------------------------------------------------------

  private tokensSection(): HTMLElement {
    const name = h("input", { name: "token-name", required: true, placeholder: "nightly export" });
    const days = h("input", { name: "expires", type: "number", min: 0, max: 3650, value: 90 });
    const form = h(
      "form",
      { class: "admin-form", "data-testid": "token-form" },
      labelled("Name", name),
      labelled("Expires after (days, 0 never)", days),
      h("button", { type: "submit", class: "button button-primary" }, "Create API token"),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.act(async () => {
        const created = await apiRequest<ApiToken & { token: string }>(this.auth, "POST", "/api/v1/tokens", {
          name: name.value.trim(),
          expiresInDays: Number(days.value),
        });
        this.newToken.textContent = `Copy the token now, it is not shown again: ${created.token}`;
        this.newToken.hidden = false;
        form.reset();
      });
    });
    return section(
      this.isAdmin ? "API tokens (everyone's)" : "Your API tokens",
      table(["Name", "Agent", "Projects", "Expires", ""], this.tokens),
      this.newToken,
      form,
    );
  }

  private async loadTokens(): Promise<void> {
    const { tokens } = await apiRequest<{ tokens: ApiToken[] }>(this.auth, "GET", "/api/v1/tokens");
    this.tokens.replaceChildren(...tokens.map((token) => this.tokenRow(token)));
  }

  private tokenRow(token: ApiToken): HTMLElement {
    const revoke = h("button", { type: "button", class: "button button-quiet" }, "Revoke");
    revoke.addEventListener("click", () =>
      this.act(() => apiRequest(this.auth, "DELETE", `/api/v1/tokens/${encodeURIComponent(token.id)}`)),
    );
    return h(
      "tr",
      { "data-token-id": token.id },
      h("td", {}, token.name),
      h("td", {}, token.agentName),
      h("td", {}, token.projects.join(", ") || "all of the agent's"),
      h("td", {}, token.expiresAt ? new Date(token.expiresAt).toLocaleDateString() : "never"),
      h("td", {}, revoke),
    );
  }
}

export function section(title: string, ...children: HTMLElement[]): HTMLElement {
  return h("section", { class: "admin-section" }, h("h2", {}, title), ...children);
}

export function table(headings: string[], body: HTMLElement): HTMLElement {
  return h(
    "div",
    { class: "table-scroll" },
    h("table", { class: "admin-table" }, h("thead", {}, h("tr", {}, ...headings.map((text) => h("th", {}, text)))), body),
  );
}

export function labelled(text: string, control: HTMLElement): HTMLElement {
  return h("label", { class: "admin-field" }, h("span", {}, text), control);
}

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter(Boolean);
}
