"""Routes of the signal service, mounted under `/signal`."""

from __future__ import annotations

from aiohttp import web
from nats.aio.client import Client as NatsClient
from tandem_runtime.http import error_middleware
from tandem_runtime.tokens import TokenSigner

from tandem_signal.settings import SignalSettings


def create_app(*, settings: SignalSettings, nc: NatsClient, signer: TokenSigner) -> web.Application:
    """Build the signal application; mount it under `/signal`."""
    # TODO(calls and remote control land): add the signalling WebSocket and consent logic here.
    app = web.Application(middlewares=[error_middleware("signal")])
    return app
