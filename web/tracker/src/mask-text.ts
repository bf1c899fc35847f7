// Pure string transforms behind every masking level. Obscured text keeps its
// length and whitespace, so a replay keeps the page's layout.

/** Replaces each character that is not whitespace with "*". */
export function obscure(text: string): string {
  return text.replace(/\S/gu, "*");
}

/** Replaces every character with "*", one per code point, as rrweb does for input values. */
export function obscureAll(text: string): string {
  let masked = "";
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    // A surrogate pair is one character on screen, so it gets one "*".
    if (code >= 0xd800 && code <= 0xdbff && index + 1 < text.length) index++;
    masked += "*";
  }
  return masked;
}

/**
 * An email address, with "@" as is or URL-encoded ("%40"), so that the same
 * pattern finds addresses in text, attribute values and query strings. The
 * local part leaves out "=", "&", "/" and "?", which RFC 5322 allows, so that
 * "?email=a@b.example" keeps its parameter name.
 */
const EMAIL = /[\w.!#$%'*+^`{|}~-]+(?:@|%40)[a-z\d](?:[a-z\d-]*[a-z\d])?(?:\.[a-z\d](?:[a-z\d-]*[a-z\d])?)+/gi;
const DIGIT = /\d/g;
/** A calendar date written with digits: 2024-05-17, 17/05/2024, 5.17.24. */
const DATE = /\b\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b/g;

function obscureMatches(text: string, pattern: RegExp): string {
  pattern.lastIndex = 0;
  return text.replace(pattern, (match) => obscureAll(match));
}

/** Returns whether `text` contains something that looks like an email address. */
export function hasEmail(text: string): boolean {
  if (text.indexOf("@") < 0 && text.indexOf("%40") < 0) return false;
  EMAIL.lastIndex = 0;
  return EMAIL.test(text);
}

/** Obscures each email address in `text`. */
export function obscureEmails(text: string): string {
  return hasEmail(text) ? obscureMatches(text, EMAIL) : text;
}

/** Obscures each digit in `text`. */
export function obscureDigits(text: string): string {
  return text.replace(DIGIT, "*");
}

/** Obscures each date written with digits in `text`. */
export function obscureDates(text: string): string {
  return obscureMatches(text, DATE);
}

/**
 * Returns `text` with every occurrence of each of `secrets` obscured. Used for
 * free text (console messages, errors, labels, URLs) that may repeat a value
 * typed into a masked field.
 */
export function obscureOccurrences(text: string, secrets: Iterable<string>): string {
  let result = text;
  for (const secret of secrets) {
    if (result.indexOf(secret) >= 0) result = result.split(secret).join(obscureAll(secret));
    const encoded = encodeURIComponent(secret);
    if (encoded !== secret && result.indexOf(encoded) >= 0) result = result.split(encoded).join(obscureAll(encoded));
  }
  return result;
}
