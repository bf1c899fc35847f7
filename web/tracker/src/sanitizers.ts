// The last check on every event before it is queued, for what rrweb's hooks do
// not reach: text-carrying attributes, elements hidden by `domSanitizer`, text
// directly inside a shadow root, URLs, titles and the tracker's own events.
// It changes events in place; an exception here drops the event (recorder.ts
// runs it behind the error fence), so a failure never sends unmasked data.
import {
  EVENT_CUSTOM,
  EVENT_FULL_SNAPSHOT,
  EVENT_INCREMENTAL_SNAPSHOT,
  EVENT_META,
  SOURCE_MUTATION,
  type RecordedEvent,
} from "./events";
import { TEXT_ATTRIBUTES, type Privacy } from "./privacy";

/** rrweb's plugin events (`EventType.Plugin`), for example its console plugin. */
const EVENT_PLUGIN = 6;
/** rrweb-snapshot's `NodeType` numbers. */
const NODE_ELEMENT = 2;
const NODE_TEXT = 3;
const HIDDEN = 2;
/** Attributes that never carry page text; skipping them keeps the check cheap. */
const STRUCTURAL_ATTRIBUTES = new Set(["class", "id", "style", "_cssText", "rel", "type", "dir", "lang", "role"]);

/** Looks up the page node of a serialized node id: rrweb's `record.mirror`. */
export interface NodeLookup {
  getNode(id: number): Node | null;
}

interface SerializedNode {
  type: number;
  id: number;
  tagName?: string;
  attributes?: Record<string, unknown>;
  childNodes?: SerializedNode[];
  textContent?: string;
  isShadow?: boolean;
}

interface MutationData {
  source: number;
  adds?: Array<{ parentId: number; node: SerializedNode }>;
  texts?: Array<{ id: number; value: string | null }>;
  attributes?: Array<{ id: number; attributes: Record<string, unknown> }>;
}

/** Masks what rrweb's hooks leave in `event`, in place, and returns it. */
export function sanitizeEvent(event: RecordedEvent, privacy: Privacy, nodes: NodeLookup): RecordedEvent {
  const data = event.data as Record<string, unknown> | null;
  if (!data || typeof data !== "object") return event;
  switch (event.type) {
    case EVENT_FULL_SNAPSHOT:
      sanitizeTree(data.node as SerializedNode, privacy, nodes);
      break;
    case EVENT_INCREMENTAL_SNAPSHOT:
      if (data.source === SOURCE_MUTATION) sanitizeMutation(data as unknown as MutationData, privacy, nodes);
      break;
    case EVENT_META:
      if (typeof data.href === "string") data.href = privacy.maskUrl(data.href);
      break;
    case EVENT_CUSTOM:
      sanitizeCustomEvent(data, privacy);
      break;
    case EVENT_PLUGIN:
      data.payload = maskStrings(data.payload, (text) => privacy.maskFreeText(text));
      break;
  }
  return event;
}

/** Masks the payload of the tracker's own events, whichever observer sends them. */
export function sanitizeCustomEvent(data: Record<string, unknown>, privacy: Privacy): void {
  const payload = data.payload as Record<string, unknown> | null;
  if (!payload || typeof payload !== "object") return;
  switch (data.tag) {
    case "tandem.page":
      if (typeof payload.url === "string") payload.url = privacy.maskUrl(payload.url);
      if (typeof payload.referrer === "string") payload.referrer = privacy.maskUrl(payload.referrer);
      if (typeof payload.title === "string") payload.title = privacy.maskTitle(payload.title);
      break;
    case "tandem.click":
      // The observer masks the label by its element's level (Privacy.maskLabel); this adds the free-text rules.
      if (typeof payload.label === "string") payload.label = privacy.maskFreeText(payload.label);
      if (typeof payload.selector === "string") {
        payload.selector = privacy.maskAttribute("selector", payload.selector, null, 0);
      }
      break;
    case "tandem.console":
    case "tandem.error":
      data.payload = maskStrings(payload, (text) => privacy.maskFreeText(text));
      break;
  }
}

/** Masks one serialized node and its children; elements that are hidden become rrweb's empty placeholder. */
function sanitizeTree(node: SerializedNode | undefined, privacy: Privacy, nodes: NodeLookup): void {
  if (!node || typeof node !== "object") return;
  if (node.type === NODE_TEXT) {
    sanitizeShadowText(node, privacy, nodes);
    return;
  }
  if (node.type === NODE_ELEMENT && !sanitizeElement(node, privacy, nodes)) return;
  for (const child of node.childNodes ?? []) sanitizeTree(child, privacy, nodes);
}

