"""The Kubernetes manifests in deploy/k8s/rendered/: up to date, valid, and wired together.

Validation is offline with kubernetes-validate's bundled JSON schemas of Kubernetes 1.33 (strict: unknown
fields fail); the package ships schemas 1.25 to 1.37.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ElementTree
from typing import Any

import kubernetes_validate
import pytest
from tandem_ingest.settings import IngestSettings
from tandem_live.settings import LiveSettings
from tandem_runtime import bus
from tandem_runtime.embedded import nats_server_binary
from tandem_sessions.settings import SessionsSettings
from tandem_signal.settings import SignalSettings

from tandem.settings import AllInOneSettings
from tests.deploy.conftest import load_script, rendered_documents

KUBERNETES_VERSION = "1.33"
ENVIRONMENTS = ["dev", "prod"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
SETTINGS = {"ingest": IngestSettings, "live": LiveSettings, "signal": SignalSettings, "sessions": SessionsSettings}

render = load_script("render")


def objects(env: str, kind: str) -> list[dict[str, Any]]:
    return [document for _, document in rendered_documents(env) if document["kind"] == kind]


def by_name(env: str, kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in objects(env, kind)}


def workloads(env: str) -> list[dict[str, Any]]:
    return [document for _, document in rendered_documents(env) if document["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {variable["name"]: variable for variable in container.get("env", [])}


def expand(value: str, environment: dict[str, str]) -> str:
    """Replace each $(NAME) with the variable defined before it, as the kubelet does."""
    return re.sub(r"\$\((\w+)\)", lambda match: environment[match.group(1)], value)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_rendered_up_to_date(env):
    stale = render.stale_files(env)
    assert not stale, f"deploy/k8s/rendered/{env}/ is out of date ({stale}): run `python deploy/render.py`."


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_manifests_validate(env):
    documents = rendered_documents(env)
    assert len(documents) > 20
    for file_name, document in documents:
        name = f"{file_name}: {document['kind']} {document['metadata']['name']}"
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name} is invalid for Kubernetes {KUBERNETES_VERSION}: {error.message}")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_select_workload_ports(env):
    for service in objects(env, "Service"):
        name = service["metadata"]["name"]
        selector = service["spec"]["selector"]
        selected = [w for w in workloads(env) if matches(selector, w["spec"]["template"]["metadata"]["labels"])]
        assert selected, f"Service {name} selects no Deployment or StatefulSet"
        for workload in selected:
            container_ports = [
                port for container in pod_spec(workload)["containers"] for port in container.get("ports", [])
            ]
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                protocol = port.get("protocol", "TCP")
                found = [
                    p
                    for p in container_ports
                    if (p.get("name") == target or p["containerPort"] == target)
                    and p.get("protocol", "TCP") == protocol
                ]
                workload_name = workload["metadata"]["name"]
                assert found, f"Service {name} targets {target}/{protocol}, which no container of {workload_name} has"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_scrape_annotations_name_ports(env):
    annotated = 0
    for workload in workloads(env):
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        annotated += 1
        ports = {port["containerPort"] for c in pod_spec(workload)["containers"] for port in c.get("ports", [])}
        assert int(annotations["prometheus.io/port"]) in ports, workload["metadata"]["name"]
    assert annotated == len(SETTINGS) + 2, "the services, NATS and ClickHouse carry scrape annotations"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_statefulsets_have_headless_service(env):
    services = by_name(env, "Service")
    for statefulset in objects(env, "StatefulSet"):
        governing = services.get(statefulset["spec"]["serviceName"])
        assert governing is not None, statefulset["metadata"]["name"]
        assert governing["spec"].get("clusterIP") == "None", governing["metadata"]["name"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_ingress_backends_exist(env):
    services = by_name(env, "Service")
    paths = [
        path
        for ingress in objects(env, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert {path["path"] for path in paths} == {"/ingest", "/live", "/signal", "/api", "/"}
    for path in paths:
        backend = path["backend"]["service"]
        service = services.get(backend["name"])
        assert service is not None, f"{path['path']} routes to a missing Service {backend['name']}"
        port = backend["port"]
        known = {p.get("name") for p in service["spec"]["ports"]} | {p["port"] for p in service["spec"]["ports"]}
        assert port.get("name", port.get("number")) in known, (
            f"{path['path']}: Service {backend['name']} has no port {port}"
        )


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_ingress_routes_prefixes(env):
    routes = {
        path["path"]: path["backend"]["service"]["name"]
        for ingress in objects(env, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routes == {"/ingest": "ingest", "/live": "live", "/signal": "signal", "/api": "sessions", "/": "web"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_budgets_and_autoscalers_target_workloads(env):
    deployments = by_name(env, "Deployment")
    for budget in objects(env, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(matches(selector, w["spec"]["template"]["metadata"]["labels"]) for w in workloads(env)), budget
    for autoscaler in objects(env, "HorizontalPodAutoscaler"):
        target = autoscaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        assert target["name"] in deployments, target
        assert "replicas" not in deployments[target["name"]]["spec"], "the autoscaler and `replicas` would fight"
    for name in [*SETTINGS, "web"]:
        assert name in by_name(env, "PodDisruptionBudget"), name
        assert name in by_name(env, "HorizontalPodAutoscaler"), name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_config_and_secret_references_exist(env):
    config_maps = set(by_name(env, "ConfigMap"))
    secrets = set(by_name(env, "Secret"))
    existing_secret = render.load_values(env)["secrets"]["existingSecret"]
    if existing_secret:
        secrets.add(existing_secret)
    else:
        assert "tandem-secrets" in secrets
    for workload in workloads(env):
        spec = pod_spec(workload)
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config_maps, source
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                if reference:
                    assert reference["name"] in secrets, reference


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_pods_run_hardened(env):
    for workload in workloads(env):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["automountServiceAccountToken"] is False, name
        tmp_volumes = {volume["name"] for volume in spec["volumes"] if "emptyDir" in volume}
        for container in spec["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, f"{name}/{container['name']}"
            assert security["allowPrivilegeEscalation"] is False, f"{name}/{container['name']}"
            assert security["capabilities"]["drop"] == ["ALL"], f"{name}/{container['name']}"
            mounts = {mount["mountPath"]: mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in tmp_volumes, f"{name}/{container['name']} has no writable /tmp"
            assert "limits" in container["resources"], f"{name}/{container['name']}"
            assert "requests" in container["resources"], f"{name}/{container['name']}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_probe_and_drain(env):
    deployments = by_name(env, "Deployment")
    for name in SETTINGS:
        spec = pod_spec(deployments[name])
        container = spec["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        shutdown_timeout = float(env_of(container)["TANDEM_SHUTDOWN_TIMEOUT_SECONDS"]["value"])
        pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        needed = pre_stop + shutdown_timeout + bus.DRAIN_TIMEOUT_SECONDS
        assert spec["terminationGracePeriodSeconds"] > needed, f"{name}: the kubelet would kill it while draining"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_read_every_variable(env):
    config_maps = by_name(env, "ConfigMap")
    deployments = by_name(env, "Deployment")
    for name, settings_class in SETTINGS.items():
        known = {f"TANDEM_{field.upper()}" for field in settings_class.model_fields}
        container = pod_spec(deployments[name])["containers"][0]
        variables = set(config_maps[f"{name}-config"]["data"]) | set(env_of(container))
        unknown = {variable for variable in variables if variable.startswith("TANDEM_")} - known
        assert not unknown, f"{name} has no setting for {sorted(unknown)}"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_accept_their_settings(env, monkeypatch):
    """Each service's settings class validates the environment its container gets, as Kubernetes builds it."""
    config_maps = by_name(env, "ConfigMap")
    deployments = by_name(env, "Deployment")
    for name, settings_class in SETTINGS.items():
        for variable in list(os.environ):
            if variable.startswith("TANDEM_"):
                monkeypatch.delenv(variable)
        container = pod_spec(deployments[name])["containers"][0]
        environment = dict(config_maps[f"{name}-config"]["data"])
        for variable in container["env"]:
            if "valueFrom" in variable:
                # A stand-in for the Secret's value: 32 URL-safe characters, as the checklist asks.
                environment[variable["name"]] = "0123456789abcdef" * 2
            else:
                environment[variable["name"]] = expand(variable["value"], environment)
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)

        settings = settings_class()

        assert settings.host == "0.0.0.0", name
        assert settings.port == container["ports"][0]["containerPort"], name
        assert settings.stream_replicas == by_name(env, "StatefulSet")["nats"]["spec"]["replicas"], name
        if name == "signal":
            assert settings.turn_urls and settings.stun_urls
            assert settings.turn_secret.get_secret_value()
        if name == "sessions":
            assert settings.clickhouse_dsn.get_secret_value().startswith("clickhouse://tandem:0123456789abcdef")


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_services_use_their_images(env):
    values = render.load_values(env)
    deployments = by_name(env, "Deployment")
    for name in [*SETTINGS, "web"]:
        image = pod_spec(deployments[name])["containers"][0]["image"]
        assert image == f"{values['images']['registry']}{name}:{values['images']['tag']}"
        assert (render.DEPLOY / "docker" / f"{name}.Dockerfile").exists(), name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_nats_config_accepted(env, tmp_path):
    config = by_name(env, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    replicas = by_name(env, "StatefulSet")["nats"]["spec"]["replicas"]
    assert config.count("nats-headless") == replicas
    path = tmp_path / "nats.conf"
    path.write_text(config)
    result = subprocess.run(
        [nats_server_binary(), "--config", str(path), "-t"],
        env={**os.environ, "SERVER_NAME": "nats-0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_nats_image_matches_tested_version(env):
    tested = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, timeout=30)
    major_minor = re.search(r"v(\d+\.\d+)\.", tested.stdout).group(1)
    image = pod_spec(by_name(env, "StatefulSet")["nats"])["containers"][0]["image"]
    assert image.startswith(f"nats:{major_minor}-"), f"{image} is not the nats-server {major_minor} the tests run"


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_clickhouse_config_parses(env):
    data = by_name(env, "ConfigMap")["clickhouse-config"]["data"]
    users = ElementTree.fromstring(data["users.xml"])
    assert users.find("users/tandem/password").get("from_env") == "CLICKHOUSE_TANDEM_PASSWORD"
    server = ElementTree.fromstring(data["tandem.xml"])
    assert server.find("prometheus/port").text == "9363"


def test_render_check_flags_edits(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "RENDERED", tmp_path)
    render.write("dev")
    assert render.stale_files("dev") == []
    (tmp_path / "dev" / "10-ingest.yaml").write_text("edited by hand\n")
    (tmp_path / "dev" / "99-extra.yaml").write_text("kind: ConfigMap\n")
    assert render.stale_files("dev") == ["10-ingest.yaml", "99-extra.yaml"]


def test_values_merge_maps_replace_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = render.merge(base, {"a": {"c": [3]}, "e": 2})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base["a"]["c"] == [1, 2]


def test_all_in_one_port_differs():
    assert AllInOneSettings.model_fields["port"].default not in {
        s.model_fields["port"].default for s in SETTINGS.values()
    }
