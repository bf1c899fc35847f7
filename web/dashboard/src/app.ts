// The signed-in dashboard: the top bar, the live socket, and the routes
// `#/live` (the live list with its search), `#/live/grid` (up to four
// sessions side by side) and `#/live/<sessionId>` (the live view).
import { type AuthState, clearAuth } from "./api";
import { h } from "./dom";
import { LiveFilters } from "./live-filters";
import { LiveGrid, MAX_GRID_SESSIONS } from "./live-grid";
import { DEFAULT_LIST_QUERY, LiveList } from "./live-list";
import { LiveSocket, type SocketStatus } from "./live-socket";
import { LiveView } from "./live-view";
import type { ListQuery, LiveSession, ServerMessage } from "./protocol";

const PROJECT_STORAGE_KEY = "tandem.projectId";
const DEFAULT_PROJECT_ID = "demo";
const LIVE_VIEW_ROUTE = /^#\/live\/(.+)$/;
const GRID_ROUTE = "#/live/grid";

export class DashboardApp {
  private readonly socket: LiveSocket;
  private readonly list: LiveList;
  private readonly filters: LiveFilters;
  private readonly grid: LiveGrid;
  private readonly gridLink: HTMLAnchorElement;
  private listQuery: ListQuery = { ...DEFAULT_LIST_QUERY };
  private view: LiveView | null = null;
  private currentProjectId = "";
  private readonly content: HTMLElement;
  private readonly connection: HTMLElement;
  private readonly notice: HTMLElement;
  private readonly projectInput: HTMLInputElement;
  private readonly tickTimer: number;
  private readonly onHashChange = (): void => this.route();

  /**
   * Renders the dashboard into `root` and connects. `onSignOut` runs after the
   * agent signs out or the server rejects the token, with the reason to show.
   */
  constructor(
    root: HTMLElement,
    auth: AuthState,
    private readonly onSignOut: (message: string) => void,
  ) {
    this.socket = new LiveSocket(auth.token);
    this.list = new LiveList({
      clock: this.socket.clock,
      onOpen: (session) => this.navigateToView(session.sessionId),
      onPage: (offset) => this.changeListQuery({ offset }),
      inGrid: (sessionId) => this.grid.has(sessionId),
      onToggleGrid: (session) => this.toggleGrid(session),
    });
    this.filters = new LiveFilters({ onChange: (query) => this.changeListQuery({ ...query, offset: 0 }) });
    this.grid = new LiveGrid({
      clock: this.socket.clock,
      socket: this.socket,
      onOpen: (sessionId) => this.navigateToView(sessionId),
      onBack: () => {
        location.hash = "#/live";
      },
      onChange: () => this.renderGridLink(),
    });
    this.gridLink = h("a", { class: "nav-link", href: GRID_ROUTE, "data-testid": "nav-grid" });
    this.content = h("main", { class: "content" }, this.filters.element, this.list.element, this.grid.element);
    this.connection = h("span", { class: "connection", role: "status" });
    this.notice = h("div", { class: "notice notice-error", role: "alert", hidden: true });
    this.projectInput = h("input", {
      id: "project-id",
      class: "project-input",
      value: localStorage.getItem(PROJECT_STORAGE_KEY) || DEFAULT_PROJECT_ID,
      spellcheck: false,
      "data-testid": "project-id",
    });

    root.replaceChildren(h("div", { class: "app" }, this.createTopBar(auth), this.notice, this.content));

    this.renderGridLink();
    this.socket.onStatus((status) => this.renderStatus(status));
    this.socket.onMessage((message) => this.handleMessage(message));
    this.applyProject();
    this.socket.connect();

    window.addEventListener("hashchange", this.onHashChange);
    this.tickTimer = window.setInterval(() => this.list.tick(), 1000);
    this.route();
  }

  private createTopBar(auth: AuthState): HTMLElement {
    const signOutButton = h("button", { type: "button", class: "button button-quiet", "data-testid": "sign-out" }, "Sign out");
    signOutButton.addEventListener("click", () => this.signOut(""));

    const projectForm = h(
      "form",
      { class: "project-form" },
      h("label", { for: "project-id" }, "Project"),
      this.projectInput,
    );
    projectForm.addEventListener("submit", (event) => {
      event.preventDefault();
      this.applyProject();
    });
    this.projectInput.addEventListener("change", () => this.applyProject());

    return h(
      "header",
      { class: "top-bar" },
      h("a", { class: "brand", href: "#/live" }, "Tandem"),
      h("nav", { class: "nav" }, h("a", { class: "nav-link is-current", href: "#/live" }, "Live sessions"), this.gridLink),
      projectForm,
      h("span", { class: "spacer" }),
      this.connection,
      h("span", { class: "agent-name", title: `Role: ${auth.agent.role}` }, auth.agent.name),
      signOutButton,
    );
  }

  /** Subscribes to the project typed in the top bar, unless it is empty or unchanged. */
  private applyProject(): void {
    const projectId = this.projectInput.value.trim();
    if (projectId === "") {
      this.projectInput.value = localStorage.getItem(PROJECT_STORAGE_KEY) || DEFAULT_PROJECT_ID;
      return;
    }
    if (projectId === this.currentProjectId) return;

    this.currentProjectId = projectId;
    localStorage.setItem(PROJECT_STORAGE_KEY, projectId);
    this.listQuery = { ...this.listQuery, offset: 0 };
    this.subscribeList();
  }

