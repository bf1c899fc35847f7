"""Render the Kubernetes manifests: deploy/k8s/templates with a values file, into deploy/k8s/rendered/<env>/.

    python deploy/render.py              # render every environment in deploy/k8s/values/
    python deploy/render.py dev          # render one
    python deploy/render.py --check      # exit 1 when the committed output is out of date

deploy/k8s/values.yaml contains the defaults; values/<env>.yaml overrides them (maps merge key by key,
everything else replaces). The output is plain YAML for `kubectl apply -f deploy/k8s/rendered/<env>/`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import jinja2
import yaml

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
TEMPLATES = K8S / "templates"
VALUES_DIR = K8S / "values"
RENDERED = K8S / "rendered"
DEFAULT_VALUES = K8S / "values.yaml"

DEFAULT_SECRET_NAME = "tandem-secrets"

# Peer addresses coturn must never relay to: private, shared, loopback, link-local (the cloud
# metadata address 169.254.169.254 among them) and multicast ranges, in coturn's range syntax.
DENIED_PEER_RANGES = [
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "224.0.0.0-255.255.255.255",
    "::1",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
]


def environments() -> list[str]:
    """Return the environment names, one per file in deploy/k8s/values/."""
    return sorted(path.stem for path in VALUES_DIR.glob("*.yaml"))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` applied: nested maps merge, any other value replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(env: str) -> dict[str, Any]:
    """Return the defaults merged with values/<env>.yaml, plus the values derived from them."""
    path = VALUES_DIR / f"{env}.yaml"
    if not path.exists():
        raise SystemExit(f"No values file {path}: choose one of {', '.join(environments())}.")
    values = merge(yaml.safe_load(DEFAULT_VALUES.read_text()), yaml.safe_load(path.read_text()) or {})
    return derive(values)


def derive(values: dict[str, Any]) -> dict[str, Any]:
    """Add what follows from other values: the Secret name, the grace period, the STUN and TURN URLs."""
    secrets = values["secrets"]
    if not secrets["existingSecret"]:
        missing = {"secret-key", "turn-secret", "clickhouse-password"} - set(secrets["values"])
        if missing:
            raise SystemExit(f"secrets.values lacks {sorted(missing)}: set them, or set secrets.existingSecret.")
    values["secret_name"] = secrets["existingSecret"] or DEFAULT_SECRET_NAME

    shutdown = values["shutdown"]
    values["grace_period"] = (
        shutdown["preStopSeconds"]
        + shutdown["timeoutSeconds"]
        + shutdown["natsDrainSeconds"]
        + shutdown["marginSeconds"]
    )

    host = values["turn"]["host"]
    signal_env = values["services"]["signal"]["env"]
    signal_env.setdefault("TANDEM_STUN_URLS", f"stun:{host}:3478")
    signal_env.setdefault("TANDEM_TURN_URLS", f"turn:{host}:3478?transport=udp,turn:{host}:3478?transport=tcp")
    values["denied_peer_ranges"] = DENIED_PEER_RANGES
    return values


def to_yaml(value: Any) -> str:
    """Dump a value as block YAML, for a template to indent into place."""
    return yaml.safe_dump(value, default_flow_style=False, sort_keys=True).rstrip("\n")


def make_environment(values: dict[str, Any]) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["to_yaml"] = to_yaml

    def image(name: str) -> str:
        images = values["images"]
        return f"{images['registry']}{name}:{images['tag']}"

    environment.globals.update(values)
    environment.globals["image"] = image
    return environment


def service_config(values: dict[str, Any], name: str) -> dict[str, str]:
    """Return the TANDEM_* variables of one service's ConfigMap: the shared ones, then its own."""
    config = {**values["config"], **values["services"][name].get("env", {})}
    return {key: str(value) for key, value in config.items()}


def header(template: str, env: str) -> str:
    return (
        f"# Rendered by deploy/render.py from deploy/k8s/templates/{template} with values/{env}.yaml.\n"
        "# Do not edit: change the template or the values and run `python deploy/render.py`.\n"
    )


def render(env: str) -> dict[str, str]:
    """Return the manifests of one environment, file name to text."""
    values = load_values(env)
    environment = make_environment(values)
    files: dict[str, str] = {}

    def add(file_name: str, template: str, **context: Any) -> None:
        text = environment.get_template(template).render(**context)
        files[file_name] = header(template, env) + "---\n" + text.lstrip("\n")

    add("00-base.yaml", "base.yaml.j2")
    for name, svc in sorted(values["services"].items()):
        config = service_config(values, name)
        checksum = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        add(f"10-{name}.yaml", "app.yaml.j2", name=name, svc=svc, config=config, config_checksum=checksum)
    add("20-web.yaml", "web.yaml.j2")
    add("30-nats.yaml", "nats.yaml.j2")
    add("31-clickhouse.yaml", "clickhouse.yaml.j2")
    add("32-coturn.yaml", "coturn.yaml.j2")
    add("40-ingress.yaml", "ingress.yaml.j2")
    return files


def stale_files(env: str) -> list[str]:
    """Return the names of files in rendered/<env>/ that differ from a fresh render, or are missing or extra."""
    expected = render(env)
    folder = RENDERED / env
    present = {path.name for path in folder.glob("*.yaml")} if folder.is_dir() else set()
    stale = sorted(present - set(expected))
    for name, text in expected.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return sorted(stale)


def write(env: str) -> None:
    folder = RENDERED / env
    folder.mkdir(parents=True, exist_ok=True)
    expected = render(env)
    for path in folder.glob("*.yaml"):
        if path.name not in expected:
            path.unlink()
    for name, text in expected.items():
        (folder / name).write_text(text)
    print(f"Rendered {len(expected)} files into {folder}/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render Tandem's Kubernetes manifests from templates and values.")
    parser.add_argument("envs", nargs="*", help="Environments to render (default: every values/*.yaml).")
    parser.add_argument("--check", action="store_true", help="Exit 1 when the committed output is out of date.")
    arguments = parser.parse_args(argv)
    envs = arguments.envs or environments()

    if arguments.check:
        stale = {env: files for env in envs if (files := stale_files(env))}
        for env, files in stale.items():
            print(f"deploy/k8s/rendered/{env}/ is out of date: {', '.join(files)}. Run `python deploy/render.py`.")
        return 1 if stale else 0
    for env in envs:
        write(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
