"""``orchestrator run``: the worker daemon, and how it stops on a signal.

The daemon stops on SIGTERM or SIGINT: it stops claiming, gives running jobs
``--shutdown-grace`` seconds, then the library puts the rest back in the
queue, and it exits 0. A second signal cuts the grace short
(``Orchestrator.hurry_shutdown``); the jobs are still put back.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from .._app import load_app
from .._settings import SETTING_NAMES, apply_settings
from .._database_url import redact_url
from .._orchestrator import Orchestrator
from ._exits import EXIT_OK, EXIT_USAGE, CliError
from ._parser import RUN_SETTING_FLAGS
from ._session import GLOBAL_SETTINGS, naming_database, resolve_database, setting_flags, settings_from

logger = logging.getLogger("orchestrator.cli")


def daemon_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The daemon's settings given as flags (``None``: not given); every
    setting has one (``work`` as ``--work``/``--no-work``, ``tracing`` as
    ``--tracing``/``--no-tracing``)."""
    return setting_flags(args, (*GLOBAL_SETTINGS, *RUN_SETTING_FLAGS, "work", "tracing"))


def cmd_run(args: argparse.Namespace, extras: list[str]) -> int:
    orch = load_app(args.app)
    settings = settings_from(args, SETTING_NAMES, app=orch, app_name=args.app, flags=daemon_flags(args))
    apply_settings(orch, settings)
    http = HttpSettings(settings.http, settings.http_body_limit) if settings.http else None
    metrics = settings.metrics
    if not settings.work:
        if http is None:
            raise CliError("--no-work serves only the HTTP API: give --http HOST:PORT too", EXIT_USAGE)
        return trio.run(partial(serve, orch, args.app, http=http, work=False, metrics=metrics))
    if not orch.registry.kinds:
        raise CliError(f"--app {args.app!r} registers no job kinds: a worker needs at least one @orch.job", EXIT_USAGE)
    if isinstance(orch.queues, Mapping):
        for queue, limit in orch.queues.items():
            if int(limit) > orch.concurrency:
                logger.warning(
                    "queue %s: its limit %d is above this worker's concurrency %d, so at most %d of its jobs run at once",
                    queue,
                    limit,
                    orch.concurrency,
                    orch.concurrency,
                )
    if orch.queues is not None and not set(orch.queues) & set(orch.registry.queues):
        logger.warning(
            "none of the queues %s has a job kind registered by %s (their queues: %s): this worker will claim nothing",
            ",".join(orch.queues),
            args.app,
            ",".join(orch.registry.queues),
        )
    return trio.run(partial(serve, orch, args.app, http=http, metrics=metrics))


@dataclass(frozen=True)
class HttpSettings:
    """What ``--http`` and ``--http-body-limit`` asked for."""

    bind: str
    body_limit: int


async def _start_http(
    nursery: trio.Nursery, orch: Orchestrator, http: HttpSettings | None, stop: trio.Event
) -> list[str]:
    """Start serving HTTP in ``nursery`` until ``stop``; the addresses it listens on."""
    if http is None:
        return []
    from .._http import serve_http

    addresses: list[str] = await nursery.start(
        partial(serve_http, orch, http.bind, body_limit=http.body_limit, shutdown_trigger=stop.wait)
    )
    return addresses


async def _start_metrics(nursery: trio.Nursery, orch: Orchestrator, bind: str | None, stop: trio.Event) -> list[str]:
    """Serve ``/metrics`` alone on ``bind`` in ``nursery`` until ``stop``; the addresses."""
    if bind is None:
        return []
    from .._http.server import serve_metrics

    addresses: list[str] = await nursery.start(partial(serve_metrics, orch, bind, shutdown_trigger=stop.wait))
    return addresses


def _render_limits(limits: Mapping[str, int]) -> str:
    return ",".join(f"{queue}={limit}" for queue, limit in limits.items())


