/** Sent as `trackerVersion` in the start request. Keep in step with web/package.json. */
export const TRACKER_VERSION = "0.1.0";
