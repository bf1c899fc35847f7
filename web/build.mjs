// Build every browser bundle into web/dist with esbuild.
// `node build.mjs` builds once; `node build.mjs --watch` rebuilds on change.
import * as esbuild from "esbuild";
import { cpSync, mkdirSync } from "node:fs";
import { withoutRrwebDeadCode } from "./tracker/build-plugins.mjs";

const watch = process.argv.includes("--watch");
const outdir = new URL("./dist/", import.meta.url).pathname;

const common = {
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["es2020"],
  legalComments: "none",
  logLevel: "info",
  // Only bundles that contain @rrweb/record change: see tracker/build-plugins.mjs.
  plugins: [withoutRrwebDeadCode],
};

const builds = [
  // The tracker: a classic script for the snippet, and an ES module for bundlers.
  { entryPoints: { tracker: "tracker/src/index.ts" }, format: "iife", outdir, ...common },
  { entryPoints: { "tracker.esm": "tracker/src/module.ts" }, format: "esm", outdir, ...common },
  // The assist plugin: `window.TandemAssist` for pages that load tracker.js, an ES module,
  // and the snippet bundle with the tracker and the plugin together.
  { entryPoints: { assist: "assist/src/index.ts" }, format: "iife", outdir, ...common },
  { entryPoints: { "assist.esm": "assist/src/module.ts" }, format: "esm", outdir, ...common },
  { entryPoints: { "tracker-assist": "assist/src/tracker-bundle.ts" }, format: "iife", outdir, ...common },
  // The agents' dashboard.
  { entryPoints: { "dashboard/dashboard": "dashboard/src/main.ts" }, format: "iife", outdir, loader: { ".css": "css" }, ...common },
];

mkdirSync(outdir, { recursive: true });
cpSync("dashboard/public", `${outdir}dashboard`, { recursive: true });
cpSync("demo", `${outdir}demo`, { recursive: true });

if (watch) {
  for (const options of builds) (await esbuild.context(options)).watch();
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
}
