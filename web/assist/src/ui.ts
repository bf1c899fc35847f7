// The assist plugin's elements on the user's page, inside one shadow root so
// that the page's styles do not reach them. The host carries rrweb's default
// block class, so the recording (and the agent's replay) leaves them out.

const STYLE = `
:host { all: initial; }
.layer { position: fixed; inset: 0; pointer-events: none; z-index: 2147483647; font: 14px/1.4 system-ui, sans-serif; color: #111; }
.dialog { pointer-events: auto; position: fixed; top: 24px; left: 50%; transform: translateX(-50%); background: #fff;
  border-radius: 10px; box-shadow: 0 8px 30px rgba(0,0,0,.25); padding: 18px 20px; min-width: 300px; max-width: 420px; }
.dialog h2 { margin: 0 0 6px; font-size: 16px; }
.dialog p { margin: 0 0 14px; }
.row { display: flex; gap: 8px; justify-content: flex-end; }
button { font: inherit; border: 0; border-radius: 6px; padding: 7px 14px; cursor: pointer; background: #e5e7eb; color: #111; }
button.primary { background: #2563eb; color: #fff; }
button.danger { background: #dc2626; color: #fff; }
.call { pointer-events: auto; position: fixed; right: 16px; bottom: 16px; width: 260px; background: #111827; color: #fff;
  border-radius: 10px; padding: 8px; box-shadow: 0 8px 30px rgba(0,0,0,.35); }
.call video { width: 100%; border-radius: 6px; background: #000; display: block; margin-bottom: 6px; }
.call video.local { width: 35%; }
.call .row { justify-content: space-between; }
.bar { pointer-events: auto; position: fixed; top: 0; left: 50%; transform: translateX(-50%); color: #fff;
  padding: 6px 12px; border-radius: 0 0 8px 8px; display: flex; gap: 10px; align-items: center; }
.pointer { position: fixed; left: 0; top: 0; transition: transform 60ms linear; will-change: transform; }
.pointer span { position: absolute; left: 16px; top: 18px; color: #fff; font-size: 12px; padding: 1px 6px; border-radius: 4px; white-space: nowrap; }
.ripple { position: fixed; width: 24px; height: 24px; margin: -12px 0 0 -12px; border-radius: 50%; border: 3px solid; opacity: .8;
  animation: ripple .5s ease-out forwards; }
@keyframes ripple { to { transform: scale(2.2); opacity: 0; } }
canvas { position: fixed; inset: 0; }
`;

export interface ConfirmText {
  title?: string;
  text?: string;
  acceptText?: string;
  declineText?: string;
}

export type ConfirmOption = string | ConfirmText | undefined;

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attributes: Record<string, string> = {},
  ...children: Array<Node | string>
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/** Fills `{agent}` in a configured text with the agent's name. */
function fill(text: string, agentName: string): string {
  return text.split("{agent}").join(agentName);
}

export class AssistLayer {
  readonly host: HTMLElement;
  readonly layer: HTMLElement;

  constructor() {
    this.host = el("div", { class: "rr-block", "data-tandem-assist": "" });
    this.host.style.cssText = "position:fixed;top:0;left:0;width:0;height:0;overflow:visible;z-index:2147483647";
    const root = this.host.attachShadow({ mode: "open" });
    this.layer = el("div", { class: "layer" });
    root.append(el("style", {}, STYLE), this.layer);
  }

  mount(): void {
    if (!this.host.isConnected) (document.body || document.documentElement).append(this.host);
  }

  unmount(): void {
    this.host.remove();
  }

  /** Shows a consent dialog; `answer` is called once with true (accept) or false (decline). */
  confirm(
    option: ConfirmOption,
    defaults: Required<ConfirmText>,
    agentName: string,
    testId: string,
    answer: (accepted: boolean) => void,
  ): () => void {
    const text = typeof option === "string" ? { text: option } : option ?? {};
    const settings = { ...defaults, ...text };
    const accept = el("button", { class: "primary", "data-testid": "assist-accept" }, fill(settings.acceptText, agentName));
    const decline = el("button", { "data-testid": "assist-decline" }, fill(settings.declineText, agentName));
    const dialog = el(
      "div",
      { class: "dialog", role: "dialog", "data-testid": testId },
      el("h2", {}, fill(settings.title, agentName)),
      el("p", { "data-testid": "assist-dialog-text" }, fill(settings.text, agentName)),
      el("div", { class: "row" }, decline, accept),
    );
    let answered = false;
    const finish = (accepted: boolean): void => {
      if (answered) return;
      answered = true;
      dialog.remove();
      answer(accepted);
    };
    accept.addEventListener("click", () => finish(true));
    decline.addEventListener("click", () => finish(false));
    this.mount();
    this.layer.append(dialog);
    accept.focus();
    return () => {
      answered = true;
      dialog.remove();
    };
  }
}
