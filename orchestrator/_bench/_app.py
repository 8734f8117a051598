"""The application the benchmark's daemons run.

    orchestrator run --app orchestrator._bench._app:orch

Kinds: ``noop`` (returns ``{"t": time.time()}`` taken at handler entry, so
the driver reads each handler's start from the row), ``block`` (runs until
cancelled; notes when it was interrupted) and ``sleep`` (sleeps ``payload``
seconds; the memory figure of a daemon holding sleeping jobs).

With ``ORCHESTRATOR_BENCH_OUT`` set, the process writes there at exit one
JSON object: ``first`` (wall time, process CPU seconds and statements run
when the first ``noop`` handler started), ``statements`` (statements run
when ``running()`` was left) and ``interrupted`` (job id -> time a ``block``
handler was cancelled).
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._jobs import JobContext
from .._orchestrator import Orchestrator

OUT_ENV = "ORCHESTRATOR_BENCH_OUT"


class BenchOrchestrator(Orchestrator):
    """An orchestrator that notes its statement count when it stops."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first: dict[str, float] = {}
        self.statements_at_stop = 0
        self.interrupted: dict[str, float] = {}

    @asynccontextmanager
    async def running(self, *, work: bool = True, migrate: bool = True) -> AsyncIterator[Orchestrator]:
        async with super().running(work=work, migrate=migrate) as orch:
            try:
                yield orch
            finally:
                self.statements_at_stop = sum(orch.store.statements.values())

    def statements_now(self) -> int:
        return sum(self.store.statements.values())

    def report(self) -> dict[str, Any]:
        return {"first": self.first, "statements": self.statements_at_stop, "interrupted": self.interrupted}


def build(database_url: str | None = None, **options: Any) -> BenchOrchestrator:
    """An orchestrator with the benchmark's kinds."""
    orch = BenchOrchestrator(database_url, **options)

    @orch.job("noop")
    async def noop(ctx: JobContext, payload: int) -> dict[str, float]:
        now = time.time()
        if not orch.first:
            orch.first.update(t=now, cpu=time.process_time(), statements=orch.statements_now())
        return {"t": now}

    @orch.job("block")
    async def block(ctx: JobContext, payload: int) -> None:
        try:
            await trio.sleep_forever()
        finally:
            orch.interrupted[str(ctx.job.id)] = time.time()

    @orch.job("sleep")
    async def sleep(ctx: JobContext, payload: float) -> None:
        await trio.sleep(payload)

    return orch


def _write_report() -> None:
    path = os.environ.get(OUT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(orch.report(), out)


# No URL: the daemons get --database-url.
orch = build()
if os.environ.get(OUT_ENV):
    atexit.register(_write_report)
