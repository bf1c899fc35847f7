// The ES module entry (web/dist/tracker.esm.js), for sites that bundle the tracker.
import { Tracker } from "./tracker";

export { Tracker };
export type { SessionInfo, StartOptions, StartResult, TrackerOptions, TrackerPlugin } from "./tracker";
export { SanitizeLevel } from "./privacy";
export type { PrivacyOptions } from "./privacy";
export default Tracker;
