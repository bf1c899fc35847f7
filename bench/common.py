"""Helpers shared by the benchmarks: start the all-in-one server as a child process, and summarise samples."""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from tandem_runtime.embedded import free_port

REPOSITORY = Path(__file__).resolve().parents[1]


@dataclass
class Server:
    url: str
    nats_url: str
    admin_password: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


async def start_server(data_dir: Path | None = None, extra_env: dict[str, str] | None = None) -> Server:
    """Run `python -m tandem run` on free loopback ports and wait until it is ready."""
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="tandem-bench-"))
    port, nats_port = free_port(), free_port()
    env = {
        **os.environ,
        "TANDEM_PORT": str(port),
        "TANDEM_NATS_PORT": str(nats_port),
        "TANDEM_DATA_DIR": str(data_dir),
        "TANDEM_LOG_LEVEL": "warning",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tandem", "run"], env=env, cwd=REPOSITORY, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if process.poll() is not None:
                raise RuntimeError(f"tandem run exited with code {process.returncode}")
            await asyncio.sleep(0.1)
        else:
            process.kill()
            raise TimeoutError("tandem run was not ready within 30 s")
    password = (data_dir / "admin-password").read_text().strip()
    return Server(url=url, nats_url=f"nats://127.0.0.1:{nats_port}", admin_password=password, process=process)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(samples: list[float]) -> dict[str, float]:
    """p50, p95, p99 and mean of samples given in seconds, in milliseconds."""
    return {
        "n": len(samples),
        "p50": percentile(samples, 0.50) * 1000,
        "p95": percentile(samples, 0.95) * 1000,
        "p99": percentile(samples, 0.99) * 1000,
        "mean": statistics.fmean(samples) * 1000,
    }


def machine() -> str:
    cpus = os.cpu_count()
    try:
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{memory_kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        memory = "unknown memory"
    return (
        f"{platform.machine()}, {cpus} cores, {memory}, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
