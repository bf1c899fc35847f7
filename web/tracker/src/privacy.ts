// Everything that decides what the recorder may see of the page. The recorder
// gets its masking settings only from `Privacy.recordOptions()`, and every
// event passes through `sanitizeEvent` (sanitizers.ts) before it is queued, so
// new privacy options belong here.
//
// Levels: plain content is recorded, with emails and, if asked, numbers
// obscured. Obscured content keeps its length and layout, with each character
// replaced by "*". Hidden content is never serialised, and a hidden element
// replays as an empty box of the same size (rrweb's "block").
import type { record } from "@rrweb/record";
import { reportError, warnOnce } from "./fence";
import {
  obscure,
  obscureAll,
  obscureDates,
  obscureDigits,
  obscureEmails,
  obscureOccurrences,
} from "./mask-text";

type RecordOptions = NonNullable<Parameters<typeof record>[0]>;

/** Masking levels, with the numbers OpenReplay's tracker uses for the same levels. */
export const SanitizeLevel = { Plain: 0, Obscured: 1, Hidden: 2 } as const;
export type SanitizeLevel = 0 | 1 | 2;

const PLAIN = 0;
const OBSCURED = 1;
const HIDDEN = 2;
/** Marked with `data-tandem-unmask`: recorded as is, without the email and number rules. */
const UNMASKED = -1;
/** No marker on the element or its ancestors: the option defaults apply. */
const UNMARKED = -2;
type Level = typeof PLAIN | typeof OBSCURED | typeof HIDDEN | typeof UNMASKED;

export interface PrivacyOptions {
  /** Input values: 0 recorded as typed, 1 obscured (the default), 2 hidden (sent as empty values). */
  defaultInputMode?: SanitizeLevel;
  /** Obscure email addresses in page text, attribute values, URLs and console messages. Defaults to true. */
  obscureTextEmails?: boolean;
  /** Obscure every digit in page text, attribute values, URLs and console messages. Defaults to false. */
  obscureTextNumbers?: boolean;
  /** Obscure `type=email` inputs and email addresses in recorded input values. Defaults to true. */
  obscureInputEmails?: boolean;
  /** Obscure `type=number`, `tel` and `range` inputs and every digit in recorded input values. Defaults to false. */
  obscureInputNumbers?: boolean;
  /** Obscure date and time inputs and dates written with digits in recorded input values. Defaults to false. */
  obscureInputDates?: boolean;
  /** Obscure all text and input values, except inside elements marked `data-tandem-unmask`. Defaults to false. */
  privateMode?: boolean;
  /** Do not record when the browser sends Do Not Track. Defaults to false. */
  respectDoNotTrack?: boolean;
  /**
   * Returns the level of an element and everything inside it, or 0 to leave it
   * to the attributes and options. It can raise a level, never lower it.
   */
  domSanitizer?: (element: Element) => SanitizeLevel | undefined | null;
  /** Rewrites each page URL and referrer before it is sent, after the built-in rules. */
  urlSanitizer?: (url: string) => string;
  /** Rewrites each page title before it is sent, after the built-in rules. */
  titleSanitizer?: (title: string) => string;
  /** Older switch: false is `defaultInputMode: 0`. Ignored when `defaultInputMode` is set. */
  maskAllInputs?: boolean;
}

/** Element attributes that mark a level, Tandem's and OpenReplay's (`masked` is OpenReplay's older name). */
export const HIDDEN_SELECTOR = "[data-tandem-hidden],[data-openreplay-hidden],[data-openreplay-htmlmasked]";
export const OBSCURED_SELECTOR = "[data-tandem-obscured],[data-openreplay-obscured],[data-openreplay-masked]";
export const UNMASK_SELECTOR = "[data-tandem-unmask]";
const ANY_MARKER_SELECTOR = `${HIDDEN_SELECTOR},${OBSCURED_SELECTOR},${UNMASK_SELECTOR}`;
/** Inputs whose events rrweb drops entirely, so that not even the number of keystrokes is recorded. */
const IGNORED_INPUT_SELECTOR = 'input[type="password" i],input[data-rr-is-password]';

