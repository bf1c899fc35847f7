"""The browser code type-checks: esbuild strips TypeScript types without checking them, so tsc does."""

from __future__ import annotations

import subprocess
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def test_web_sources_typecheck():
    tsc = WEB / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), f"{tsc} is missing: run `make web` to install the npm packages"
    result = subprocess.run(
        [str(tsc), "-p", str(WEB / "tsconfig.json")], cwd=WEB, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"tsc found type errors:\n{result.stdout}{result.stderr}"
