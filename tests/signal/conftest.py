"""The all-in-one server with short Assist timeouts, and agents to sign in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tandem_runtime.directory import AgentDirectory

from tests.conftest import RunningTandem, start_tandem
from tests.signal.netns import pytest_runtest_protocol  # noqa: F401  (runs loopback_network tests in a namespace)

CONSENT_TIMEOUT_SECONDS = 1.5
RECONNECT_GRACE_SECONDS = 3.0
TURN_SECRET = "turn-test-secret"


@pytest.fixture
async def assist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningTandem]:
    """Tandem whose signal service times out consent after 1.5 s and waits 3 s for a reloaded page."""
    monkeypatch.setenv("TANDEM_CONSENT_TIMEOUT_SECONDS", str(CONSENT_TIMEOUT_SECONDS))
    monkeypatch.setenv("TANDEM_RECONNECT_GRACE_SECONDS", str(RECONNECT_GRACE_SECONDS))
    monkeypatch.setenv("TANDEM_TURN_URLS", "turn:127.0.0.1:3478?transport=udp")
    monkeypatch.setenv("TANDEM_TURN_SECRET", TURN_SECRET)
    runner, running = await start_tandem(tmp_path / "data")
    yield running
    await runner.cleanup()


async def login(tandem: RunningTandem, http, name: str, role: str) -> str:
    """Create an agent account with `role` and return its token."""
    await AgentDirectory(js=tandem.nc.jetstream()).create(name=name, password="password-" + name, role=role)
    async with http.post(
        f"{tandem.url}/api/v1/auth/login", json={"username": name, "password": "password-" + name}
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["token"]