/** Attributes whose value is text a person reads; they get the element's level. */
export const TEXT_ATTRIBUTES = new Set([
  "placeholder",
  "title",
  "alt",
  "aria-label",
  "aria-description",
  "aria-placeholder",
  "aria-roledescription",
  "aria-valuetext",
  "label",
  "value",
]);

/**
 * Every input kind rrweb's MaskInputOptions lists, plus those it leaves out (file, hidden and the
 * buttons), so that rrweb passes every value to `maskInput`, which decides.
 */
const ALL_INPUT_KINDS: Record<string, boolean> = {};
for (const kind of [
  "color date datetime-local email month number range search tel text time url week",
  "textarea select password file hidden submit reset button image",
]) {
  for (const name of kind.split(" ")) ALL_INPUT_KINDS[name] = true;
}

const BUTTON_TYPES = new Set(["submit", "reset", "button", "image"]);
const NUMBER_TYPES = new Set(["number", "tel", "range"]);
const DATE_TYPES = new Set(["date", "datetime-local", "month", "time", "week"]);
/** `autocomplete` tokens of fields that hold credentials or card data, whatever their type. */
const SECRET_AUTOCOMPLETE = /(?:^|\s)(?:current-password|new-password|one-time-code|cc-number|cc-csc)(?:\s|$)/i;
/** Query parameters whose value is a credential by name; matched case-insensitively against the whole name. */
const CREDENTIAL_PARAMETER = new RegExp(
  "^(?:pass(?:word|wd)?|pwd|secret|client_secret|token|access_token|id_token|refresh_token" +
    "|auth|authorization|api_?key|code|otp|session_?id|sid|sig|signature)$",
  "i",
);

/** Shortest value of a masked field that other text is checked against; shorter values match ordinary words. */
const MIN_SECRET_LENGTH = 5;
const MAX_SECRETS = 32;
/** sessionStorage key of the names of masked fields sent by a GET form, whose values reach the next URL. */
const MASKED_FIELDS_KEY = "tandem:masked-fields";
const MAX_MASKED_FIELDS = 50;

interface ResolvedOptions {
  defaultInputMode: SanitizeLevel;
  obscureTextEmails: boolean;
  obscureTextNumbers: boolean;
  obscureInputEmails: boolean;
  obscureInputNumbers: boolean;
  obscureInputDates: boolean;
  privateMode: boolean;
}

function resolveOptions(options: PrivacyOptions): ResolvedOptions {
  let inputMode: SanitizeLevel = options.maskAllInputs === false ? PLAIN : OBSCURED;
  const mode = options.defaultInputMode;
  if (mode === PLAIN || mode === OBSCURED || mode === HIDDEN) {
    inputMode = mode;
  } else if (mode !== undefined) {
    warnOnce("defaultInputMode", `defaultInputMode must be 0, 1 or 2, not ${String(mode)}; using ${inputMode}.`);
  }
  return {
    defaultInputMode: inputMode,
    obscureTextEmails: options.obscureTextEmails !== false,
    obscureTextNumbers: options.obscureTextNumbers === true,
    obscureInputEmails: options.obscureInputEmails !== false,
    obscureInputNumbers: options.obscureInputNumbers === true,
    obscureInputDates: options.obscureInputDates === true,
    privateMode: options.privateMode === true,
  };
}

/** Returns why the tracker must not record here, or null. */
export function doNotTrackReason(options: PrivacyOptions): string | null {
  if (options.respectDoNotTrack !== true) return null;
  const browser = navigator as Navigator & { msDoNotTrack?: string };
  const flags = [browser.doNotTrack, (window as Window & { doNotTrack?: string }).doNotTrack, browser.msDoNotTrack];
  return flags.some((flag) => flag === "1" || flag === "yes")
    ? "the browser sends Do Not Track and respectDoNotTrack is set."
    : null;
}

/** Returns the upper-case tag name. HTML elements already have one, so only SVG and XML names are copied. */
function tagOf(element: Element): string {
  const tag = element.tagName;
  return tag.charCodeAt(0) >= 97 ? tag.toUpperCase() : tag;
}

