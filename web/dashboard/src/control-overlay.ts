// A layer over the replay that turns the agent's mouse into remote-control
// events (when control is granted) and into drawings (when the draw tool is on).
// Points are mapped to the user's viewport with the live view's scale and
// offset. Targets are resolved in the replay's DOM to rrweb node ids, so that
// the tracker finds the same element even where the two pages differ in scroll.
import type { RemoteEvent } from "../../assist/src/protocol";
import { h } from "./dom";

/** The part of the live view that the overlay uses. */
export interface ReplaySurface {
  readonly stage: HTMLElement;
  readonly iframe: HTMLIFrameElement;
  clientToPage(clientX: number, clientY: number): { x: number; y: number } | null;
  /** The rrweb id of a node of the replayed page, or -1. */
  nodeId(node: Node): number;
}

type Send = (frame: Record<string, unknown>) => void;

const MOVE_INTERVAL_MS = 50;
const SCROLL_INTERVAL_MS = 50;
const TEXT_INPUT_TYPES = new Set(["", "text", "search", "email", "tel", "url", "number", "password", "date", "time"]);

export class ControlOverlay {
  readonly element: HTMLElement;
  private controlling = false;
  private drawing = false;
  private lastMoveAt = 0;
  private stroke: Array<[number, number]> | null = null;
  private scrollDelta = { dx: 0, dy: 0, nodeId: undefined as number | undefined, x: 0, y: 0 };
  private scrollTimer: number | undefined;
  private editor: HTMLElement | null = null;

  constructor(
    private readonly surface: ReplaySurface,
    private readonly send: Send,
  ) {
    this.element = h("div", { class: "assist-overlay", "data-testid": "assist-control-overlay", hidden: true });
    this.element.addEventListener("mousemove", (event) => this.onMove(event));
    this.element.addEventListener("mousedown", (event) => this.onDown(event));
    this.element.addEventListener("mouseup", (event) => this.onUp(event));
    this.element.addEventListener("click", (event) => this.onClick(event));
    this.element.addEventListener("wheel", (event) => this.onWheel(event), { passive: false });
    surface.stage.append(this.element);
  }

  setControlling(controlling: boolean): void {
    this.controlling = controlling;
    if (!controlling) this.closeEditor();
    this.update();
  }

  setDrawing(drawing: boolean): void {
    this.drawing = drawing;
    this.update();
  }

  destroy(): void {
    window.clearTimeout(this.scrollTimer);
    this.element.remove();
  }

  private update(): void {
    this.element.hidden = !(this.controlling || this.drawing);
    let mode = "off";
    if (this.drawing) mode = "draw";
    else if (this.controlling) mode = "control";
    this.element.dataset.mode = mode;
  }

  private sendEvent(event: RemoteEvent): void {
    this.send({ type: "control.event", event: { ...event, sentAt: Date.now() } });
  }

  private onMove(event: MouseEvent): void {
    const point = this.surface.clientToPage(event.clientX, event.clientY);
    if (!point) return;
    if (this.drawing) {
      if (this.stroke) this.stroke.push([round(point.x), round(point.y)]);
      return;
    }
    const now = performance.now();
    if (now - this.lastMoveAt < MOVE_INTERVAL_MS) return;
    this.lastMoveAt = now;
    this.sendEvent({ kind: "move", x: round(point.x), y: round(point.y) });
  }

  private onDown(event: MouseEvent): void {
    if (!this.drawing) return;
    const point = this.surface.clientToPage(event.clientX, event.clientY);
    if (point) this.stroke = [[round(point.x), round(point.y)]];
  }

  private onUp(_: MouseEvent): void {
    if (!this.drawing || !this.stroke) return;
    const points = this.stroke.slice(0, 2000);
    this.stroke = null;
    this.send({ type: "annotate.draw", points });
  }

  private onClick(event: MouseEvent): void {
    if (this.drawing || !this.controlling) return;
    const point = this.surface.clientToPage(event.clientX, event.clientY);
    if (!point) return;
    this.closeEditor();
    const target = this.targetAt(point.x, point.y);
    this.sendEvent({ kind: "click", x: round(point.x), y: round(point.y), ...target.ids });
    const element = target.element;
    if (element instanceof HTMLSelectElement || element?.tagName === "SELECT") {
      this.openSelect(element as HTMLSelectElement, target.ids.nodeId, point, event);
    } else if (isTextField(element)) {
      this.openTextEditor(target.ids.nodeId, point, event);
    }
  }

  private onWheel(event: WheelEvent): void {
    if (!this.controlling || this.drawing) return;
    event.preventDefault();
    const point = this.surface.clientToPage(event.clientX, event.clientY);
    if (!point) return;
    const box = this.scrollBoxAt(point.x, point.y);
    const delta = this.scrollDelta;
    if (delta.nodeId !== box) this.flushScroll();
    delta.nodeId = box;
    delta.x = round(point.x);
    delta.y = round(point.y);
    delta.dx += event.deltaX;
    delta.dy += event.deltaY;
    if (this.scrollTimer === undefined) this.scrollTimer = window.setTimeout(() => this.flushScroll(), SCROLL_INTERVAL_MS);
  }