/** Masks an element's attributes; returns false when it became a placeholder, whose children are gone. */
function sanitizeElement(node: SerializedNode, privacy: Privacy, nodes: NodeLookup): boolean {
  const attributes = node.attributes ?? {};
  if ("rr_width" in attributes) return false; // Blocked by rrweb already: a placeholder with no children.
  // The page element is looked up only when needed: most elements carry no text in their attributes.
  let element = privacy.hasDomSanitizer || node.tagName === "input" ? elementOf(node.id, nodes) : undefined;
  let level: TextLevel | undefined;
  if (element) privacy.notePasswordFields(element);
  // Without domSanitizer, rrweb's blockSelector has already turned every hidden element into a placeholder.
  if (element && privacy.hasDomSanitizer) {
    level = privacy.textLevel(element);
    if (level === HIDDEN) {
      toPlaceholder(node, element);
      return false;
    }
  }
  for (const name of Object.keys(attributes)) {
    const value = attributes[name];
    if (typeof value !== "string" || !value) continue;
    const lowerName = name.toLowerCase();
    if (!carriesText(lowerName, value)) continue;
    if (element === undefined) element = elementOf(node.id, nodes);
    if (level === undefined) level = privacy.textLevel(element);
    attributes[name] = privacy.maskAttribute(lowerName, value, element, level);
  }
  return true;
}

type TextLevel = ReturnType<Privacy["textLevel"]>;

function elementOf(id: number, nodes: NodeLookup): Element | null {
  const found = nodes.getNode(id);
  return found && found.nodeType === 1 ? (found as Element) : null;
}

/** Returns whether an attribute may carry text to mask: text attributes, and others only with an email in them. */
function carriesText(lowerName: string, value: string): boolean {
  if (STRUCTURAL_ATTRIBUTES.has(lowerName) || lowerName.startsWith("rr_")) return false;
  return TEXT_ATTRIBUTES.has(lowerName) || value.indexOf("@") >= 0 || value.indexOf("%40") >= 0;
}

function toPlaceholder(node: SerializedNode, element: Element): void {
  const { width, height } = element.getBoundingClientRect();
  const className = node.attributes?.class;
  node.attributes = { rr_width: `${width}px`, rr_height: `${height}px` };
  if (typeof className === "string") node.attributes.class = className;
  node.childNodes = [];
}

/**
 * Text directly inside a shadow root has no parent element, so rrweb skips
 * maskTextFn for it when the node is added after the first snapshot, and
 * passes no element during the snapshot. Its level is the shadow host's.
 */
function sanitizeShadowText(node: SerializedNode, privacy: Privacy, nodes: NodeLookup): void {
  if (!node.isShadow) return; // rrweb flags each direct child of a shadow root.
  const text = nodes.getNode(node.id);
  if (!text || text.parentElement || !text.parentNode) return;
  const host = (text.parentNode as ShadowRoot).host ?? null;
  node.textContent = privacy.maskText(text.textContent ?? "", host);
}

function sanitizeMutation(data: MutationData, privacy: Privacy, nodes: NodeLookup): void {
  if (data.adds) {
    data.adds = data.adds.filter((add) => {
      const parent = nodes.getNode(add.parentId);
      // Children of an element hidden by domSanitizer, or the document of a hidden iframe.
      if (parent && parent.nodeType === 1 && privacy.textLevel(parent as Element) === HIDDEN) return false;
      sanitizeTree(add.node, privacy, nodes);
      return true;
    });
  }
  for (const text of data.texts ?? []) {
    const node = nodes.getNode(text.id);
    if (!node || typeof text.value !== "string") continue;
    if (!node.parentElement && node.parentNode) {
      text.value = privacy.maskText(text.value, (node.parentNode as ShadowRoot).host ?? null);
    }
  }
  if (data.attributes) {
    data.attributes = data.attributes.filter((change) => {
      const element = elementOf(change.id, nodes);
      if (element) privacy.notePasswordFields(element);
      const level = privacy.textLevel(element);
      if (level === HIDDEN) return false;
      for (const name of Object.keys(change.attributes)) {
        const value = change.attributes[name];
        const lowerName = name.toLowerCase();
        if (typeof value === "string" && value && carriesText(lowerName, value)) {
          change.attributes[name] = privacy.maskAttribute(lowerName, value, element, level);
        }
      }
      return true;
    });
  }
}

/** Returns `value` with `mask` applied to every string inside it; objects nested deeper than 8 levels become null. */
function maskStrings(value: unknown, mask: (text: string) => string, depth = 0): unknown {
  if (typeof value === "string") return mask(value);
  if (!value || typeof value !== "object") return value;
  if (depth > 8) return null;
  if (Array.isArray(value)) return value.map((item) => maskStrings(item, mask, depth + 1));
  const result: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) result[key] = maskStrings(item, mask, depth + 1);
  return result;
}