/**
 * Returns the element that contains `element`'s tree: a shadow root's host, or the
 * iframe of a same-origin document that rrweb records inside the page. The
 * recorded page's own document is the top: markers of a parent page do not count.
 */
function outerElement(element: Element): Element | null {
  const root = element.getRootNode();
  if (root.nodeType === 11) return (root as ShadowRoot).host ?? null;
  if (root.nodeType === 9 && root !== document) {
    try {
      return (root as Document).defaultView?.frameElement ?? null;
    } catch {
      return null; // A cross-origin parent: rrweb does not record such frames either.
    }
  }
  return null;
}

function composedParent(element: Element): Element | null {
  return element.parentElement ?? outerElement(element);
}

/** Returns true for an input, textarea or select. */
export function isFormField(element: Element): boolean {
  const tag = tagOf(element);
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
}

function inputType(element: Element): string {
  return tagOf(element) === "INPUT" ? String((element as HTMLInputElement).type || "text").toLowerCase() : "";
}

/**
 * The masking rules of one tracker, applied through rrweb's hooks and by
 * `sanitizeEvent` to what the hooks do not reach.
 */
export class Privacy {
  readonly options: ResolvedOptions;
  private readonly domSanitizer: PrivacyOptions["domSanitizer"];
  private readonly urlSanitizer: PrivacyOptions["urlSanitizer"];
  private readonly titleSanitizer: PrivacyOptions["titleSanitizer"];
  /** Inputs seen as passwords; they stay hidden after a "show password" toggle makes them `type=text`. */
  private readonly passwordFields = new WeakSet<Element>();
  /** The latest masked value of each recently typed field, newest last. */
  private readonly secrets = new Map<Element, string>();
  private readonly maskedFieldNames: Set<string>;
  /**
   * `domSanitizer` results, kept only while rrweb serialises synchronously:
   * `clearCache()` runs after each emitted event and in the next microtask,
   * before page code can change an element again.
   */
  private sanitizerCache: WeakMap<Element, number> | null = null;

  constructor(options: PrivacyOptions) {
    this.options = resolveOptions(options);
    this.domSanitizer = typeof options.domSanitizer === "function" ? options.domSanitizer : undefined;
    this.urlSanitizer = typeof options.urlSanitizer === "function" ? options.urlSanitizer : undefined;
    this.titleSanitizer = typeof options.titleSanitizer === "function" ? options.titleSanitizer : undefined;
    this.maskedFieldNames = new Set(loadMaskedFieldNames());
  }

  /** Returns the rrweb `record()` options that apply these rules. */
  recordOptions(): Partial<RecordOptions> {
    return {
      // rrweb ignores maskInputOptions when maskAllInputs is true.
      maskAllInputs: false,
      maskInputOptions: { ...ALL_INPUT_KINDS },
      maskInputFn: (text, element) => this.maskInput(text, element),
      // "*" makes rrweb pass every text node to maskTextFn, which decides its level.
      maskTextSelector: "*",
      maskTextFn: (text, element) => this.maskText(text, element),
      blockSelector: HIDDEN_SELECTOR,
      ignoreSelector: IGNORED_INPUT_SELECTOR,
      // Comments, scripts and verification <meta> tags (csrf-token among them) are not recorded.
      slimDOMOptions: { comment: true, script: true, headMetaVerification: true },
    };
  }

  get hasDomSanitizer(): boolean {
    return this.domSanitizer !== undefined;
  }

  /** Forgets cached `domSanitizer` results; page code may have changed the DOM since. */
  clearCache(): void {
    this.sanitizerCache = null;
  }

  // Levels ----------------------------------------------------------------------------------

  /** Returns the level of the text inside `element` (null: a text node without a parent element). */
  textLevel(element: Element | null): Level {
    if (!element) return this.options.privateMode ? OBSCURED : PLAIN;
    const marker = this.markerLevel(element);
    if (marker === HIDDEN) return HIDDEN;
    const sanitized = this.sanitizerLevel(element);
    if (sanitized === HIDDEN) return HIDDEN;
    if (sanitized === OBSCURED || marker === OBSCURED) return OBSCURED;
    if (marker === UNMASKED) return UNMASKED;
    return this.options.privateMode ? OBSCURED : PLAIN;
  }