async def serve(
    orch: Orchestrator,
    app: str = "",
    *,
    http: HttpSettings | None = None,
    work: bool = True,
    metrics: str | None = None,
) -> int:
    """Run a worker until SIGINT or SIGTERM; then stop cleanly; return 0.

    With ``http``, the same trio run also serves the HTTP API, the event
    stream, the dashboard and /healthz; it stops (open requests get a short
    grace) before the worker drains. With ``metrics`` (HOST:PORT) it serves
    Prometheus's ``/metrics`` there too. With ``work=False`` nothing is claimed:
    the process only serves HTTP, a producer in front of worker daemons.

    The first signal stops claiming: running jobs get ``orch.shutdown_grace``
    seconds to finish (leaving ``orch.running()`` does that), then the
    library puts the rest back in the queue. A task keeps receiving signals
    throughout; the second one calls ``orch.hurry_shutdown()``, which cuts
    the grace short (the jobs are still put back). A signal before the worker
    has started cancels the start-up.
    """
    stop = trio.Event()
    started = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            startup = trio.CancelScope()

            async def on_signals() -> None:
                received = 0
                async for signum in signals:
                    received += 1
                    name = signal.Signals(signum).name
                    fields = {"node": orch.node_id, "signal": name}
                    if received == 1:
                        stop.set()
                        if not started:
                            logger.info(
                                "received %s: worker %s stops before it started",
                                name,
                                orch.node_id,
                                extra={"event": "worker.stopping", **fields},
                            )
                            startup.cancel()
                            continue
                        running = orch.dispatcher.running if orch.dispatcher is not None else 0
                        logger.info(
                            "received %s: stopping worker %s: no more claims; %d running job(s) get up to %gs to "
                            "finish, then go back to the queue (signal again to stop at once)",
                            name,
                            orch.node_id,
                            running,
                            orch.shutdown_grace,
                            extra={
                                "event": "worker.stopping",
                                "running": running,
                                "shutdown_grace": orch.shutdown_grace,
                                **fields,
                            },
                        )
                    elif received == 2:
                        running = orch.dispatcher.running if orch.dispatcher is not None else 0
                        logger.info(
                            "received %s (second signal): worker %s stops at once; %d running job(s) go back to the "
                            "queue now",
                            name,
                            orch.node_id,
                            running,
                            extra={"event": "worker.hurrying", "running": running, **fields},
                        )
                        orch.hurry_shutdown()
                    else:
                        logger.info(
                            "received %s: worker %s is already stopping, putting its running jobs back in the queue",
                            name,
                            orch.node_id,
                            extra={"event": "worker.hurrying", **fields},
                        )

            nursery.start_soon(on_signals)
            with startup:
                url = await resolve_database(orch)
                with naming_database(url):
                    async with orch.running(work=work), trio.open_nursery() as http_nursery:
                        addresses = await _start_http(http_nursery, orch, http, stop)
                        metrics_addresses = await _start_metrics(http_nursery, orch, metrics, stop)
                        started = True
                        limits = orch.queue_limits() if work else {}
                        logger.info(
                            "worker %s started: app=%s kinds=%s queues=%s concurrency=%d shutdown_grace=%gs "
                            "schema=%s database=%s http=%s metrics=%s",
                            orch.node_id,
                            app or "-",
                            ",".join(orch.registry.kinds) if work else "- (--no-work)",
                            _render_limits(limits),
                            orch.concurrency,
                            orch.shutdown_grace,
                            orch.schema,
                            redact_url(url),
                            ",".join(addresses) or "-",
                            ",".join(metrics_addresses) or "-",
                            extra={
                                "event": "worker.started",
                                "node": orch.node_id,
                                "app": app or None,
                                "kinds": list(orch.registry.kinds),
                                "queues": limits,
                                "concurrency": orch.concurrency,
                                "shutdown_grace": orch.shutdown_grace,
                                "schema": orch.schema,
                                "database": redact_url(url),
                                "http": addresses,
                                "metrics": metrics_addresses,
                                "work": work,
                            },
                        )
                        # Leaving running() drains: no more claims, the grace,
                        # then the release of whatever still runs.
                        await stop.wait()
            nursery.cancel_scope.cancel()
    logger.info("worker %s stopped", orch.node_id, extra={"event": "worker.stopped", "node": orch.node_id})
    return EXIT_OK

