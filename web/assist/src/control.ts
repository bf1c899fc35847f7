// Remote control on the user's page: the agent's pointer, its clicks, scrolls,
// typed values and select choices, and the bar and Esc key that end control.
import type { Control, RemoteEvent } from "./protocol";
import { type AssistLayer, el } from "./ui";

/** Looks a node up by its rrweb id in the page's recording. */
export type NodeLookup = (id: number) => Node | null;

export class RemoteControl {
  private readonly pointer: HTMLElement;
  private readonly bar: HTMLElement;
  private readonly onKey = (event: KeyboardEvent): void => {
    if (event.key === "Escape") this.stop();
  };

  constructor(
    private readonly control: Control,
    private readonly layer: AssistLayer,
    private readonly findNode: NodeLookup,
    private readonly stop: () => void,
  ) {
    this.pointer = el(
      "div",
      { class: "pointer", "data-testid": "assist-pointer" },
      arrow(control.color),
      el("span", { style: `background:${control.color}` }, control.agentName),
    );
    const stopButton = el("button", { "data-testid": "assist-control-stop" }, "Stop control (Esc)");
    stopButton.addEventListener("click", () => this.stop());
    this.bar = el(
      "div",
      { class: "bar", style: `background:${control.color}`, "data-testid": "assist-control-bar" },
      el("span", {}, `${control.agentName} controls this page`),
      stopButton,
    );
    layer.mount();
    layer.layer.append(this.bar, this.pointer);
    window.addEventListener("keydown", this.onKey, true);
  }

  get agentPeerId(): string {
    return this.control.peerId;
  }

  close(): void {
    window.removeEventListener("keydown", this.onKey, true);
    this.pointer.remove();
    this.bar.remove();
  }

  apply(event: RemoteEvent): void {
    const target = this.resolve(event);
    this.movePointer(target.x, target.y);
    switch (event.kind) {
      case "click":
        this.ripple(target.x, target.y);
        if (target.element) click(target.element, target.x, target.y);
        break;
      case "scroll":
        scroll(target.element, event.dx ?? 0, event.dy ?? 0);
        break;
      case "input":
        if (target.element) setValue(target.element, event.value ?? "");
        break;
      case "select":
        if (target.element instanceof HTMLSelectElement) choose(target.element, event.index ?? -1);
        break;
    }
  }

  /** The element and viewport point the agent meant: by rrweb id when the node is found, else by coordinates. */
  private resolve(event: RemoteEvent): { element: Element | null; x: number; y: number } {
    const node = event.nodeId !== undefined ? this.findNode(event.nodeId) : null;
    if (node instanceof Element && node.isConnected) {
      const box = node.getBoundingClientRect();
      return { element: node, x: box.left + (event.rx ?? 0.5) * box.width, y: box.top + (event.ry ?? 0.5) * box.height };
    }
    if (event.nodeId === undefined && event.kind === "scroll") return { element: null, x: event.x, y: event.y };
    return { element: document.elementFromPoint(event.x, event.y), x: event.x, y: event.y };
  }

  private movePointer(x: number, y: number): void {
    this.pointer.style.transform = `translate(${Math.round(x)}px, ${Math.round(y)}px)`;
  }

  private ripple(x: number, y: number): void {
    const ripple = el("div", { class: "ripple", style: `left:${x}px;top:${y}px;border-color:${this.control.color}` });
    this.layer.layer.append(ripple);
    setTimeout(() => ripple.remove(), 600);
  }
}

function arrow(color: string): SVGSVGElement {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "22");
  svg.setAttribute("viewBox", "0 0 20 22");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", "M1 1 L1 18 L6 13 L10 21 L13 20 L9 12 L16 12 Z");
  path.setAttribute("fill", color);
  path.setAttribute("stroke", "#fff");
  path.setAttribute("stroke-width", "1.5");
  svg.append(path);
  return svg;
}

/** Dispatches the events of a real click, so that the page's own handlers run (and links and buttons activate). */
function click(element: Element, x: number, y: number): void {
  const init = { bubbles: true, cancelable: true, composed: true, clientX: x, clientY: y, view: window, button: 0 };
  element.dispatchEvent(new PointerEvent("pointerdown", { ...init, pointerType: "mouse", isPrimary: true }));
  element.dispatchEvent(new MouseEvent("mousedown", { ...init, buttons: 1 }));
  if (element instanceof HTMLElement) element.focus({ preventScroll: true });
  element.dispatchEvent(new PointerEvent("pointerup", { ...init, pointerType: "mouse", isPrimary: true }));
  element.dispatchEvent(new MouseEvent("mouseup", init));
  element.dispatchEvent(new MouseEvent("click", { ...init, detail: 1 }));
}

/** Scrolls the element, or the page when the agent scrolled outside any scroll box. */
function scroll(element: Element | null, dx: number, dy: number): void {
  if (element === null || element === document.documentElement || element === document.body) {
    window.scrollBy(dx, dy);
  } else {
    element.scrollBy(dx, dy);
  }
}

/** Sets an input's or textarea's whole value through the native setter, so frameworks see the change. */
function setValue(element: Element, value: string): void {
  let prototype: HTMLInputElement | HTMLTextAreaElement;
  if (element instanceof HTMLTextAreaElement) prototype = HTMLTextAreaElement.prototype;
  else if (element instanceof HTMLInputElement) prototype = HTMLInputElement.prototype;
  else return;
  (element as HTMLElement).focus({ preventScroll: true });
  Object.getOwnPropertyDescriptor(prototype, "value")?.set?.call(element, value);
  element.dispatchEvent(new Event("input", { bubbles: true, composed: true }));
  element.dispatchEvent(new Event("change", { bubbles: true }));
}

function choose(select: HTMLSelectElement, index: number): void {
  if (index < 0 || index >= select.options.length) return;
  select.selectedIndex = index;
  select.dispatchEvent(new Event("input", { bubbles: true, composed: true }));
  select.dispatchEvent(new Event("change", { bubbles: true }));
}

/** The agent's drawings, on a canvas over the whole viewport. */
export class Annotations {
  private readonly canvas: HTMLCanvasElement;
  private readonly onResize = (): void => this.clear();

  constructor(layer: AssistLayer) {
    this.canvas = el("canvas", { "data-testid": "assist-annotations" });
    layer.mount();
    layer.layer.append(this.canvas);
    this.clear();
    window.addEventListener("resize", this.onResize);
  }

  draw(points: Array<[number, number]>, color: string): void {
    const context = this.canvas.getContext("2d");
    if (!context || points.length === 0) return;
    context.strokeStyle = color;
    context.lineWidth = 4;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(points[0][0], points[0][1]);
    for (const [x, y] of points.slice(1)) context.lineTo(x, y);
    if (points.length === 1) context.lineTo(points[0][0] + 0.1, points[0][1]);
    context.stroke();
    this.canvas.dataset.strokes = String(Number(this.canvas.dataset.strokes ?? "0") + 1);
  }

  /** Clears the drawing (a resize clears it too, because the strokes no longer fit the page). */
  clear(): void {
    this.canvas.width = window.innerWidth;
    this.canvas.height = window.innerHeight;
    this.canvas.dataset.strokes = "0";
  }

  close(): void {
    window.removeEventListener("resize", this.onResize);
    this.canvas.remove();
  }
}
