"""Helpers for the deployment tests: the scripts under deploy/ and the rendered manifests."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
DEPLOY = REPOSITORY / "deploy"
RENDERED = DEPLOY / "k8s" / "rendered"


def load_script(name: str) -> ModuleType:
    """Import deploy/<name>.py, which is a script and not in a package."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def rendered_documents(env: str) -> list[tuple[str, dict[str, Any]]]:
    """Return (file name, object) for every object committed in deploy/k8s/rendered/<env>/.

    Parsed once per test run and shared, so callers must not change the objects.
    """
    documents = []
    for path in sorted((RENDERED / env).glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents
