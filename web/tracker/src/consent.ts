// Viewing consent (the project's sessionConfirm setting). While a session of
// such a project runs, the tracker long-polls `GET {ingestPoint}/v1/web/consent`;
// when an agent asks to watch, it shows a dialog, and posts the user's answer.
// No live data reaches an agent before the user accepts. While the user shares
// the page, a small banner offers to stop sharing.
import { parseRetryAfter, retryDelay } from "./backoff";
import { fencedTimeout, listen, warnOnce } from "./fence";
import type { SessionInfo, Tracker } from "./tracker";

/** Seconds one poll waits on the server for a request: under 30 s, so that a proxy with a 30 s idle timeout keeps it open. */
const POLL_WAIT_SECONDS = 25;
const REQUEST_TIMEOUT_MS = (POLL_WAIT_SECONDS + 10) * 1000;
const MAX_ANSWER_ATTEMPTS = 3;
/** Marks Tandem's own elements, so that a page's scripts and styles can tell them apart. */
const UI_ATTRIBUTE = "data-tandem-consent";

interface WatchRequest {
  requestId: string;
  agentName: string;
  requestedAt: number;
  expiresAt: number;
}

interface ConsentPoll {
  sessionConfirm: boolean;
  state: "none" | "pending" | "accepted" | "declined" | "expired";
  request: WatchRequest | null;
}

/** Polls while a session of a project with sessionConfirm is active; installed on every Tracker. */
export function installConsent(tracker: Tracker): void {
  let current: ConsentPrompt | null = null;
  tracker.onStart((info) => {
    current?.stop();
    current = info.sessionConfirm ? new ConsentPrompt(info) : null;
    current?.start();
  });
  tracker.onStop(() => {
    current?.stop();
    current = null;
  });
}

