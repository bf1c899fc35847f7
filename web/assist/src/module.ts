// The ES module entry (web/dist/assist.esm.js): `import { trackerAssist } from "./assist.esm.js"`.
export { trackerAssist, signalUrl } from "./assist";
export type { AgentInfo, AssistHandle, AssistOptions, AssistTracker } from "./assist";