  private flushScroll(): void {
    window.clearTimeout(this.scrollTimer);
    this.scrollTimer = undefined;
    const { dx, dy, nodeId, x, y } = this.scrollDelta;
    this.scrollDelta = { dx: 0, dy: 0, nodeId: undefined, x: 0, y: 0 };
    if (dx === 0 && dy === 0) return;
    this.sendEvent({ kind: "scroll", x, y, dx: round(dx), dy: round(dy), ...(nodeId !== undefined ? { nodeId } : {}) });
  }

  /** The element under a point of the replayed page, with its rrweb id and the point's place inside it. */
  private targetAt(x: number, y: number): { element: Element | null; ids: Partial<RemoteEvent> } {
    const element = this.surface.iframe.contentDocument?.elementFromPoint(x, y) ?? null;
    if (element === null) return { element, ids: {} };
    const nodeId = this.surface.nodeId(element);
    if (nodeId < 0) return { element, ids: {} };
    const box = element.getBoundingClientRect();
    const rx = box.width > 0 ? (x - box.left) / box.width : 0.5;
    const ry = box.height > 0 ? (y - box.top) / box.height : 0.5;
    return { element, ids: { nodeId, rx: clamp(rx), ry: clamp(ry) } };
  }

  /** Returns the rrweb id of the innermost scroll box under the point, or undefined for the page itself. */
  private scrollBoxAt(x: number, y: number): number | undefined {
    const documentOfPage = this.surface.iframe.contentDocument;
    let element = documentOfPage?.elementFromPoint(x, y) ?? null;
    while (element && element !== documentOfPage?.body && element !== documentOfPage?.documentElement) {
      const style = element.ownerDocument.defaultView?.getComputedStyle(element);
      const scrollable = /(auto|scroll)/.test(`${style?.overflowY} ${style?.overflowX}`);
      if (scrollable && (element.scrollHeight > element.clientHeight || element.scrollWidth > element.clientWidth)) {
        const nodeId = this.surface.nodeId(element);
        return nodeId >= 0 ? nodeId : undefined;
      }
      element = element.parentElement;
    }
    return undefined;
  }

  private openTextEditor(nodeId: number | undefined, point: { x: number; y: number }, event: MouseEvent): void {
    const input = h("input", { type: "text", class: "assist-editor-input", placeholder: "Type, then Enter", "data-testid": "assist-type-input" });
    input.addEventListener("keydown", (key) => {
      if (key.key === "Enter") {
        this.sendEvent({ kind: "input", x: round(point.x), y: round(point.y), value: input.value, ...(nodeId !== undefined ? { nodeId } : {}) });
        this.closeEditor();
      } else if (key.key === "Escape") {
        this.closeEditor();
      }
    });
    this.showEditor(input, event);
    input.focus();
  }

  private openSelect(select: HTMLSelectElement, nodeId: number | undefined, point: { x: number; y: number }, event: MouseEvent): void {
    const choices = h("select", { class: "assist-editor-select", "data-testid": "assist-select" });
    choices.append(h("option", { value: "-1" }, "Choose…"));
    Array.from(select.options).forEach((option, index) => choices.append(h("option", { value: String(index) }, option.text)));
    choices.addEventListener("change", () => {
      const index = Number(choices.value);
      if (index >= 0) this.sendEvent({ kind: "select", x: round(point.x), y: round(point.y), index, ...(nodeId !== undefined ? { nodeId } : {}) });
      this.closeEditor();
    });
    this.showEditor(choices, event);
    choices.focus();
  }

  private showEditor(control: HTMLElement, event: MouseEvent): void {
    const stageBox = this.surface.stage.getBoundingClientRect();
    this.editor = h("div", { class: "assist-editor", style: `left:${event.clientX - stageBox.left}px;top:${event.clientY - stageBox.top + 8}px` }, control);
    this.editor.addEventListener("click", (click) => click.stopPropagation());
    this.editor.addEventListener("mousedown", (down) => down.stopPropagation());
    this.element.append(this.editor);
  }

  private closeEditor(): void {
    this.editor?.remove();
    this.editor = null;
  }
}

function isTextField(element: Element | null): boolean {
  if (element === null) return false;
  if (element.tagName === "TEXTAREA") return true;
  return element.tagName === "INPUT" && TEXT_INPUT_TYPES.has((element.getAttribute("type") ?? "").toLowerCase());
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function clamp(value: number): number {
  return Math.min(1, Math.max(0, Math.round(value * 1000) / 1000));
}