  /** Returns the level of the value of a form field or of text typed into an editable element. */
  inputLevel(element: Element): Level {
    if (this.isSecretField(element)) return HIDDEN;
    if (BUTTON_TYPES.has(inputType(element))) return this.textLevel(element); // Its value is its label.
    const marker = this.markerLevel(element);
    if (marker === HIDDEN) return HIDDEN;
    const sanitized = this.sanitizerLevel(element);
    if (sanitized === HIDDEN) return HIDDEN;
    if (sanitized === OBSCURED || marker === OBSCURED) return OBSCURED;
    if (marker === UNMASKED) return UNMASKED;
    const mode = this.options.defaultInputMode;
    return this.options.privateMode && mode === PLAIN ? OBSCURED : mode;
  }

  /**
   * Returns HIDDEN, OBSCURED or UNMASKED for the nearest marker attribute on
   * `element` or its ancestors, across shadow roots and same-origin iframes, or
   * UNMARKED. A hidden marker anywhere above wins over a nearer unmask.
   */
  private markerLevel(element: Element): number {
    let level = UNMARKED;
    for (let current: Element | null = element; current; current = outerElement(current)) {
      // One query per tree while no marker is found, which is the common case.
      const marked = current.closest(level === UNMARKED ? ANY_MARKER_SELECTOR : HIDDEN_SELECTOR);
      if (!marked) continue;
      if (marked.matches(HIDDEN_SELECTOR)) return HIDDEN;
      level = marked.matches(OBSCURED_SELECTOR) ? OBSCURED : UNMASKED;
      if (marked.parentElement?.closest(HIDDEN_SELECTOR)) return HIDDEN;
    }
    return level;
  }

  /** Returns the highest level `domSanitizer` gives `element` or an ancestor. */
  private sanitizerLevel(element: Element): number {
    if (!this.domSanitizer) return PLAIN;
    let highest = PLAIN;
    for (let current: Element | null = element; current; current = composedParent(current)) {
      highest = Math.max(highest, this.ownSanitizerLevel(current));
      if (highest === HIDDEN) break;
    }
    return highest;
  }

  private ownSanitizerLevel(element: Element): number {
    if (!this.sanitizerCache) {
      this.sanitizerCache = new WeakMap();
      queueMicrotask(() => this.clearCache());
    }
    let level = this.sanitizerCache.get(element);
    if (level === undefined) {
      level = this.callDomSanitizer(element);
      this.sanitizerCache.set(element, level);
    }
    return level;
  }

  private callDomSanitizer(element: Element): number {
    try {
      const level = this.domSanitizer!(element);
      return level === HIDDEN || level === OBSCURED ? level : PLAIN;
    } catch (error) {
      // A broken callback must not open the page up: its elements are hidden.
      reportError(error);
      return HIDDEN;
    }
  }

  /** Returns true for password, hidden and card or one-time-code fields, and for fields that ever were passwords. */
  private isSecretField(element: Element): boolean {
    if (this.passwordFields.has(element)) return true;
    if (tagOf(element) !== "INPUT") return false;
    const type = inputType(element);
    const secret =
      type === "password" ||
      type === "hidden" ||
      element.hasAttribute("data-rr-is-password") ||
      SECRET_AUTOCOMPLETE.test(element.getAttribute("autocomplete") || "");
    if (secret) this.passwordFields.add(element);
    return secret;
  }

  /** Notes `element` if it is a password field now, so that it stays hidden after a script changes its type. */
  notePasswordFields(element: Element): void {
    if (tagOf(element) === "INPUT") this.isSecretField(element);
  }

  // rrweb hooks -----------------------------------------------------------------------------