  /** Subscribes to the list page that `change` describes, from the current search on. */
  private changeListQuery(change: Partial<ListQuery>): void {
    this.listQuery = { ...this.listQuery, ...change };
    this.subscribeList();
  }

  private subscribeList(): void {
    this.filters.setQuery(this.listQuery);
    this.list.setProject(this.currentProjectId, this.listQuery);
    this.socket.subscribeList(this.currentProjectId, this.listQuery);
  }

  private toggleGrid(session: LiveSession): boolean {
    const changed = this.grid.toggle(session);
    if (!changed) this.showNotice(`The grid shows at most ${MAX_GRID_SESSIONS} sessions: remove one first.`);
    return changed;
  }

  private renderGridLink(): void {
    this.gridLink.textContent = `Grid (${this.grid.size})`;
    this.list.refreshGridMarks();
  }

  private route(): void {
    // A notice is about the page it appeared on, for example a watch that failed.
    this.notice.hidden = true;
    if (location.hash === GRID_ROUTE) {
      this.showGrid();
      return;
    }
    const match = LIVE_VIEW_ROUTE.exec(location.hash);
    if (match) {
      this.openView(decodeURIComponent(match[1]));
    } else {
      this.showList();
    }
  }

  private showGrid(): void {
    this.closeView();
    this.list.element.hidden = true;
    this.filters.element.hidden = true;
    this.grid.show();
    document.title = "Grid · Tandem";
  }

  private navigateToView(sessionId: string): void {
    location.hash = `#/live/${encodeURIComponent(sessionId)}`;
  }

  private showList(): void {
    this.closeView();
    this.grid.hide();
    this.list.element.hidden = false;
    this.filters.element.hidden = false;
    this.list.tick();
    document.title = "Live sessions · Tandem";
  }

  private openView(sessionId: string): void {
    if (this.view?.sessionId === sessionId) return;
    this.closeView();
    // The grid's watches end first: a watch the grid still held would not restart at the latest page.
    this.grid.hide();
    this.list.element.hidden = true;
    this.filters.element.hidden = true;

    const session = this.list.get(sessionId);
    this.view = new LiveView(this.content, {
      sessionId,
      session,
      clock: this.socket.clock,
      onBack: () => {
        location.hash = "#/live";
      },
    });
    this.socket.watch(sessionId);
    document.title = `${session?.userId || "Live session"} · Tandem`;
  }

  private closeView(): void {
    if (this.view === null) return;
    this.socket.unwatch();
    this.view.destroy();
    this.view = null;
  }

  private handleMessage(message: ServerMessage): void {
    if (message.type === "error") {
      console.warn("The live server sent an error", message.code, message.message);
      if (message.code === "invalid_query" || message.code === "invalid_request") {
        this.filters.showError(message.message);
      } else {
        this.showNotice(message.message);
      }
      return;
    }
    switch (message.type) {
      case "list.snapshot":
      case "list.counts":
        this.filters.setFacets(message.facets ?? {});
        this.list.handle(message);
        return;
      case "list.upsert":
      case "list.remove":
        // A row that leaves the page has not ended: the views learn of endings from session.ended.
        this.list.handle(message);
        return;
      case "session.update":
        if (this.view?.sessionId === message.session.sessionId) this.view.handle({ type: "list.upsert", session: message.session });
        this.grid.handle(message);
        return;
      case "session.ended":
        if (this.view?.sessionId === message.sessionId) this.view.handle({ type: "list.remove", sessionId: message.sessionId, reason: "ended" });
        this.grid.handle(message);
        return;
      case "watch.pending":
        // The project asks users first (sessionConfirm): nothing streams until the user accepts.
        this.showNotice("The user is asked to accept being watched. The session appears once they do.");
        return;
      case "watch.started":
        this.notice.hidden = true;
        break;
      case "watch.stopped":
        if (message.reason === "consent_withdrawn") this.showNotice("The user stopped sharing their page.");
        break;
    }
    this.view?.handle(message);
    this.grid.handle(message);
  }

  private showNotice(message: string): void {
    const dismissButton = h("button", { type: "button", class: "button button-quiet", "aria-label": "Dismiss" }, "Dismiss");
    dismissButton.addEventListener("click", () => {
      this.notice.hidden = true;
    });
    this.notice.replaceChildren(h("span", {}, message), dismissButton);
    this.notice.hidden = false;
  }

  private renderStatus(status: SocketStatus): void {
    this.connection.dataset.state = status.state;
    switch (status.state) {
      case "connecting":
        this.connection.textContent = "Connecting…";
        break;
      case "connected":
        this.connection.textContent = "Connected";
        break;
      case "retrying":
        this.connection.textContent = `Disconnected (${status.reason}), retrying in ${Math.ceil(status.delayMs / 1000)} s`;
        break;
      case "rejected":
        this.signOut(`You were signed out because the live server rejected your token: ${status.message}`);
        break;
      case "closed":
        this.connection.textContent = "Disconnected";
        break;
    }
  }

  private signOut(message: string): void {
    window.removeEventListener("hashchange", this.onHashChange);
    window.clearInterval(this.tickTimer);
    this.closeView();
    this.socket.close();
    clearAuth();
    this.onSignOut(message);
  }
}
