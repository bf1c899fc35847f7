// The snippet bundle with assist (web/dist/tracker-assist.js): the tracker's
// classic script, plus the assist plugin, which it adds to the snippet's tracker
// when `window.tandem.options.assist` contains the plugin's options.
import "../../tracker/src/index";
import { signalUrl, trackerAssist, type AssistOptions, type AssistTracker } from "./assist";

window.TandemAssist = { trackerAssist, signalUrl };

const snippet = window.tandem as { tracker?: { use(plugin: unknown): unknown }; options?: { assist?: AssistOptions } } | undefined;
if (snippet?.tracker && snippet.options?.assist) {
  snippet.tracker.use((tracker: AssistTracker) => trackerAssist(snippet.options?.assist)(tracker));
}
