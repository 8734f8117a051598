"""Serving the HTTP app with Hypercorn's trio worker, in the caller's trio run."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from .._errors import InvalidInput, quote_prefix
from .._orchestrator import Orchestrator
from .app import create_app
from .limits import DEFAULT_BODY_LIMIT

logger = logging.getLogger("orchestrator.http")

#: Seconds open requests (event streams among them) get when the server stops.
GRACEFUL_TIMEOUT = 2.0


def parse_bind(text: str) -> str:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) as Hypercorn's bind string.

    Raises:
        InvalidInput: naming ``http`` when it is not HOST:PORT.
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidInput("http", f"must be HOST:PORT (port 0 to 65535), got {quote_prefix(text)}")
    return f"{host}:{int(port)}"


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
    config = Config()
    config.bind = [parse_bind(bind)]
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = GRACEFUL_TIMEOUT
    app = create_app(orch, body_limit=body_limit, keep_alive=keep_alive)
    kwargs = {} if shutdown_trigger is None else {"shutdown_trigger": shutdown_trigger}
    await serve(app, config, task_status=task_status, **kwargs)  # type: ignore[arg-type]
