"""Gzipped size of the tracker bundle, of its masking code alone, and of `@rrweb/record` alone.

    make web && .venv/bin/python -m bench.tracker_bundle

Sizes are those of `gzip -c FILE | wc -c` (gzip's default level, 6). The tracker is web/dist/tracker.js
as `make web` builds it. The other two are built here with web/'s esbuild and the same settings
(minified IIFE or ES module, ES2019): `@rrweb/record` alone is the baseline, and the masking code
is privacy.ts, sanitizers.ts and mask-text.ts with what they import from the tracker.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from bench.common import REPOSITORY, machine

WEB = REPOSITORY / "web"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"
TRACKER = WEB / "dist" / "tracker.js"
SOURCES = WEB / "tracker" / "src"

ENTRIES = {
    "rrweb": ('import { record } from "@rrweb/record";\nwindow.BenchRrwebRecord = record;\n', "iife"),
    "masking": (
        f'export {{ Privacy }} from "{SOURCES / "privacy.ts"}";\n'
        f'export {{ sanitizeEvent }} from "{SOURCES / "sanitizers.ts"}";\n',
        "esm",
    ),
}


def build(name: str, outdir: Path) -> Path:
    source, module_format = ENTRIES[name]
    entry = outdir / f"{name}.entry.js"
    entry.write_text(source)
    output = outdir / f"{name}.js"
    command = [
        str(ESBUILD),
        str(entry),
        "--bundle",
        "--minify",
        f"--format={module_format}",
        "--target=es2019",
        "--legal-comments=none",
        "--log-level=warning",
        f"--outfile={output}",
    ]
    # NODE_PATH lets esbuild resolve web/node_modules from an entry outside web/.
    subprocess.run(command, check=True, env={**os.environ, "NODE_PATH": str(WEB / "node_modules")}, cwd=WEB)
    return output


def gzipped_bytes(path: Path) -> int:
    return len(subprocess.run(["gzip", "-c", str(path)], check=True, capture_output=True).stdout)


def main() -> None:
    if not TRACKER.exists() or not ESBUILD.exists():
        raise SystemExit(f"{TRACKER} or {ESBUILD} is missing; run `make web` first.")
    with tempfile.TemporaryDirectory(prefix="tandem-bundle-") as folder:
        rrweb = gzipped_bytes(build("rrweb", Path(folder)))
        masking = gzipped_bytes(build("masking", Path(folder)))
    tracker = gzipped_bytes(TRACKER)
    print(f"Machine: {machine()}")
    print("| bundle | gzipped bytes | vs @rrweb/record alone |")
    print("|---|---|---|")
    print(f"| @rrweb/record alone (baseline) | {rrweb} | 1.00 |")
    print(f"| masking code alone | {masking} | {masking / rrweb:.2f} |")
    print(f"| Tandem tracker (web/dist/tracker.js) | {tracker} | {tracker / rrweb:.2f} |")


if __name__ == "__main__":
    main()