  /** rrweb's `maskTextFn`: every text node's content, with the element that contains it. */
  maskText(text: string, element: Element | null): string {
    if (!text) return text;
    if (element && (tagOf(element) === "TEXTAREA" || (element as HTMLElement).isContentEditable)) {
      return this.applyInputLevel(text, element, true);
    }
    const masked = this.applyTextLevel(text, this.textLevel(element));
    return element && tagOf(element) === "TITLE" ? this.userTitle(masked) : masked;
  }

  /** rrweb's `maskInputFn`: every input, textarea and select value. */
  maskInput(text: string, element: Element): string {
    if (!text) return text;
    return this.applyInputLevel(text, element, false);
  }

  /** Masks one attribute value of `element`, whose text level is `level`. `name` is lower case. */
  maskAttribute(name: string, value: string, element: Element | null, level: Level): string {
    if (!value) return value;
    if (name === "value" && element && isFormField(element) && !isCheckable(element)) {
      return this.maskInput(value, element);
    }
    if (TEXT_ATTRIBUTES.has(name)) return this.applyTextLevel(value, level);
    if (level === UNMASKED || !this.options.obscureTextEmails) return value;
    return obscureEmails(value);
  }

  private applyTextLevel(text: string, level: Level): string {
    if (level === HIDDEN) return "";
    if (level === OBSCURED) return obscure(text);
    if (level === UNMASKED) return text;
    return this.maskPlainText(text);
  }

  /** Masks a value by its field's level; `keepSpaces` keeps the layout of text in textareas and editable elements. */
  private applyInputLevel(text: string, element: Element, keepSpaces: boolean): string {
    const level = this.inputLevel(element);
    let masked = text;
    if (level === HIDDEN) masked = "";
    else if (level === OBSCURED) masked = keepSpaces ? obscure(text) : obscureAll(text);
    else if (level === PLAIN) masked = this.maskPlainInput(text, element);
    if (masked !== text) this.rememberSecret(element, text);
    return masked;
  }

  /** Applies the email and number rules to plain page text, and obscures values of masked fields found in it. */
  private maskPlainText(text: string): string {
    let masked = text;
    if (this.options.obscureTextEmails) masked = obscureEmails(masked);
    if (this.options.obscureTextNumbers) masked = obscureDigits(masked);
    return this.secrets.size ? obscureOccurrences(masked, this.secrets.values()) : masked;
  }

  private maskPlainInput(text: string, element: Element): string {
    const type = inputType(element);
    const options = this.options;
    if (options.obscureInputEmails && type === "email") return obscureAll(text);
    if (options.obscureInputNumbers && NUMBER_TYPES.has(type)) return obscureAll(text);
    if (options.obscureInputDates && DATE_TYPES.has(type)) return obscureAll(text);
    let masked = text;
    if (options.obscureInputEmails) masked = obscureEmails(masked);
    if (options.obscureInputNumbers) masked = obscureDigits(masked);
    if (options.obscureInputDates) masked = obscureDates(masked);
    return masked;
  }

  private rememberSecret(element: Element, value: string): void {
    this.secrets.delete(element);
    if (value.trim().length < MIN_SECRET_LENGTH) return;
    this.secrets.set(element, value);
    if (this.secrets.size > MAX_SECRETS) this.secrets.delete(this.secrets.keys().next().value as Element);
  }

  // Free text, URLs and titles --------------------------------------------------------------

  /** Masks text that is not part of the page: console and error messages, plugin payloads. */
  maskFreeText(text: string): string {
    if (!text) return text;
    return this.options.privateMode ? obscure(text) : this.maskPlainText(text);
  }

  /** Returns the label of a clicked element as its level allows: a click observer should call this. */
  maskLabel(label: string, element: Element | null): string {
    if (!label) return label;
    return this.applyTextLevel(label, this.textLevel(element));
  }

  /**
   * Masks a page URL or referrer: credential query parameters and those of
   * masked fields sent by a GET form are obscured, the plain-text rules apply
   * to path, query and fragment, then `urlSanitizer` runs.
   */
  maskUrl(url: string): string {
    if (!url) return url;
    let masked = url;
    try {
      masked = this.maskUrlParts(new URL(url));
    } catch {
      masked = this.maskPlainText(url);
    }
    if (!this.urlSanitizer) return masked;
    try {
      return String(this.urlSanitizer(masked));
    } catch (error) {
      reportError(error);
      return originOf(masked); // Fail closed: keep only what the page's origin reveals.
    }
  }

