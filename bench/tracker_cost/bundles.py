"""Build the benchmark's own browser bundles with web/'s esbuild, and measure gzipped sizes.

Tandem's bundles come from `make web` (web/dist). The others are built here,
minified like Tandem's, from the packages pinned in web/package.json:
`@rrweb/record` alone, the OpenReplay tracker, and `@rrweb/replay` for the
replay check.
"""

from __future__ import annotations

import gzip
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPOSITORY

WEB = REPOSITORY / "web"
DIST = WEB / "dist"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"
# gzip's default level, as `gzip -c FILE | wc -c` and bench.tracker_bundle measure.
GZIP_LEVEL = 6

# Each entry is a tiny module that puts one package's export on `window`.
ENTRIES = {
    "rrweb": 'import { record } from "@rrweb/record";\nwindow.BenchRrwebRecord = record;\n',
    "openreplay": 'import Tracker from "@openreplay/tracker";\nwindow.BenchOpenReplayTracker = Tracker;\n',
    "replay": 'import { Replayer } from "@rrweb/replay";\nwindow.BenchReplayer = Replayer;\n',
}


@dataclass(frozen=True)
class BundleSize:
    name: str
    path: Path
    bytes: int
    gzipped_bytes: int


def build(outdir: Path) -> dict[str, Path]:
    """Build every entry of ENTRIES into `outdir` as a minified classic script; return the paths by name."""
    if not ESBUILD.exists():
        raise FileNotFoundError(f"{ESBUILD} is missing; run `make web` (npm ci in web/) first.")
    if not (DIST / "tracker.js").exists():
        raise FileNotFoundError(f"{DIST / 'tracker.js'} is missing; run `make web` first.")
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, source in ENTRIES.items():
        entry = outdir / f"{name}.entry.js"
        entry.write_text(source)
        output = outdir / f"{name}.js"
        command = [
            str(ESBUILD),
            str(entry),
            "--bundle",
            "--minify",
            "--format=iife",
            "--target=es2019",
            "--legal-comments=none",
            "--log-level=warning",
            f"--outfile={output}",
        ]
        # NODE_PATH lets esbuild resolve the packages of web/node_modules from a file outside web/.
        env = {**os.environ, "NODE_PATH": str(WEB / "node_modules")}
        subprocess.run(command, check=True, env=env, cwd=WEB)
        paths[name] = output
    return paths


def gzipped_size(name: str, path: Path) -> BundleSize:
    data = path.read_bytes()
    return BundleSize(name=name, path=path, bytes=len(data), gzipped_bytes=len(gzip.compress(data, GZIP_LEVEL)))


def sizes(built: dict[str, Path]) -> list[BundleSize]:
    """Sizes of the four trackers' scripts, and of Tandem's assist plugin if it was built."""
    measured = [
        gzipped_size("rrweb alone (@rrweb/record)", built["rrweb"]),
        gzipped_size("OpenReplay tracker", built["openreplay"]),
        gzipped_size("Tandem tracker (web/dist/tracker.js)", DIST / "tracker.js"),
    ]
    assist = DIST / "assist.js"
    if assist.exists():
        measured.append(gzipped_size("Tandem assist plugin (web/dist/assist.js)", assist))
    return measured
