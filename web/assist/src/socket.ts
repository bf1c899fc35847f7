// A WebSocket to the signal service that authenticates with its first frame and reconnects with backoff.
import type { ServerFrame } from "./protocol";

const INITIAL_RETRY_DELAY_MS = 500;
const MAX_RETRY_DELAY_MS = 15_000;

export interface SignalSocketOptions {
  url: string;
  /** The auth frame's fields besides `type`, read at each connection. */
  auth: () => Record<string, unknown>;
  onFrame: (frame: ServerFrame) => void;
  /** Called when the socket closes, before the next attempt. */
  onDown?: (reason: string) => void;
}

export class SignalSocket {
  private socket: WebSocket | null = null;
  private failedAttempts = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(private readonly options: SignalSocketOptions) {}

  connect(): void {
    this.stopped = false;
    this.open();
  }

  send(frame: Record<string, unknown>): boolean {
    if (this.socket?.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000, "closed");
    this.socket = null;
  }

  private open(): void {
    const socket = new WebSocket(this.options.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      socket.send(JSON.stringify({ type: "auth", ...this.options.auth() }));
    });
    socket.addEventListener("message", (event) => {
      let frame: ServerFrame;
      try {
        frame = JSON.parse(String(event.data)) as ServerFrame;
      } catch {
        return;
      }
      if (frame.type === "hello") this.failedAttempts = 0;
      this.options.onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket || this.stopped) return;
      this.socket = null;
      this.options.onDown?.(event.reason || `code ${event.code}`);
      // A policy violation (1008) is a rejected token: retrying would fail the same way.
      if (event.code === 1008) return;
      const base = Math.min(MAX_RETRY_DELAY_MS, INITIAL_RETRY_DELAY_MS * 2 ** this.failedAttempts);
      this.failedAttempts += 1;
      this.retryTimer = setTimeout(() => this.open(), Math.round(base * (0.8 + Math.random() * 0.4)));
    });
  }
}
