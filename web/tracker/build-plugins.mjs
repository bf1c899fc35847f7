// esbuild plugins for the tracker bundles.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";

const RRWEB_RECORD_VERSION = "2.1.6";

/**
 * Parts of rrweb's `dist/record.js` that the tracker's recorder options never
 * reach, each cut from the first line of `start` to the line before `end` and
 * replaced by `stub`. Every marker starts with a line break, so that it matches
 * only at the start of a line.
 */
const CUTS = [
  {
    // Canvas recording: the 2D and WebGL observers, the canvas manager and its
    // inlined image worker, which rrweb turns into a Blob on every page load. The
    // tracker never sets `recordCanvas`, so record() only calls these five methods.
    start: '\nvar chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";',
    end: "\nclass StylesheetManager {",
    stub: "class CanvasManager { reset() {} freeze() {} unfreeze() {} lock() {} unlock() {} }\n",
  },
  {
    // Events relayed from cross-origin iframes: rrweb listens for them only with
    // `recordCrossOriginIframes`, which the tracker sets to false.
    start: "\n  handleMessage(message) {",
    end: "\n}\nclass ShadowDomManager {",
    stub: "  handleMessage() {}\n",
  },
];

function countOf(text, part) {
  return text.split(part).length - 1;
}

/** Returns `source` with each of CUTS applied; throws when a marker is not found exactly once. */
function applyCuts(source, path) {
  let result = source;
  for (const { start, end, stub } of CUTS) {
    if (countOf(result, start) !== 1 || countOf(result, end) !== 1) {
      throw new Error(`without-rrweb-dead-code: ${JSON.stringify(start)} or ${JSON.stringify(end)} is not found once in ${path}.`);
    }
    const from = result.indexOf(start) + 1;
    const to = result.indexOf(end) + 1;
    result = result.slice(0, from) + stub + result.slice(to);
  }
  return result;
}

/**
 * Leaves the parts of `@rrweb/record` 2.1.6 listed in CUTS out of a bundle:
 * about 3.5 KB of the gzipped tracker. With another version of the package the
 * build fails, so that the cuts are checked again against its `dist/record.js`.
 */
export const withoutRrwebDeadCode = {
  name: "without-rrweb-dead-code",
  setup(build) {
    build.onLoad({ filter: /@rrweb[\\/]record[\\/]dist[\\/]record\.js$/ }, (args) => {
      const packageJson = JSON.parse(readFileSync(join(dirname(args.path), "..", "package.json"), "utf8"));
      if (packageJson.version !== RRWEB_RECORD_VERSION) {
        throw new Error(
          `without-rrweb-dead-code expects @rrweb/record ${RRWEB_RECORD_VERSION}, found ${packageJson.version}; ` +
            "check the cuts in web/tracker/build-plugins.mjs against the new dist/record.js.",
        );
      }
      return { contents: applyCuts(readFileSync(args.path, "utf8"), args.path), loader: "js" };
    });
  },
};
