// The classic-script entry (web/dist/tracker.js): defines `window.TandemTracker`
// and sets up the async snippet's `window.tandem`, if the page has one.
import { runFenced } from "./fence";
import { installSnippet, type SnippetStub } from "./snippet";
import { Tracker } from "./tracker";

declare global {
  interface Window {
    TandemTracker: typeof Tracker;
    tandem?: SnippetStub;
  }
}

window.TandemTracker = Tracker;
runFenced(() => installSnippet(window.tandem), undefined);
