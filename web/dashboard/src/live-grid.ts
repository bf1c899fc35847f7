// Up to four live sessions watched side by side (`#/live/grid`). Each cell is
// a LiveView of its own, fed by a watch on the shared socket; "Full size"
// opens the session in the single live view.
import type { ServerClock } from "./clock";
import { h } from "./dom";
import { formatUser } from "./format";
import type { LiveSocket } from "./live-socket";
import { LiveView } from "./live-view";
import type { LiveSession, ServerMessage } from "./protocol";

export const MAX_GRID_SESSIONS = 4;
const STORAGE_KEY = "tandem.grid";

export interface LiveGridOptions {
  clock: ServerClock;
  socket: LiveSocket;
  onOpen: (sessionId: string) => void;
  onBack: () => void;
  /** Called after a session joined or left the grid. */
  onChange: () => void;
}

interface Cell {
  session: LiveSession;
  element: HTMLElement;
  view: LiveView | null;
}

export class LiveGrid {
  readonly element: HTMLElement;
  private readonly cellsElement: HTMLElement;
  private readonly cells = new Map<string, Cell>();
  private visible = false;

  constructor(private readonly options: LiveGridOptions) {
    const backButton = h("button", { type: "button", class: "button", "data-testid": "grid-back" }, "Back to list");
    backButton.addEventListener("click", () => options.onBack());
    this.cellsElement = h("div", { class: "grid-cells", "data-testid": "live-grid" });
    this.element = h(
      "section",
      { class: "live-grid", hidden: true },
      h("header", { class: "grid-header" }, backButton, h("span", { class: "grid-hint" }, "Watching up to four sessions. “Full size” opens one alone.")),
      this.cellsElement,
    );
    for (const session of loadGrid()) this.cells.set(session.sessionId, this.createCell(session));
  }

  get size(): number {
    return this.cells.size;
  }

  has(sessionId: string): boolean {
    return this.cells.has(sessionId);
  }

  /** Adds the session to the grid or removes it; returns false when the grid is already full. */
  toggle(session: LiveSession): boolean {
    if (this.cells.has(session.sessionId)) {
      this.removeCell(session.sessionId);
      return true;
    }
    if (this.cells.size >= MAX_GRID_SESSIONS) return false;
    const cell = this.createCell(session);
    this.cells.set(session.sessionId, cell);
    if (this.visible) this.startCell(cell);
    this.changed();
    return true;
  }

  /** Starts every cell's live view and watch; call when the grid route opens. */
  show(): void {
    this.visible = true;
    this.element.hidden = false;
    for (const cell of this.cells.values()) this.startCell(cell);
  }

  /** Stops every cell's live view and watch, so that the single view can watch one of them from its start. */
  hide(): void {
    this.visible = false;
    this.element.hidden = true;
    for (const cell of this.cells.values()) this.stopCell(cell);
  }

  handle(message: ServerMessage): void {
    if (message.type === "session.update") {
      const cell = this.cells.get(message.session.sessionId);
      if (cell) {
        cell.session = message.session;
        cell.view?.handle({ type: "list.upsert", session: message.session });
      }
      return;
    }
    if (message.type === "session.ended") {
      this.cells.get(message.sessionId)?.view?.handle({ type: "list.remove", sessionId: message.sessionId, reason: "ended" });
      return;
    }
    for (const cell of this.cells.values()) cell.view?.handle(message);
  }

  private createCell(session: LiveSession): Cell {
    // The cell's live view shows the user and page; the cell adds only its two buttons.
    const user = formatUser(session);
    const openButton = h("button", { type: "button", class: "button", "data-testid": "grid-open", "aria-label": `Open ${user} full size` }, "Full size");
    const removeButton = h(
      "button",
      { type: "button", class: "button button-quiet", "data-testid": "grid-remove", "aria-label": `Remove ${user} from the grid` },
      "Remove",
    );
    const element = h(
      "article",
      { class: "grid-cell", "data-testid": "grid-cell", "data-session-id": session.sessionId, "data-user-id": session.userId ?? "" },
      h("div", { class: "grid-cell-actions" }, openButton, removeButton),
    );
    openButton.addEventListener("click", () => this.options.onOpen(session.sessionId));
    removeButton.addEventListener("click", () => this.removeCell(session.sessionId));
    this.cellsElement.append(element);
    return { session, element, view: null };
  }

  private startCell(cell: Cell): void {
    if (cell.view !== null) return;
    const sessionId = cell.session.sessionId;
    cell.view = new LiveView(cell.element, {
      sessionId,
      session: cell.session,
      clock: this.options.clock,
      onBack: () => this.options.onBack(),
    });
    this.options.socket.addWatch(sessionId);
  }

  private stopCell(cell: Cell): void {
    if (cell.view === null) return;
    this.options.socket.removeWatch(cell.session.sessionId);
    cell.view.destroy();
    cell.view = null;
  }

  private removeCell(sessionId: string): void {
    const cell = this.cells.get(sessionId);
    if (!cell) return;
    this.stopCell(cell);
    cell.element.remove();
    this.cells.delete(sessionId);
    this.changed();
  }

  private changed(): void {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify([...this.cells.values()].map((cell) => cell.session)));
    this.options.onChange();
  }
}

function loadGrid(): LiveSession[] {
  try {
    const stored = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "[]") as unknown;
    return Array.isArray(stored) ? (stored as LiveSession[]).slice(0, MAX_GRID_SESSIONS) : [];
  } catch {
    return [];
  }
}