  private maskUrlParts(url: URL): string {
    const parameters = new URLSearchParams(url.search);
    let changed = false;
    parameters.forEach((value, name) => {
      const masked = this.isMaskedParameter(name) ? obscureAll(value) : this.maskPlainText(value);
      if (masked !== value) changed = true;
    });
    if (changed) {
      const rewritten = new URLSearchParams();
      parameters.forEach((value, name) => {
        rewritten.append(name, this.isMaskedParameter(name) ? obscureAll(value) : this.maskPlainText(value));
      });
      url.search = rewritten.toString();
    }
    url.pathname = this.maskPlainText(url.pathname);
    if (url.hash) url.hash = this.maskPlainText(url.hash);
    if (url.username || url.password) {
      url.username = "";
      url.password = "";
    }
    return url.href;
  }

  private isMaskedParameter(name: string): boolean {
    return CREDENTIAL_PARAMETER.test(name) || this.maskedFieldNames.has(name);
  }

  /** Masks the page title by the level of the document's <title> element, then runs `titleSanitizer`. */
  maskTitle(title: string): string {
    if (!title) return title;
    const element = typeof document !== "undefined" ? document.querySelector("title") : null;
    return this.userTitle(this.applyTextLevel(title, this.textLevel(element)));
  }

  /** Returns `page` with its url, referrer and title masked, for the start request. */
  maskPage<Page extends { url: string; title: string; referrer: string }>(page: Page): Page {
    return {
      ...page,
      url: this.maskUrl(page.url),
      referrer: this.maskUrl(page.referrer),
      title: this.maskTitle(page.title),
    };
  }

  private userTitle(title: string): string {
    if (!this.titleSanitizer) return title;
    try {
      return String(this.titleSanitizer(title));
    } catch (error) {
      reportError(error);
      return obscure(title);
    }
  }

  // GET forms -------------------------------------------------------------------------------

  /**
   * Watches form submissions: a GET form puts its fields into the next page's
   * URL, so the names of its masked fields are kept in sessionStorage and
   * `maskUrl` obscures those parameters on the next pages of the tab.
   * Returns the teardown.
   */
  observeForms(doc: Document): () => void {
    const listener = (event: Event): void => {
      try {
        this.noteGetForm(event.target);
      } catch (error) {
        reportError(error);
      }
    };
    doc.addEventListener("submit", listener, true);
    return () => doc.removeEventListener("submit", listener, true);
  }

  private noteGetForm(target: EventTarget | null): void {
    const form = target as HTMLFormElement | null;
    if (!form || tagOf(form as unknown as Element) !== "FORM" || (form.method || "get").toLowerCase() !== "get") return;
    for (const field of Array.from(form.elements)) {
      const name = (field as HTMLInputElement).name;
      if (!name || !isFormField(field) || isCheckable(field)) continue;
      const value = (field as HTMLInputElement).value || "";
      if (this.maskInput(value, field) !== value) this.maskedFieldNames.add(name);
    }
    saveMaskedFieldNames(this.maskedFieldNames);
  }
}

function isCheckable(element: Element): boolean {
  const type = inputType(element);
  return type === "checkbox" || type === "radio";
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "";
  }
}

function loadMaskedFieldNames(): string[] {
  try {
    const stored: unknown = JSON.parse(sessionStorage.getItem(MASKED_FIELDS_KEY) || "[]");
    return Array.isArray(stored) ? stored.filter((name): name is string => typeof name === "string") : [];
  } catch {
    return []; // Storage may be disabled; then only this page's rules apply.
  }
}

function saveMaskedFieldNames(names: Set<string>): void {
  try {
    sessionStorage.setItem(MASKED_FIELDS_KEY, JSON.stringify(Array.from(names).slice(-MAX_MASKED_FIELDS)));
  } catch {
    // Storage may be full or disabled; the next page then cannot know these names.
  }
}
