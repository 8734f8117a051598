"""trio-orchestrator's own figures: the peers' phases, plus cancel latency.

One run = a fresh database next to the server's (dropped at the end):

1. enqueue N jobs one by one from trio (``Orchestrator.submit``);
2. the same from asyncio (``orchestrator.client.Client.submit``, on a plain
   asyncio loop in a process of its own, as a web service runs it);
3. enqueue N in batches (``submit_many``);
4. ANALYZE, then a worker (by default the real daemon, ``orchestrator run``
   in a subprocess) processes the N queued no-op jobs: jobs/s = N / (commit
   time of the last completion - the worker's node registration);
5. an idle worker, LISTENing; single jobs one at a time: enqueue -> handler
   start and enqueue -> completed (commit time of the completing row);
6. cross-node cancel: a job blocks on the worker; a producer (another node)
   cancels it: cancel call -> handler interrupted, -> ``cancelled`` persisted.

Per processing run: statements per job (the workers' ``Store.statements``
between the first handler and the stop), worker CPU per job and PostgreSQL
CPU per job (/proc of the worker and of the database's backends).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from .._models import Principal
from ._app import BenchOrchestrator, build
from ._daemon import Daemon, open_daemon
from ._db import BenchDb, open_bench_db, with_database
from ._proc import cpu_of, cpu_seconds, cpu_used
from ._stats import percentile, progress_deciles

OWNER = Principal(user_id="bench", org_id="bench")
PROCESS_TIMEOUT = 1800.0

Progress = Callable[[str], None]
_databases = itertools.count()


@dataclass(frozen=True)
class Settings:
    """What one run of ours does (the command line's options)."""

    jobs: int = 5000
    batch: int = 500
    concurrency: int = 10
    lat_reps: int = 50
    lat_warmup: int = 5
    lat_gap: float = 0.2
    cancel_reps: int = 20
    worker: str = "daemon"  # or "inprocess"
    schema: str = "orchestrator"
    analyze: bool = True


def _no_progress(label: str) -> None:
    pass


@asynccontextmanager
async def fresh_database(server_url: str, prefix: str = "orchestrator_bench") -> AsyncIterator[str]:
    """A new database next to ``server_url``'s, dropped afterwards; yields its URL."""
    name = f"{prefix}_{os.getpid()}_{next(_databases)}"
    async with open_bench_db(server_url) as admin:
        await admin.execute_built("drop_database_statement", name)
        await admin.execute_built("create_database_statement", name)
    try:
        yield with_database(server_url, name)
    finally:
        with trio.CancelScope(shield=True):
            async with open_bench_db(server_url) as admin:
                await admin.execute_built("drop_database_statement", name)


# -- workers -------------------------------------------------------------------


@dataclass
class Workers:
    """One or more running workers (daemons or in this process)."""

    pids: list[int]
    started_at: float
    daemons: list[Daemon] = field(default_factory=list)
    local: BenchOrchestrator | None = None
    reports: list[dict[str, Any]] = field(default_factory=list)

    def check_alive(self) -> None:
        for daemon in self.daemons:
            daemon.check_alive()


@asynccontextmanager
async def open_workers(url: str, db: BenchDb, s: Settings, count: int = 1) -> AsyncIterator[Workers]:
    """``count`` workers at concurrency ``s.concurrency`` each; reports filled in after the block."""
    if s.worker == "inprocess":
        if count != 1:
            raise ValueError("several workers need --worker daemon")
        orch = build(url, schema=s.schema, concurrency=s.concurrency)
        async with orch.running(migrate=False):
            workers = Workers([os.getpid()], time.time(), local=orch)
            yield workers
        workers.reports = [orch.report()]
        return
    async with AsyncExitStack() as stack:
        daemons = [
            await stack.enter_async_context(open_daemon(url, db, schema=s.schema, concurrency=s.concurrency))
            for _ in range(count)
        ]
        workers = Workers([d.pid for d in daemons], min(d.started_at for d in daemons), daemons=daemons)
        try:
            yield workers
        finally:
            await stack.aclose()
            workers.reports = [d.report for d in daemons]


async def process(url: str, db: BenchDb, s: Settings, n: int, *, workers: int = 1) -> dict[str, Any]:
    """Let ``workers`` workers drain the ``n`` queued no-op jobs; the processing figures."""
    backends_before = cpu_of(int(r[0]) for r in await db.fetch("backend_pids"))
    db_pid = int(await db.fetchval("own_pid"))
    deadline = trio.current_time() + PROCESS_TIMEOUT
    async with open_workers(url, db, s, workers) as running, open_bench_db(url, s.schema) as inner:
        # A store opened inside another's trio-asyncio loop must be used there.
        while (done := int(await inner.fetchval("count_completed"))) < n:
            running.check_alive()
            if trio.current_time() > deadline:
                raise RuntimeError(f"processing timed out ({done}/{n} done)")
            await trio.sleep(0.05)
        last_done = float(await inner.fetchval("last_completed"))
        backends_after = cpu_of(int(r[0]) for r in await inner.fetch("backend_pids") if int(r[0]) != db_pid)
        worker_cpu_end = cpu_of(running.pids)
    firsts = [r.get("first") or {} for r in running.reports]
    out: dict[str, Any] = {}
    wall = last_done - running.started_at
    out["process_jobs_s"] = n / wall
    out["process_wall_s"] = wall
    if worker_cpu_end is not None and all("cpu" in f for f in firsts):
        used = sum(worker_cpu_end.values()) - sum(f["cpu"] for f in firsts)
        out["process_worker_cpu_ms_per_job"] = 1000 * used / n
    db_cpu = cpu_used(backends_before, backends_after)
    if db_cpu is not None:
        out["process_db_cpu_ms_per_job"] = 1000 * db_cpu / n
    if all("statements" in f for f in firsts):
        statements = sum(int(r.get("statements", 0)) for r in running.reports) - sum(f["statements"] for f in firsts)
        out["statements_per_job"] = statements / n
    starts = [float(r[0]) for r in await db.fetch("handler_starts")]
    out["process_progress_s"] = progress_deciles(starts, running.started_at)
    return out


# -- phases --------------------------------------------------------------------


async def _enqueue_from_asyncio(url: str, schema: str, n: int) -> float:
    """jobs/s of ``n`` ``Client.submit`` calls on a plain asyncio loop, in a
    process of its own (see ``_asyncio_enqueue``)."""
    done = await trio.run_process(
        [sys.executable, "-m", "orchestrator._bench._asyncio_enqueue", url, schema, str(n)],
        capture_stdout=True, capture_stderr=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the asyncio enqueue failed: {done.stderr.decode(errors='replace')[-2000:]}")
    figures = json.loads(done.stdout)
    if figures["trio_asyncio_loaded"]:
        raise RuntimeError("the asyncio enqueue loaded trio_asyncio: it would measure a patched asyncio")
    jobs_s: float = figures["jobs_s"]
    return jobs_s


async def enqueue_phases(
    orch: BenchOrchestrator, url: str, s: Settings, progress: Progress
) -> tuple[dict[str, Any], list[uuid.UUID]]:
    out: dict[str, Any] = {}
    n = s.jobs
    progress(f"enqueue {n} one by one (trio)")
    t0 = time.perf_counter()
    for i in range(n):
        await orch.submit("noop", i, owner=OWNER)
    out["enqueue_single_jobs_s"] = n / (time.perf_counter() - t0)
    async with open_bench_db(url, s.schema) as db:
        await db.fetch("truncate_jobs")
    progress(f"enqueue {n} one by one (asyncio Client)")
    out["enqueue_single_asyncio_jobs_s"] = await _enqueue_from_asyncio(url, s.schema, n)
    async with open_bench_db(url, s.schema) as db:
        await db.fetch("truncate_jobs")
    progress(f"enqueue {n} in batches of {s.batch}")
    ids: list[uuid.UUID] = []
    t0 = time.perf_counter()
    for first in range(0, n, s.batch):
        jobs = await orch.submit_many("noop", range(first, min(n, first + s.batch)), owner=OWNER)
        ids.extend(j.id for j in jobs)
    out["enqueue_batch_jobs_s"] = n / (time.perf_counter() - t0)
    return out, ids


async def wait_listening(db: BenchDb, check_alive: Callable[[], None], timeout: float = 10.0) -> bool:
    """Whether a worker LISTENs on ``db``'s database within ``timeout`` (``check_alive`` raises if it died)."""
    with trio.move_on_after(timeout):
        while int(await db.fetchval("listening_backends")) < 1:
            check_alive()
            await trio.sleep(0.05)
        return True
    return False


async def _wait_active(orch: BenchOrchestrator, job_id: uuid.UUID, running: Workers) -> None:
    with trio.fail_after(30):
        while (await orch.get(job_id, by=OWNER)).state.value != "active":
            running.check_alive()
            await trio.sleep(0.005)


async def latency_phases(url: str, db: BenchDb, s: Settings, progress: Progress) -> dict[str, Any]:
    """Single-job and cancel latency against an idle worker."""
    await db.fetch("truncate_jobs")
    to_start: list[float] = []
    to_done: list[float] = []
    calls: list[float] = []
    cancels: list[tuple[uuid.UUID, float, float, float]] = []
    async with open_workers(url, db, s) as running:
        listening = await wait_listening(db, running.check_alive) if s.worker == "daemon" else True
        await trio.sleep(0.5)
        producer = build(url, schema=s.schema)
        async with producer.running(work=False, migrate=False):
            # Calls from this task must stay in the producer's trio-asyncio loop.
            db = BenchDb(producer.store)
            total = s.lat_warmup + s.lat_reps
            for k in range(total):
                progress(f"latency {k + 1}/{total}")
                t0 = time.time()
                job = await producer.submit("noop", k, owner=OWNER)
                calls.append(time.time() - t0)
                await producer.wait(job.id, by=OWNER)
                started, done = (await db.fetch("job_times", job.id))[0]
                if k >= s.lat_warmup:
                    to_start.append(1000 * (float(started) - t0))
                    to_done.append(1000 * (float(done) - t0))
                await trio.sleep(random.uniform(s.lat_gap, 2 * s.lat_gap))
            for k in range(s.cancel_reps):
                progress(f"cancel latency {k + 1}/{s.cancel_reps}")
                job = await producer.submit("block", k, owner=OWNER)
                await _wait_active(producer, job.id, running)
                # The handler starts right after `active` is durable; leave it running a moment.
                await trio.sleep(random.uniform(0.05, 0.1))
                t0 = time.time()
                outcome = await producer.cancel(job.id, by=OWNER)
                returned = time.time()
                if not outcome.cancelled:
                    raise RuntimeError(f"cancel of a blocking job was refused: {outcome.reason}")
                _, done = (await db.fetch("job_times", job.id))[0]
                cancels.append((job.id, t0, float(done), returned))
                await trio.sleep(random.uniform(s.lat_gap, 2 * s.lat_gap))
    interrupted: dict[str, float] = {}
    for report in running.reports:
        interrupted.update(report.get("interrupted") or {})
    to_interrupt = [1000 * (interrupted[str(j)] - t0) for j, t0, _, _ in cancels if str(j) in interrupted]
    to_cancelled = [1000 * (done - t0) for _, t0, done, _ in cancels]
    cancel_calls = [1000 * (ret - t0) for _, t0, _, ret in cancels]
    enq_calls = [1000 * c for c in calls[s.lat_warmup :]]
    return {
        "listen_seen": listening,
        "lat_start_p50_ms": percentile(to_start, 0.5),
        "lat_start_p99_ms": percentile(to_start, 0.99),
        "lat_done_p50_ms": percentile(to_done, 0.5),
        "lat_done_p99_ms": percentile(to_done, 0.99),
        "lat_enqueue_call_p50_ms": percentile(enq_calls, 0.5),
        "lat_samples": len(to_start),
        "cancel_interrupt_p50_ms": percentile(to_interrupt, 0.5),
        "cancel_interrupt_p99_ms": percentile(to_interrupt, 0.99),
        "cancel_persisted_p50_ms": percentile(to_cancelled, 0.5),
        "cancel_persisted_p99_ms": percentile(to_cancelled, 0.99),
        "cancel_call_p50_ms": percentile(cancel_calls, 0.5),
        "cancel_samples": len(to_cancelled),
        "cancel_interrupt_seen": len(to_interrupt),
    }


async def run_ours(server_url: str, s: Settings, progress: Progress = _no_progress) -> dict[str, Any]:
    """One full run of ours on a fresh database; the figures."""
    out: dict[str, Any] = {
        "peer": "trio_orchestrator",
        "n": s.jobs,
        "batch": s.batch,
        "concurrency": s.concurrency,
        "worker": s.worker,
    }
    async with fresh_database(server_url) as url, open_bench_db(url, s.schema) as db:
        producer = build(url, schema=s.schema)
        async with producer.running(work=False):  # migrates the fresh database
            figures, _ = await enqueue_phases(producer, url, s, progress)
            out.update(figures)
        if s.analyze:
            await db.fetch("analyze_jobs")
        progress(f"process {s.jobs} jobs at concurrency {s.concurrency} ({s.worker})")
        out.update(await process(url, db, s, s.jobs))
        out.update(await latency_phases(url, db, s, progress))
    return out


def nan_to_none(figures: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a figure nothing was measured for becomes null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}
