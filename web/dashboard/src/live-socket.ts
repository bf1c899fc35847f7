// The agent WebSocket: authentication, reconnection with backoff, and the
// subscriptions to restore after each reconnection.
import { ServerClock } from "./clock";
import type { ClientMessage, ListQuery, ServerMessage } from "./protocol";

const INITIAL_RETRY_DELAY_MS = 500;
const MAX_RETRY_DELAY_MS = 15_000;

export type SocketStatus =
  | { state: "connecting" }
  | { state: "connected" }
  | { state: "retrying"; delayMs: number; reason: string }
  | { state: "rejected"; message: string }
  | { state: "closed" };

type Listener<T> = (value: T) => void;

/**
 * A WebSocket to `/live/v1/ws` that reconnects until `close()`. After every
 * connection it sends `auth`, waits for `hello`, then sends the current
 * `list.subscribe` and `watch` again. An `error` in place of `hello` is taken
 * as a rejected token, and the socket then stops reconnecting.
 */
export class LiveSocket {
  readonly clock = new ServerClock();
  private socket: WebSocket | null = null;
  private authenticated = false;
  private authSentAt = 0;
  private failedAttempts = 0;
  private retryTimer: number | undefined;
  private stopped = false;
  private projectId: string | null = null;
  private listQuery: Partial<ListQuery> = {};
  private watchedSessionId: string | null = null;
  /** Sessions watched besides `watchedSessionId`, such as the cells of the grid. */
  private readonly extraWatches = new Set<string>();
  private readonly messageListeners = new Set<Listener<ServerMessage>>();
  private readonly statusListeners = new Set<Listener<SocketStatus>>();

  constructor(private readonly token: string) {}

  /** Adds a listener for every server message after `hello`, and returns a function that removes it. */
  onMessage(listener: Listener<ServerMessage>): () => void {
    this.messageListeners.add(listener);
    return () => this.messageListeners.delete(listener);
  }

  /** Adds a listener for connection state changes, and returns a function that removes it. */
  onStatus(listener: Listener<SocketStatus>): () => void {
    this.statusListeners.add(listener);
    return () => this.statusListeners.delete(listener);
  }

  connect(): void {
    this.stopped = false;
    this.open();
  }

  /**
   * Subscribes to one page of the live list of a project, filtered and sorted
   * by `query`. The live service keeps one list subscription per connection,
   * so this replaces the previous one.
   */
  subscribeList(projectId: string, query: Partial<ListQuery> = {}): void {
    this.projectId = projectId;
    this.listQuery = { ...query };
    this.sendIfAuthenticated({ type: "list.subscribe", projectId, ...this.listQuery });
  }

  /** Watches one more session without replacing the `watch` of the full-size view. */
  addWatch(sessionId: string): void {
    if (this.extraWatches.has(sessionId)) return;
    this.extraWatches.add(sessionId);
    this.sendIfAuthenticated({ type: "watch", sessionId });
  }

  removeWatch(sessionId: string): void {
    if (!this.extraWatches.delete(sessionId)) return;
    this.sendIfAuthenticated({ type: "unwatch", sessionId });
  }

  watch(sessionId: string): void {
    this.watchedSessionId = sessionId;
    this.sendIfAuthenticated({ type: "watch", sessionId });
  }

  unwatch(): void {
    const sessionId = this.watchedSessionId;
    this.watchedSessionId = null;
    if (sessionId !== null) this.sendIfAuthenticated({ type: "unwatch", sessionId });
  }

  /** Closes the socket for good: no reconnection follows. */
  close(): void {
    this.stopped = true;
    window.clearTimeout(this.retryTimer);
    this.socket?.close(1000, "Signed out");
    this.socket = null;
    this.emitStatus({ state: "closed" });
  }

  private open(): void {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/live/v1/ws`);
    this.socket = socket;
    this.authenticated = false;
    this.emitStatus({ state: "connecting" });

    socket.addEventListener("open", () => {
      this.authSentAt = Date.now();
      this.send({ type: "auth", token: this.token });
    });
    socket.addEventListener("message", (event) => this.receive(event));
    socket.addEventListener("close", (event) => this.handleClose(socket, event));
  }

  private receive(event: MessageEvent): void {
    let message: ServerMessage;
    try {
      message = JSON.parse(String(event.data)) as ServerMessage;
    } catch (error) {
      console.warn("Ignored a WebSocket message that is not JSON", error);
      return;
    }

    if (!this.authenticated) {
      this.receiveBeforeHello(message);
      return;
    }
    for (const listener of this.messageListeners) listener(message);
  }

  private receiveBeforeHello(message: ServerMessage): void {
    if (message.type === "error") {
      this.reject(message.message);
      return;
    }
    if (message.type !== "hello") {
      console.warn("Ignored a WebSocket message received before hello", message.type);
      return;
    }

    this.clock.synchronize(message.serverTime, this.authSentAt, Date.now());
    this.authenticated = true;
    this.failedAttempts = 0;
    this.emitStatus({ state: "connected" });
    if (this.projectId !== null) this.send({ type: "list.subscribe", projectId: this.projectId, ...this.listQuery });
    if (this.watchedSessionId !== null) this.send({ type: "watch", sessionId: this.watchedSessionId });
    for (const sessionId of this.extraWatches) this.send({ type: "watch", sessionId });
  }

  private reject(message: string): void {
    this.stopped = true;
    this.socket?.close(1000, "Authentication rejected");
    this.socket = null;
    this.emitStatus({ state: "rejected", message });
  }

  private handleClose(socket: WebSocket, event: CloseEvent): void {
    // A socket replaced by close() or reject() must not schedule a retry.
    if (socket !== this.socket || this.stopped) return;
    this.socket = null;
    this.authenticated = false;

    const delayMs = this.nextRetryDelay();
    const reason = event.reason || `code ${event.code}`;
    this.emitStatus({ state: "retrying", delayMs, reason });
    this.retryTimer = window.setTimeout(() => this.open(), delayMs);
  }

  /** Returns an exponential backoff delay with ±20% jitter, so agents do not reconnect in step. */
  private nextRetryDelay(): number {
    const base = Math.min(MAX_RETRY_DELAY_MS, INITIAL_RETRY_DELAY_MS * 2 ** this.failedAttempts);
    this.failedAttempts += 1;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  private sendIfAuthenticated(message: ClientMessage): void {
    if (this.authenticated) this.send(message);
  }

  private send(message: ClientMessage): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  private emitStatus(status: SocketStatus): void {
    for (const listener of this.statusListeners) listener(status);
  }
}
