"""Run the tests marked `loopback_network` in a network namespace whose only interface is `lo`.

WebRTC gathers a candidate on every interface, so a call between two local
peers would otherwise also try the machine's real addresses. In a namespace made
with `unshare -n` (root, as in CI) only 127.0.0.1 exists. The first marked test
runs all marked tests of the session in one child pytest inside the namespace.
Each test's outcome is then reported from the child's JUnit XML. Conftests use
this plugin by importing `pytest_runtest_protocol`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from _pytest.reports import TestReport

MARK = "loopback_network"
IN_NAMESPACE = "TANDEM_IN_NETNS"
CHILD_TIMEOUT_SECONDS = 900

_results: dict[str, tuple[str, str]] = {}
_ran = False


def in_namespace() -> bool:
    return os.environ.get(IN_NAMESPACE) == "1"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if item.get_closest_marker(MARK) is None or in_namespace():
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    started = time.time()
    outcome, text = run_in_namespace(item)
    stopped = time.time()
    for when in ("setup", "call", "teardown"):
        status, longrepr = "passed", None
        if when == "setup" and outcome == "skipped":
            status, longrepr = "skipped", (str(item.path), item.location[1] or 0, text)
        elif when == "call" and outcome == "failed":
            status, longrepr = "failed", text
        elif outcome == "skipped" and when == "call":
            continue
        report = TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords={name: 1 for name in item.keywords},
            outcome=status,
            longrepr=longrepr,
            when=when,
            duration=stopped - started if when == "call" else 0.0,
            start=started,
            stop=stopped,
        )
        item.ihook.pytest_runtest_logreport(report=report)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


def run_in_namespace(item: pytest.Item) -> tuple[str, str]:
    """Return (outcome, text) of the item, running every marked test of the session on first use."""
    global _ran
    if not _ran:
        _ran = True
        marked = [other for other in item.session.items if other.get_closest_marker(MARK) is not None]
        _results.update(run_child(item.config, marked))
    return _results.get(item.nodeid, ("failed", "The test did not report from the network namespace."))


def run_child(config: pytest.Config, items: list[pytest.Item]) -> dict[str, tuple[str, str]]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return {item.nodeid: ("skipped", "unshare or ip is missing (util-linux, iproute2)") for item in items}
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = f"cannot make a network namespace (needs root): {probe.stderr.strip()}"
        return {item.nodeid: ("skipped", reason) for item in items}

    junit = Path(tempfile.mkdtemp(prefix="tandem-netns-")) / "junit.xml"
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"]
    pytest_command += [item.nodeid for item in items]
    script = 'ip link set lo up && exec "$@"'
    command = ["unshare", "-n", "sh", "-c", script, "sh", *pytest_command]
    environment = {**os.environ, IN_NAMESPACE: "1"}
    try:
        child = subprocess.run(
            command, cwd=config.rootpath, env=environment, capture_output=True, text=True, timeout=CHILD_TIMEOUT_SECONDS
        )
        output = child.stdout[-20_000:] + child.stderr[-5_000:]
    except subprocess.TimeoutExpired as expired:
        output = f"The namespace run timed out after {CHILD_TIMEOUT_SECONDS} s.\n{expired.stdout or ''}"
    return parse_junit(junit, items, output)


def parse_junit(junit: Path, items: list[pytest.Item], output: str) -> dict[str, tuple[str, str]]:
    by_key = {(item.module.__name__ if item.module else "", item.name): item.nodeid for item in items}
    results: dict[str, tuple[str, str]] = {}
    if not junit.exists():
        return {item.nodeid: ("failed", f"The namespace run wrote no report.\n{output}") for item in items}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        nodeid = by_key.get((case.get("classname", ""), case.get("name", "")))
        if nodeid is None:
            continue
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        skipped = case.find("skipped")
        if failure is not None:
            results[nodeid] = (
                "failed",
                (failure.text or failure.get("message", "")) + "\n--- child output ---\n" + output,
            )
        elif skipped is not None:
            results[nodeid] = ("skipped", skipped.get("message", "skipped in the namespace"))
        else:
            results[nodeid] = ("passed", "")
    return results
