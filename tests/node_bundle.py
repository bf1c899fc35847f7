"""Bundling of test harnesses that run the browser code's own modules, with web/'s esbuild."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[1] / "web"
TRACKER_SOURCES = WEB / "tracker" / "src"
DASHBOARD_SOURCES = WEB / "dashboard" / "src"
ESBUILD = WEB / "node_modules" / ".bin" / "esbuild"


def bundle(source: str, folder: Path, *, for_node: bool) -> Path:
    """Bundle the JavaScript `source` into `folder` and return the bundle.

    `source` imports web/ modules by absolute path. The bundle is an ES module for Node
    when `for_node` is true, else a classic script for a page.
    """
    if not ESBUILD.exists() or shutil.which("node") is None:
        pytest.fail(f"{ESBUILD} or node is missing: run `make web` first.")
    entry = folder / "entry.js"
    entry.write_text(source)
    output = folder / ("harness.mjs" if for_node else "harness.js")
    options = ["--platform=node", "--format=esm"] if for_node else ["--format=iife"]
    command = [str(ESBUILD), str(entry), "--bundle", *options, "--log-level=warning", f"--outfile={output}"]
    # The entry lies outside web/, so esbuild finds the npm packages through NODE_PATH.
    subprocess.run(command, check=True, cwd=WEB, env={**os.environ, "NODE_PATH": str(WEB / "node_modules")})
    return output
