"""Every PromQL expression of deploy/grafana/tandem.json returns data from a real Prometheus.

Debian's `prometheus` (`make prometheus` installs it) scrapes an all-in-one server every second. The test
sends tracker batches and watches the session as an agent, then evaluates each panel's expression through
Prometheus' HTTP API. Prometheus listens on 127.0.0.1 and keeps its storage in the test's tmp folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from tandem_runtime.embedded import free_port

from tests.conftest import RunningTandem, start_tandem

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "tandem.json"

# Grafana's built-in variables, as Grafana would set them for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s"}

# Metrics of processes that do not run in the all-in-one server here, so their panels cannot return
# data in this test: prometheus-nats-exporter's (the all-in-one runs nats-server without it) and
# ClickHouse's own endpoint (tests use chdb, which has none).
NOT_RUNNING_HERE = ("gnatsd_varz_", "jetstream_", "ClickHouse")

# Metrics with labels whose samples only appear after traffic this test does not send. Each is checked to
# have no sample on /metrics, so that the test fails, and the name must leave this list, once one
# appears (for example when the service sets its known label values to zero at start).
NO_SAMPLES_YET: set[str] = set()

META = {"type": 4, "timestamp": 1, "data": {"href": "http://shop.test/", "width": 800, "height": 600}}
SNAPSHOT = {"type": 2, "timestamp": 2, "data": {"node": {"type": 0, "childNodes": [], "id": 1}}}
CLICK = {"type": 3, "timestamp": 3, "data": {"source": 2, "type": 2, "id": 1, "x": 5, "y": 5}}


def dashboard_expressions() -> list[tuple[str, str]]:
    """Return (panel title, expression) for every query target of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def with_grafana_variables(expression: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expression = expression.replace(variable, value)
    return expression


def metric_names(expression: str) -> set[str]:
    """Return the names in an expression that look like metric names (not functions, labels or keywords)."""
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=[{\[)])", expression))
    return {name.removesuffix("_bucket") for name in names if name not in {"le", "by"}}


def test_dashboard_panels_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_dashboard_metric_names_parsed():
    assert metric_names('sum by (le) (rate(tandem_live_fanout_lag_seconds_bucket{a="b"}[1m]))') == {
        "tandem_live_fanout_lag_seconds"
    }
    assert metric_names("sum(tandem_live_watches)") == {"tandem_live_watches"}


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Debian's prometheus is not installed: run `make prometheus` (apt-get install prometheus).")
    return binary


@pytest.fixture
async def tandem_server(tmp_path: Path) -> AsyncIterator[RunningTandem]:
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


@pytest.fixture
def prometheus(prometheus_binary: str, tandem_server: RunningTandem, tmp_path: Path) -> Iterator[str]:
    """Start Prometheus scraping the all-in-one server every second; yield its URL."""
    config = tmp_path / "prometheus.yml"
    target = tandem_server.url.removeprefix("http://")
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: tandem\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
        "        labels: {app: tandem}\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'prometheus'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def query(http: aiohttp.ClientSession, prometheus: str, expression: str) -> list[dict]:
    async with http.get(f"{prometheus}/api/v1/query", params={"query": expression}) as response:
        body = await response.json()
    assert body["status"] == "success", f"{expression}: {body}"
    return body["data"]["result"]


async def wait_for_prometheus(http: aiohttp.ClientSession, prometheus: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(f"{prometheus}/-/ready") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail("Prometheus was not ready within 30 s.")


async def send_tracker_traffic(http: aiohttp.ClientSession, tandem: RunningTandem, batches: int) -> str:
    """Start a session, post `batches` batches and one with a bad token; return the session id."""
    body = {"projectKey": "demo-key", "tabId": "tab-1", "url": "http://shop.test/"}
    async with http.post(f"{tandem.url}/ingest/v1/web/start", json=body) as response:
        assert response.status == 200, await response.text()
        started = await response.json()
    headers = {"Authorization": f"Bearer {started['token']}"}
    for seq in range(batches):
        events = [META, SNAPSHOT] if seq == 0 else [CLICK]
        batch = {"tabId": "tab-1", "sessionID": started["sessionID"], "seq": seq, "events": events}
        async with http.post(f"{tandem.url}/ingest/v1/web/i", json=batch, headers=headers) as response:
            assert response.status == 200, await response.text()
    bad = {"tabId": "tab-1", "seq": batches, "events": [CLICK]}
    async with http.post(
        f"{tandem.url}/ingest/v1/web/i", json=bad, headers={"Authorization": "Bearer bad"}
    ) as response:
        assert response.status == 401
    return started["sessionID"]


async def receive_until(ws: aiohttp.ClientWebSocketResponse, frame_type: str) -> dict:
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == frame_type:
            return frame


async def wait_for_scrape(http: aiohttp.ClientSession, prometheus: str, batches: int) -> None:
    """Wait until Prometheus contains the traffic's counters, then two more scrapes for rate() to see a change."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = await query(http, prometheus, "sum(tandem_ingest_batches_total)")
        watches = await query(http, prometheus, "sum(tandem_live_watches)")
        if result and float(result[0]["value"][1]) >= batches and watches and float(watches[0]["value"][1]) >= 1:
            await asyncio.sleep(2.5)
            return
        await asyncio.sleep(0.2)
    pytest.fail("Prometheus did not scrape the traffic's metrics within 30 s.")


async def evaluate_until_data(
    http: aiohttp.ClientSession, prometheus: str, expressions: list[tuple[str, str]], timeout: float
) -> list[str]:
    """Evaluate the expressions until each returns data or `timeout` passes; return those still empty.

    The sessions consumer stores batches in the background, so its metrics may trail the ingest ones.
    """
    deadline = time.monotonic() + timeout
    while True:
        empty = []
        for title, expression in expressions:
            if not await query(http, prometheus, with_grafana_variables(expression)):
                empty.append(f"{title}: {expression}")
        if not empty or time.monotonic() > deadline:
            return empty
        await asyncio.sleep(1)


def sampled_names(exposition: str) -> set[str]:
    """Return the names in NO_SAMPLES_YET that have a sample in a /metrics text."""
    return {name for name in NO_SAMPLES_YET if re.search(rf"^{name}(_bucket|_count|_sum)?[{{ ]", exposition, re.M)}


async def test_dashboard_expressions_return_data(tandem_server, prometheus):
    tandem = tandem_server
    expressions = []
    for title, expression in dashboard_expressions():
        names = metric_names(expression)
        if not any(name.startswith(NOT_RUNNING_HERE) for name in names) and not names & NO_SAMPLES_YET:
            expressions.append((title, expression))

    # Metrics are process-wide: earlier tests in this pytest run (tests/access makes calls) may have sampled them.
    sampled_before = sampled_names(generate_latest().decode())

    async with aiohttp.ClientSession() as http:
        await wait_for_prometheus(http, prometheus)
        session_id = await send_tracker_traffic(http, tandem, batches=5)
        token = await tandem.agent_token(http)
        async with http.ws_connect(tandem.ws_url) as ws:
            await ws.send_json({"type": "auth", "token": token})
            await receive_until(ws, "hello")
            await ws.send_json({"type": "watch", "sessionId": session_id})
            await receive_until(ws, "events")
            await wait_for_scrape(http, prometheus, batches=5)

            async with http.get(f"{tandem.url}/metrics") as response:
                exposed = await response.text()
            empty = await evaluate_until_data(http, prometheus, expressions, timeout=20)

    sampled = sampled_names(exposed) - sampled_before
    assert not sampled, f"Remove {sorted(sampled)} from NO_SAMPLES_YET: /metrics has samples of them now."
    assert expressions, "every expression was skipped"
    assert not empty, "expressions without data:\n" + "\n".join(empty)
