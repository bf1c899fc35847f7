// The classic-script entry (web/dist/assist.js): defines `window.TandemAssist`.
import { signalUrl, trackerAssist } from "./assist";

declare global {
  interface Window {
    TandemAssist: { trackerAssist: typeof trackerAssist; signalUrl: typeof signalUrl };
  }
}

window.TandemAssist = { trackerAssist, signalUrl };
