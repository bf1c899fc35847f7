"""HTTP plumbing for every service: JSON errors, health, readiness, metrics and the process entry point."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from nats.aio.client import Client as NatsClient
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from tandem_protocol import ProtocolError, encode

log = structlog.get_logger(__name__)

HTTP_REQUESTS = Counter(
    "tandem_http_requests_total", "HTTP requests answered, by route and status.", ["service", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "tandem_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

ReadinessCheck = Callable[[], Awaitable[str | None]]
"""Returns None when ready, else a sentence saying what is not."""

READINESS_CHECKS = web.AppKey("readiness_checks", list[ReadinessCheck])


def json_response(model: BaseModel | dict[str, Any], *, status: int = 200) -> web.Response:
    body = encode(model) if isinstance(model, BaseModel) else orjson.dumps(model)
    return web.Response(body=body, status=status, content_type="application/json")


def error_response(error: ProtocolError, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode(error.to_body()), status=error.status, content_type="application/json", headers=headers
    )


def error_middleware(service: str) -> Callable:
    """Turn ProtocolError and aiohttp's HTTP errors into JSON bodies, and count every answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ProtocolError as error:
            status = error.status
            return error_response(error)
        except web.HTTPRequestEntityTooLarge:
            status = 413
            limit = request.app._client_max_size
            return error_response(
                ProtocolError(
                    code="body_too_large",
                    message=f"The body is larger than the limit of {limit} bytes. Send smaller batches.",
                    status=413,
                    details={"maxBytes": limit},
                )
            )
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            code = exc.reason.lower().replace(" ", "_")
            return error_response(
                ProtocolError(code=code, message=f"{exc.reason}: {request.method} {request.path}.", status=exc.status)
            )
        except Exception:
            log.exception("http.unhandled_error", service=service, route=route)
            return error_response(
                ProtocolError(
                    code="internal_error",
                    message="The server failed to handle the request. Try again later.",
                    status=500,
                )
            )
        finally:
            HTTP_REQUESTS.labels(service, route, str(status)).inc()
            HTTP_LATENCY.labels(service, route).observe(time.perf_counter() - started)

    return middleware


async def read_body(request: web.Request) -> bytes:
    """Read the request body; aiohttp raises HTTPRequestEntityTooLarge past `client_max_size`."""
    return await request.read()


def add_ops_routes(app: web.Application) -> None:
    """Add `/healthz`, `/readyz` and `/metrics` to a root application."""
    app[READINESS_CHECKS] = []

    async def healthz(_: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        problems = [problem for check in request.app[READINESS_CHECKS] if (problem := await check())]
        if problems:
            return json_response({"status": "not ready", "problems": problems}, status=503)
        return json_response({"status": "ready"})

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


def nats_readiness(client: NatsClient) -> ReadinessCheck:
    async def check() -> str | None:
        return None if client.is_connected else "NATS is not connected."

    return check


def cors_middleware(allow_headers: str = "Authorization, Content-Type, Content-Encoding") -> Callable:
    """Answer CORS preflights and allow the calling origin, for the tracker on customers' sites."""

    @web.middleware
    async def middleware(request: web.Request, handler: Callable) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and origin:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if origin:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = allow_headers
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    return middleware
