"""Tandem as separate processes, so that a test can kill and restart each part.

nats-server runs on a fixed port with a JetStream folder that survives its
restarts; the ingest and sessions services run as `python -m tandem_ingest` and
`python -m tandem_sessions` child processes with TANDEM_* variables. The
sessions service can run as another user (nobody, when the tests run as root),
so that taking write permission away from its chdb folder really stops writes.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from nats.aio.client import Client as NatsClient
from tandem_runtime import bus
from tandem_runtime.embedded import EmbeddedNats, free_port

from tandem import bootstrap

SECRET_KEY = "delivery-secret-key-0123456789abcdef"
READY_TIMEOUT_SECONDS = float(os.environ.get("TANDEM_TEST_READY_TIMEOUT", "30"))

SERVICE_MODULES = {"ingest": "tandem_ingest", "sessions": "tandem_sessions"}


@dataclass
class Cluster:
    """nats-server, ingest and sessions on loopback ports, in a folder removed by `close`."""

    root: Path
    nats: EmbeddedNats
    ingest_port: int = field(default_factory=free_port)
    sessions_port: int = field(default_factory=free_port)
    store_user: str | None = None
    """User the sessions service runs as; None runs it as the test's user."""
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    admin_password: str = ""
    nc: NatsClient | None = None
    _starts: int = 0

    @classmethod
    def create(cls, *, store_user: str | None = None, **env: str) -> Cluster:
        # Outside pytest's tmp_path, whose parents only the test's user may enter.
        root = Path(tempfile.mkdtemp(prefix="tandem-delivery-"))
        root.chmod(0o755)
        cluster = cls(root=root, nats=EmbeddedNats(data_dir=root / "nats", port=free_port()), store_user=store_user)
        cluster.env = {key.upper(): value for key, value in env.items()}
        (root / "logs").mkdir()
        cluster.store_dir.mkdir()
        if store_user is not None:
            account = pwd.getpwnam(store_user)
            os.chown(cluster.store_dir, account.pw_uid, account.pw_gid)
        return cluster

    @property
    def store_dir(self) -> Path:
        return self.root / "sessions"

    @property
    def chdb_dir(self) -> Path:
        return self.store_dir / "chdb"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.sessions_port}"

    async def start(self) -> None:
        """Start nats-server, create the demo project and the admin account, then both services."""
        await self.nats.start()
        self.nc = await bus.connect(self.nats.url, name="delivery-test")
        js = self.nc.jetstream()
        await bus.ensure_streams(js)
        await bootstrap.ensure_demo_project(js, key="demo-key")
        self.admin_password = await bootstrap.ensure_admin(js, data_dir=self.root) or ""
        await asyncio.gather(self.start_service("ingest"), self.start_service("sessions"))

    async def start_service(self, name: str) -> None:
        """Start one service and wait until it is ready; for sessions, until its store is open."""
        port = self.ingest_port if name == "ingest" else self.sessions_port
        env = {
            **os.environ,
            "TANDEM_HOST": "127.0.0.1",
            "TANDEM_PORT": str(port),
            "TANDEM_NATS_URL": self.nats.url,
            "TANDEM_SECRET_KEY": SECRET_KEY,
            "TANDEM_LOG_LEVEL": "warning",
            "TANDEM_DATA_DIR": str(self.store_dir),
            "TANDEM_GEOIP_ENABLED": "false",
            "TANDEM_PUBLISH_TIMEOUT_SECONDS": "1",
            "TANDEM_CONSUMER_ACK_WAIT_SECONDS": "3",
            "TANDEM_CONSUMER_RETRY_DELAY_SECONDS": "0.5",
            "TANDEM_CONSUMER_FETCH_TIMEOUT_SECONDS": "0.2",
            "TANDEM_SHUTDOWN_TIMEOUT_SECONDS": "3",
            **self.env,
        }
        command = [sys.executable, "-m", SERVICE_MODULES[name]]
        if name == "sessions" and self.store_user is not None:
            # setpriv rather than Popen(user=...): the latter cannot run the venv's python
            # (a link into root's home) as nobody here, although setpriv can.
            account = pwd.getpwnam(self.store_user)
            command = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", *command]
            env["HOME"] = str(self.store_dir)
        self._starts += 1
        log = open(self.root / "logs" / f"{name}-{self._starts}.log", "wb")  # noqa: SIM115 - the child keeps it
        self.processes[name] = subprocess.Popen(
            command,
            env=env,
            cwd=self.store_dir if name == "sessions" else self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        await self._wait_ready(name, port)

    async def _wait_ready(self, name: str, port: int) -> None:
        url = f"http://127.0.0.1:{port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        async with aiohttp.ClientSession() as http:
            while True:
                process = self.processes[name]
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode}:\n{self.log_tail(name)}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200 and (name != "sessions" or await self._store_open(http)):
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} was not ready within {READY_TIMEOUT_SECONDS} s:\n{self.log_tail(name)}")
                await asyncio.sleep(0.1)

    async def _store_open(self, http: aiohttp.ClientSession) -> bool:
        token = await self.agent_token(http)
        async with http.get(
            f"{self.api_url}/api/v1/sessions",
            params={"projectId": "demo"},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            return response.status == 200

    async def agent_token(self, http: aiohttp.ClientSession) -> str:
        async with http.post(
            f"{self.api_url}/api/v1/auth/login", json={"username": "admin", "password": self.admin_password}
        ) as response:
            assert response.status == 200, await response.text()
            return (await response.json())["token"]

    def kill(self, name: str) -> None:
        """Kill a service with SIGKILL: no shutdown handler runs."""
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def log_tail(self, name: str, lines: int = 40) -> str:
        logs = sorted((self.root / "logs").glob(f"{name}-*.log"), key=lambda path: path.stat().st_mtime)
        if not logs:
            return ""
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-lines:])

    async def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), timeout=5)
            except Exception:  # nats-py may raise while the server is gone; the test is over anyway
                pass
        self.nats.stop()
        # Write permission may still be off if a test failed while the store was down.
        subprocess.run(["chmod", "-R", "u+w", str(self.root)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)
