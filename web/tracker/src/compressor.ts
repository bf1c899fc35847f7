// Gzip for batch bodies, in a Web Worker so that compressing never takes the
// page's main thread. The worker's code is inlined and started from a Blob URL,
// so the tracker stays one file. Where a worker cannot start (a Content
// Security Policy without `worker-src blob:`, or no Worker at all), or one stops
// answering, the same CompressionStream runs on the main thread instead.
import { warnOnce } from "./fence";

/** A compression the worker has not answered within this time is done on the main thread. */
const WORKER_TIMEOUT_MS = 5000;

interface WorkerReply {
  id: number;
  bytes?: Uint8Array<ArrayBuffer>;
  error?: string;
}

interface Pending {
  resolve(bytes: Uint8Array<ArrayBuffer>): void;
  reject(error: unknown): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * The worker's whole program. It runs in the worker's global scope, so it must
 * not use anything from this module: only its own locals and the worker's globals.
 */
function workerMain(): void {
  const scope = self as unknown as Worker;
  scope.onmessage = (message: MessageEvent) => {
    const { id, text } = message.data as { id: number; text: string };
    const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
    new Response(stream).arrayBuffer().then(
      (buffer) => scope.postMessage({ id, bytes: new Uint8Array(buffer) }, [buffer]),
      (error: unknown) => scope.postMessage({ id, error: String(error) }),
    );
  };
}

/** Returns true when this browser can gzip a body: CompressionStream, Blob and Response exist. */
export function canCompress(): boolean {
  return typeof CompressionStream === "function" && typeof Blob === "function" && typeof Response === "function";
}

/** Gzips `text` on the calling thread, in chunks between which the page keeps running. */
export async function gzipHere(text: string): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Gzips bodies in one shared worker, started on first use, or on the main thread when there is none. */
class Compressor {
  private worker: Worker | null = null;
  private broken = false;
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();

  gzip(text: string): Promise<Uint8Array<ArrayBuffer>> {
    const worker = this.broken ? null : this.start();
    if (!worker) return gzipHere(text);
    const id = this.nextId++;
    return new Promise<Uint8Array<ArrayBuffer>>((resolve, reject) => {
      const timer = setTimeout(() => this.giveUp("The compression worker did not answer in time."), WORKER_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer });
      worker.postMessage({ id, text });
    }).catch(() => gzipHere(text));
  }

  private start(): Worker | null {
    if (this.worker) return this.worker;
    if (typeof Worker !== "function" || typeof URL === "undefined" || typeof URL.createObjectURL !== "function") {
      this.broken = true;
      return null;
    }
    let url = "";
    try {
      url = URL.createObjectURL(new Blob([`(${workerMain.toString()})()`], { type: "text/javascript" }));
      const worker = new Worker(url);
      worker.onmessage = (message: MessageEvent) => this.settle(message.data as WorkerReply);
      worker.onerror = () => this.giveUp("The compression worker failed; batches are compressed on the main thread.");
      this.worker = worker;
      return worker;
    } catch (error) {
      this.broken = true;
      warnOnce("worker", "The compression worker could not start; batches are compressed on the main thread.", error);
      return null;
    } finally {
      // The worker has fetched its script by the time it runs, and a failed start leaves nothing to load.
      if (url) setTimeout(() => URL.revokeObjectURL(url), WORKER_TIMEOUT_MS);
    }
  }

  private settle(reply: WorkerReply): void {
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    this.pending.delete(reply.id);
    clearTimeout(pending.timer);
    if (reply.bytes) pending.resolve(reply.bytes);
    else pending.reject(new Error(reply.error ?? "no bytes"));
  }

  /** Stops using the worker: every pending compression is done again on the main thread. */
  private giveUp(reason: string): void {
    warnOnce("worker-broken", reason);
    this.broken = true;
    this.worker?.terminate();
    this.worker = null;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(reason));
    }
    this.pending.clear();
  }
}

const compressor = new Compressor();

/** Gzips a batch body, off the main thread where the browser allows a worker. */
export function gzip(text: string): Promise<Uint8Array<ArrayBuffer>> {
  return compressor.gzip(text);
}
