// Searchable signals beside the DOM recording: clicks with a readable label, JS
// errors and console messages. Each observer adds fenced listeners and returns
// its teardown; every text goes through the privacy rules before it is queued.
import { listen } from "./fence";
import type { Privacy } from "./privacy";

export type EmitSignal = (tag: string, payload: Record<string, unknown>) => void;

export interface SignalOptions {
  /** Record uncaught errors and unhandled promise rejections. Default true. */
  captureExceptions?: boolean;
  /** Console levels to record; an empty list records none. Default ["error", "warn"]. */
  consoleLevels?: string[];
}

const MAX_LABEL_LENGTH = 120;
const MAX_MESSAGE_LENGTH = 1000;
const MAX_STACK_LENGTH = 4000;
/** Console messages recorded per window; the rest are counted in one summary message. */
const CONSOLE_MESSAGES_PER_WINDOW = 20;
const CONSOLE_WINDOW_MS = 10_000;
const CLICKABLE = "a, button, input, select, textarea, label, summary, [role=button], [role=link], [role=tab], [role=menuitem], [onclick]";

/** Records each click as `tandem.click` with the clicked control's label and a short CSS selector. */
export function observeClicks(privacy: Privacy, emit: EmitSignal): () => void {
  return listen(
    document,
    "click",
    (event) => {
      const target = event.target instanceof Element ? event.target : null;
      if (!target) return;
      const element = target.closest(CLICKABLE) ?? target;
      const label = privacy.maskLabel(readableLabel(element), element);
      emit("tandem.click", { label, selector: shortSelector(element) });
    },
    { capture: true, passive: true },
  );
}

/** Records uncaught errors and unhandled rejections as `tandem.error` with message and stack. */
export function observeErrors(privacy: Privacy, emit: EmitSignal): () => void {
  const report = (message: string, stack: string | undefined, source: string) =>
    emit("tandem.error", {
      message: privacy.maskFreeText(truncate(message, MAX_MESSAGE_LENGTH)),
      stack: stack ? privacy.maskFreeText(truncate(stack, MAX_STACK_LENGTH)) : undefined,
      source,
    });
  const stopErrors = listen(window, "error", (event) => {
    const errorEvent = event as ErrorEvent;
    if (!errorEvent.message && !errorEvent.error) return; // a resource failed to load, not a script error
    const error = errorEvent.error as Error | undefined;
    report(errorEvent.message || String(error), error?.stack, "error");
  });
  const stopRejections = listen(window, "unhandledrejection", (event) => {
    const reason = (event as PromiseRejectionEvent).reason as unknown;
    const message = reason instanceof Error ? reason.message : safeString(reason);
    report(message, reason instanceof Error ? reason.stack : undefined, "unhandledrejection");
  });
  return () => {
    stopErrors();
    stopRejections();
  };
}

/**
 * Records console messages of `levels` as `tandem.console`, at most
 * CONSOLE_MESSAGES_PER_WINDOW per window, so that a page logging in a loop
 * neither floods the session nor slows down.
 */
export function observeConsole(privacy: Privacy, emit: EmitSignal, levels: string[]): () => void {
  const target = console as unknown as Record<string, (...args: unknown[]) => void>;
  const originals = new Map<string, (...args: unknown[]) => void>();
  let windowStart = 0;
  let sent = 0;
  let skipped = 0;

  const record = (level: string, args: unknown[]) => {
    const now = Date.now();
    if (now - windowStart > CONSOLE_WINDOW_MS) {
      if (skipped > 0) emit("tandem.console", { level: "warn", message: `${skipped} console messages were not recorded` });
      windowStart = now;
      sent = 0;
      skipped = 0;
    }
    if (sent >= CONSOLE_MESSAGES_PER_WINDOW) {
      skipped++;
      return;
    }
    sent++;
    const message = truncate(args.map(safeString).join(" "), MAX_MESSAGE_LENGTH);
    emit("tandem.console", { level, message: privacy.maskFreeText(message) });
  };

  for (const level of levels) {
    const original = target[level];
    if (typeof original !== "function") continue;
    originals.set(level, original);
    target[level] = function (this: unknown, ...args: unknown[]) {
      try {
        record(level, args);
      } catch {
        // The tracker never breaks the page's own logging.
      }
      return original.apply(this, args);
    };
  }
  return () => {
    for (const [level, original] of originals) target[level] = original;
  };
}

function readableLabel(element: Element): string {
  const attribute = (name: string) => element.getAttribute(name)?.trim() || "";
  let label = attribute("aria-label");
  if (!label && element instanceof HTMLInputElement && ["button", "submit", "reset"].includes(element.type)) {
    label = element.value;
  }
  if (!label) label = (element as HTMLElement).innerText?.trim() || element.textContent?.trim() || "";
  if (!label) label = attribute("title") || attribute("alt") || attribute("name");
  return truncate(label.replace(/\s+/g, " "), MAX_LABEL_LENGTH);
}

/** Builds a selector of up to four levels: `#id` where there is one, else tag, classes and position. */
function shortSelector(element: Element): string {
  const parts: string[] = [];
  let current: Element | null = element;
  while (current && current !== document.documentElement && parts.length < 4) {
    if (current.id) {
      parts.unshift(`#${CSS.escape(current.id)}`);
      break;
    }
    const testId = current.getAttribute("data-testid");
    let part = current.tagName.toLowerCase();
    if (testId) {
      part += `[data-testid="${testId.replace(/"/g, '\\"')}"]`;
    } else {
      const classes = Array.from(current.classList).slice(0, 2).map((name) => `.${CSS.escape(name)}`);
      part += classes.join("");
      const siblings = current.parentElement ? Array.from(current.parentElement.children).filter((child) => child.tagName === current!.tagName) : [];
      if (siblings.length > 1) part += `:nth-of-type(${siblings.indexOf(current) + 1})`;
    }
    parts.unshift(part);
    current = current.parentElement;
  }
  return parts.join(" > ");
}

function truncate(text: string, length: number): string {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function safeString(value: unknown): string {
  if (typeof value === "string") return value;
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
