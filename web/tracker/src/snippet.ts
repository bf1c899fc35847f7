// Support for the async snippet (see web/tracker/README.md). The snippet
// defines `window.tandem` with `options` and a queue `q` of `[method, args]`
// calls. Once this script loads, it creates the Tracker from `options`, runs
// the queued calls in order and replaces the stub's methods with real ones.
import { warnOnce } from "./fence";
import { Tracker, type TrackerOptions } from "./tracker";

/** Methods the snippet queues before the script has loaded. */
const QUEUED_METHODS = ["start", "stop", "setUserID", "setUserAnonymousID", "setMetadata", "event", "issue", "use"];
/** Methods added to `window.tandem` once the script has loaded; the snippet does not define them. */
const LOADED_METHODS = ["isActive", "getSessionID", "getSessionToken", "getIngestPoint", "onStart", "onStop"];

type QueuedCall = [string, unknown[]];

export interface SnippetStub {
  options?: TrackerOptions;
  q?: QueuedCall[] | { push(call: QueuedCall): number };
  tracker?: Tracker;
  [method: string]: unknown;
}

/** Creates the Tracker for the snippet in `window.tandem`, if the page has one and it is not set up yet. */
export function installSnippet(stub: SnippetStub | undefined): void {
  if (!stub || typeof stub !== "object" || stub.tracker) return;
  if (!stub.options) {
    warnOnce(
      "snippet-options",
      "window.tandem.options is missing; set it to {projectKey, ingestPoint} in the snippet.",
    );
    return;
  }

  const tracker = new Tracker(stub.options);
  const queued = Array.isArray(stub.q) ? stub.q.splice(0) : [];
  for (const method of [...QUEUED_METHODS, ...LOADED_METHODS]) {
    stub[method] = (...args: unknown[]) => callMethod(tracker, [method, args]);
  }
  stub.tracker = tracker;
  // Code that pushes onto the queue directly keeps working.
  stub.q = {
    push: (call: QueuedCall) => {
      callMethod(tracker, call);
      return 0;
    },
  };
  for (const call of queued) callMethod(tracker, call);
}

function callMethod(tracker: Tracker, call: QueuedCall): unknown {
  const [method, args] = Array.isArray(call) ? call : ["", []];
  if (!QUEUED_METHODS.includes(method) && !LOADED_METHODS.includes(method)) {
    warnOnce(`snippet-method:${method}`, `window.tandem.${method}() is not a tracker method; the call is ignored.`);
    return undefined;
  }
  const callable = tracker[method as keyof Tracker] as (...values: unknown[]) => unknown;
  return callable.apply(tracker, Array.isArray(args) ? args : []);
}
