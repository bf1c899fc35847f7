"""deploy/prometheus/*.yml pass Prometheus' own check (`promtool check config` from Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, load_script

PROMETHEUS = DEPLOY / "prometheus"


@pytest.fixture
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make prometheus` (apt-get install prometheus).")
    return binary


def check_config(promtool: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)


def test_local_config_valid(promtool):
    result = check_config(promtool, PROMETHEUS / "local.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_cluster_config_valid(promtool, tmp_path):
    """Debian builds Prometheus without Kubernetes discovery, so the check runs on a copy whose
    kubernetes_sd_configs became static_configs; the relabelling rules are checked as written."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs"), job["job_name"]
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = check_config(promtool, copy)
    assert result.returncode == 0, result.stdout + result.stderr


def test_cluster_config_scrapes_namespace():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    render = load_script("render")
    for env in render.environments():
        namespace = render.load_values(env)["namespace"]
        for job in config["scrape_configs"]:
            namespaces = [name for sd in job["kubernetes_sd_configs"] for name in sd["namespaces"]["names"]]
            assert namespace in namespaces, f"{env}: Prometheus does not look in namespace {namespace}"


def test_broken_config_rejected(promtool, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: often\n")
    assert check_config(promtool, broken).returncode != 0
