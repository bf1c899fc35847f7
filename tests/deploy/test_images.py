"""The Dockerfiles in deploy/docker/, read (no Docker engine runs here) and checked against the services and
the rendered manifests: user, port, command and build context."""

from __future__ import annotations

import fnmatch
import re

import pytest
from tandem_ingest.settings import IngestSettings
from tandem_live.settings import LiveSettings
from tandem_sessions.settings import SessionsSettings
from tandem_signal.settings import SignalSettings

from tests.deploy.conftest import DEPLOY, REPOSITORY, rendered_documents

SETTINGS = {"ingest": IngestSettings, "live": LiveSettings, "signal": SignalSettings, "sessions": SessionsSettings}
DOCKER = DEPLOY / "docker"


def instructions(name: str) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    parsed = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            parsed.append((keyword.upper(), arguments.strip()))
    return parsed


def final_stage(name: str) -> list[tuple[str, str]]:
    parsed = instructions(name)
    last_from = max(index for index, (keyword, _) in enumerate(parsed) if keyword == "FROM")
    return parsed[last_from:]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    values = [arguments for instruction, arguments in stage if instruction == keyword]
    assert len(values) == 1, f"expected one {keyword}, found {values}"
    return values[0]


def deployment(name: str) -> dict:
    return next(
        document
        for _, document in rendered_documents("prod")
        if document["kind"] == "Deployment" and document["metadata"]["name"] == name
    )


def copy_sources(name: str) -> list[str]:
    """Return the build-context paths that COPY instructions read (not those copied from another stage)."""
    sources = []
    for keyword, arguments in instructions(name):
        if keyword == "COPY" and not arguments.startswith("--from"):
            sources.extend(arguments.split()[:-1])
    return sources


def ignored(name: str, path: str) -> bool:
    """Tell whether the Dockerfile's own .dockerignore leaves `path` out of the context (last match wins)."""
    excluded = False
    for line in (DOCKER / f"{name}.Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            excluded = not negated
    return excluded


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_service_image_matches_deployment(name):
    stage = final_stage(name)
    container = deployment(name)["spec"]["template"]["spec"]["containers"][0]
    pod_user = deployment(name)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    port = SETTINGS[name].model_fields["port"].default

    assert only(stage, "USER") == f"{pod_user}:{pod_user}"
    assert only(stage, "EXPOSE") == str(port)
    assert container["ports"][0]["containerPort"] == port
    assert only(stage, "CMD") == f'["python", "-m", "tandem_{name}"]'
    assert container["command"] == ["python", "-m", f"tandem_{name}"]
    assert only(instructions(name), "ARG").startswith("PYTHON_IMAGE=python:3.11-slim")


@pytest.mark.parametrize("name", [*sorted(SETTINGS), "web"])
def test_image_context_has_sources(name):
    sources = copy_sources(name)
    assert sources
    for source in sources:
        assert (REPOSITORY / source).exists(), f"{name}.Dockerfile copies {source}, which does not exist"
        assert not ignored(name, source), f"{name}.Dockerfile.dockerignore leaves out {source}"
    assert ignored(name, ".venv")
    assert ignored(name, "web/node_modules")


def test_web_image_matches_deployment():
    stage = final_stage("web")
    spec = deployment("web")["spec"]["template"]["spec"]
    nginx_config = (DOCKER / "web.nginx.conf").read_text()
    port = spec["containers"][0]["ports"][0]["containerPort"]

    assert only(stage, "USER") == f"{spec['securityContext']['runAsUser']}:{spec['securityContext']['runAsUser']}"
    assert only(stage, "EXPOSE") == str(port)
    assert f"listen {port};" in nginx_config
    assert "location = /healthz" in nginx_config
    for path in ("location = /", "location /demo/", "location /static/"):
        assert path in nginx_config, path
