"""Serving the HTTP app (and ``--metrics`` alone) with Hypercorn's trio worker, in the caller's trio run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import make_asgi_app

from .._errors import InvalidInput, quote_prefix
from .._metrics import Metrics
from .._orchestrator import Orchestrator
from .app import create_app
from .limits import DEFAULT_BODY_LIMIT

logger = logging.getLogger("orchestrator.http")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

#: Seconds open requests (event streams among them) get when the server stops.
GRACEFUL_TIMEOUT = 2.0


def parse_bind(text: str, setting: str = "http") -> str:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as Hypercorn's bind string.

    Raises:
        InvalidInput: naming ``setting`` when it is not HOST:PORT.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput(setting, f"must be HOST:PORT (port 0 to 65535), got {quote_prefix(text)}")
    return f"{host}:{int(port)}"


def _config(bind: str, setting: str) -> Config:
    config = Config()
    config.bind = [parse_bind(bind, setting)]
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = GRACEFUL_TIMEOUT
    return config


async def serve_http(
    orch: Orchestrator,
    bind: str,
    *,
    body_limit: int = DEFAULT_BODY_LIMIT,
    keep_alive: float = 15.0,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API, the dashboard and /healthz for ``orch`` (running) on ``bind``.

    Reports the addresses it listens on (``http://HOST:PORT``, the real port
    for port 0) through ``task_status``; returns once ``shutdown_trigger``
    returns and open requests got ``GRACEFUL_TIMEOUT`` seconds.

    Raises:
        InvalidInput: ``bind`` is not HOST:PORT.
    """
    app = create_app(orch, body_limit=body_limit, keep_alive=keep_alive)
    kwargs = {} if shutdown_trigger is None else {"shutdown_trigger": shutdown_trigger}
    await serve(app, _config(bind, "http"), task_status=task_status, **kwargs)  # type: ignore[arg-type]


def metrics_app(metrics: Metrics) -> ASGIApp:
    """An ASGI app answering ``GET /metrics`` (and nothing else) with ``metrics``.

    For daemons run without ``--http``: Prometheus's own ASGI exposition,
    without the API behind it.
    """
    exposition = make_asgi_app(metrics.registry)

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            # Nothing to start or stop: acknowledge the startup, then the shutdown.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http" or scope["path"] != "/metrics":
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not found: only /metrics is served here\n"})
            return
        await exposition(scope, receive, send)

    return app


async def serve_metrics(
    orch: Orchestrator,
    bind: str,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` of ``orch`` on ``bind`` (``--metrics``); reports the
    addresses like :func:`serve_http`.

    Raises:
        InvalidInput: naming ``metrics`` when ``bind`` is not HOST:PORT.
    """
    kwargs = {} if shutdown_trigger is None else {"shutdown_trigger": shutdown_trigger}
    await serve(metrics_app(orch.metrics), _config(bind, "metrics"), task_status=task_status, **kwargs)  # type: ignore[arg-type]
