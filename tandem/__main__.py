"""Command line: `python -m tandem run` starts everything; `python -m tandem SERVICE` runs one service.

python -m tandem run                      # nats-server, every service, dashboard and demo on :8080
python -m tandem ingest|live|signal|sessions   # one service, as one Kubernetes Deployment runs it
python -m tandem create-agent NAME --role agent
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

import structlog
from aiohttp import web
from tandem_runtime import bus
from tandem_runtime.directory import AgentDirectory
from tandem_runtime.logs import configure_logging

from tandem.settings import AllInOneSettings

log = structlog.get_logger(__name__)

SERVICES = {
    "ingest": "tandem_ingest.__main__",
    "live": "tandem_live.__main__",
    "signal": "tandem_signal.__main__",
    "sessions": "tandem_sessions.__main__",
}


def run_all() -> None:
    from tandem.server import start

    settings = AllInOneSettings()
    configure_logging(settings.log_level)

    async def build() -> web.Application:
        started = await start(settings)
        url = f"http://{settings.host}:{settings.port}"
        lines = [
            f"Tandem is running at {url}/ (dashboard) and {url}/demo/ (demo shop).",
        ]
        if started.admin_password:
            lines.append(f"Sign in as 'admin' with the generated password: {started.admin_password}")
            lines.append(f"(also saved in {settings.data_dir / 'admin-password'})")
        else:
            lines.append(f"Sign in as 'admin'; the first password was saved in {settings.data_dir / 'admin-password'}.")
        print("\n".join(lines), flush=True)
        return started.app

    web.run_app(
        build(),
        host=settings.host,
        port=settings.port,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        access_log=None,
        print=None,
    )


def create_agent(arguments: argparse.Namespace) -> None:
    settings = AllInOneSettings()
    configure_logging(settings.log_level)

    async def create() -> tuple[str, bool]:
        nc = await bus.connect(arguments.nats_url or settings.nats_url, name="tandem-cli")
        try:
            await bus.ensure_streams(nc.jetstream(), replicas=settings.stream_replicas)
            password = arguments.password or secrets.token_urlsafe(12)
            directory = AgentDirectory(js=nc.jetstream())
            existed = await directory.get(arguments.name) is not None
            await directory.create(name=arguments.name, password=password, role=arguments.role)
            return password, existed
        finally:
            await nc.drain()

    password, existed = asyncio.run(create())
    outcome = "reset: its earlier sign-ins are signed out" if existed else "created"
    print(f"Agent {arguments.name!r} ({arguments.role}) {outcome}. Password: {password}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tandem", description="Tandem session replay and co-browsing.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="Start nats-server, every service, the dashboard and the demo on one port.")
    for name in SERVICES:
        commands.add_parser(name, help=f"Run the {name} service alone.")
    agent = commands.add_parser("create-agent", help="Create an agent account (NATS must be running).")
    agent.add_argument("name", help="User name the agent signs in with.")
    agent.add_argument("--role", choices=["admin", "agent", "viewer"], default="agent", help="What the agent may do.")
    agent.add_argument("--password", help="Password to set; a random one is printed when omitted.")
    agent.add_argument("--nats-url", help="NATS URL; defaults to TANDEM_NATS_URL.")
    arguments = parser.parse_args(argv)

    if arguments.command == "run":
        run_all()
    elif arguments.command == "create-agent":
        create_agent(arguments)
    else:
        module = __import__(SERVICES[arguments.command], fromlist=["main"])
        module.main()


if __name__ == "__main__":
    sys.exit(main())