/** The poll loop, the dialog and the sharing banner of one session. */
class ConsentPrompt {
  private stopped = false;
  private controller: AbortController | null = null;
  private failures = 0;
  private shownRequestId: string | null = null;
  private dialog: HTMLElement | null = null;
  private banner: HTMLElement | null = null;
  private dialogTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly session: SessionInfo) {}

  start(): void {
    void this.pollForever();
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    this.closeDialog();
    this.showBanner(false);
  }

  private async pollForever(): Promise<void> {
    while (!this.stopped) {
      const delayMs = await this.pollOnce();
      if (delayMs > 0 && !this.stopped) await sleep(delayMs);
    }
  }

  /** Runs one poll; returns the delay before the next one (0 after a successful poll). */
  private async pollOnce(): Promise<number> {
    this.controller = typeof AbortController === "function" ? new AbortController() : null;
    const timer = fencedTimeout(() => this.controller?.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(`${this.endpoint()}?wait=${POLL_WAIT_SECONDS}`, {
        headers: { Authorization: `Bearer ${this.session.token}` },
        credentials: "omit",
        signal: this.controller?.signal,
      });
      if (response.status === 401 || response.status === 403 || response.status === 404) {
        // The session token was replaced or the project changed: the next onStart polls again.
        this.stopped = true;
        return 0;
      }
      if (!response.ok) return this.backoff(parseRetryAfter(response.headers.get("Retry-After")));
      this.failures = 0;
      this.apply((await response.json()) as ConsentPoll);
      return 0;
    } catch {
      return this.stopped ? 0 : this.backoff(null);
    } finally {
      clearTimeout(timer);
    }
  }

  private backoff(retryAfterMs: number | null): number {
    return retryDelay(this.failures++, retryAfterMs);
  }

  private apply(poll: ConsentPoll): void {
    if (!poll.sessionConfirm) {
      this.stop();
      return;
    }
    this.showBanner(poll.state === "accepted");
    if (poll.request && poll.request.requestId !== this.shownRequestId) {
      this.openDialog(poll.request);
    } else if (!poll.request) {
      this.closeDialog();
    }
  }

  private endpoint(): string {
    return `${this.session.ingestPoint}/v1/web/consent`;
  }

  private async answer(body: { requestId?: string; accepted: boolean }): Promise<void> {
    for (let attempt = 0; attempt < MAX_ANSWER_ATTEMPTS && !this.stopped; attempt++) {
      try {
        const response = await fetch(this.endpoint(), {
          method: "POST",
          headers: { Authorization: `Bearer ${this.session.token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ version: 1, ...body }),
          credentials: "omit",
        });
        if (response.ok) {
          this.apply((await response.json()) as ConsentPoll);
          return;
        }
        if (response.status < 500 && response.status !== 429) {
          warnOnce(`consent-answer:${response.status}`, `The consent answer was rejected with HTTP ${response.status}.`);
          return;
        }
      } catch {
        // A network failure: try again after the delay.
      }
      await sleep(retryDelay(attempt, null));
    }
  }

  // The dialog ---------------------------------------------------------------------------

  private openDialog(request: WatchRequest): void {
    this.closeDialog();
    this.shownRequestId = request.requestId;
    const allow = button("Allow", true);
    const decline = button("Decline", false);
    const title = element("p", "font-weight:600;font-size:16px;margin:0 0 8px");
    title.id = "tandem-consent-title";
    title.textContent = "Share this page with support?";
    const text = element("p", "margin:0 0 16px;line-height:1.4");
    // textContent, never innerHTML: the agent's name comes from the server.
    text.textContent =
      `${request.agentName} asks to see this page live, as you see it. ` +
      "Fields you type in stay hidden. You can stop sharing at any time.";
    const buttons = element("div", "display:flex;gap:8px;justify-content:flex-end");
    buttons.append(decline, allow);
    const box = element(
      "div",
      "background:#fff;color:#111;max-width:380px;margin:16px;padding:20px;border-radius:10px;" +
        "box-shadow:0 10px 30px rgba(0,0,0,.25);font:14px/1.4 system-ui,sans-serif",
    );
    box.append(title, text, buttons);
    const overlay = element(
      "div",
      "position:fixed;inset:0;z-index:2147483647;display:flex;align-items:center;justify-content:center;" +
        "background:rgba(0,0,0,.35)",
    );
    overlay.setAttribute("role", "dialog");
    overlay.setAttribute("aria-modal", "true");
    overlay.setAttribute("aria-labelledby", title.id);
    overlay.append(box);

    const respond = (accepted: boolean): void => {
      this.closeDialog();
      void this.answer({ requestId: request.requestId, accepted });
    };
    listen(allow, "click", () => respond(true));
    listen(decline, "click", () => respond(false));
    document.body.append(overlay);
    this.dialog = overlay;
    allow.focus();
    // The request's lifetime, measured on this clock: the server's and the page's clocks differ.
    this.dialogTimer = fencedTimeout(() => this.closeDialog(), Math.max(0, request.expiresAt - request.requestedAt));
  }

  private closeDialog(): void {
    clearTimeout(this.dialogTimer);
    this.dialog?.remove();
    this.dialog = null;
  }

  private showBanner(sharing: boolean): void {
    if (!sharing) {
      this.banner?.remove();
      this.banner = null;
      return;
    }
    if (this.banner) return;
    const stop = button("Stop sharing", false);
    listen(stop, "click", () => void this.answer({ accepted: false }));
    const label = element("span", "display:inline");
    label.textContent = "Support can see this page.";
    const banner = element(
      "div",
      "position:fixed;right:16px;bottom:16px;z-index:2147483647;display:flex;gap:12px;align-items:center;" +
        "background:#111;color:#fff;padding:10px 14px;border-radius:8px;font:13px/1.4 system-ui,sans-serif",
    );
    banner.setAttribute("role", "status");
    banner.append(label, stop);
    document.body.append(banner);
    this.banner = banner;
  }
}

function element(tag: string, style: string): HTMLElement {
  const node = document.createElement(tag);
  node.setAttribute(UI_ATTRIBUTE, "");
  node.style.cssText = `all:initial;display:block;box-sizing:border-box;${style}`;
  return node;
}

function button(label: string, primary: boolean): HTMLButtonElement {
  const node = element(
    "button",
    "display:inline-block;cursor:pointer;padding:8px 14px;border-radius:6px;font:600 14px system-ui,sans-serif;" +
      (primary ? "background:#2563eb;color:#fff;border:0" : "background:#fff;color:#111;border:1px solid #ccc"),
  ) as HTMLButtonElement;
  node.type = "button";
  node.textContent = label;
  return node;
}

function sleep(delayMs: number): Promise<void> {
  return new Promise((resolve) => fencedTimeout(resolve, delayMs));
}
