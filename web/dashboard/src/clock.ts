// The server clock as seen from the agent's browser.

/**
 * Offset between the agent's clock and the server's, measured from the `hello`
 * message. Event timestamps and `LiveSession` times are in server time, so
 * durations measured from them use `now()` rather than `Date.now()`.
 */
export class ServerClock {
  /** Milliseconds to add to `Date.now()` to get server time. */
  private offset = 0;

  /**
   * Sets the offset from a server time read between `sentAt` and `receivedAt`
   * (agent times in ms), assuming the server read its clock halfway.
   */
  synchronize(serverTime: number, sentAt: number, receivedAt: number): void {
    this.offset = serverTime - (sentAt + receivedAt) / 2;
  }

  /** Returns the current server time in milliseconds since the epoch. */
  now(): number {
    return Date.now() + this.offset;
  }
}
