"""``orchestrator bench``: throughput and latency figures, printed, never asserted.

The phases follow the peer benchmarks in ``shared/bench/peers`` so the
figures can be read side by side: enqueue one at a time, enqueue in batches,
process N no-op jobs at a concurrency, and single-job latency on an idle
worker. Each run uses a fresh database next to the one named (dropped at
the end), or the embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import time
import urllib.parse
import uuid
from typing import Any

import trio

from ._jobs import JobContext
from ._models import Principal
from ._orchestrator import Orchestrator

OWNER = Principal(user_id="bench", org_id="bench")


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    if not xs:
        return math.nan
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class _Started(dict[uuid.UUID, float]):
    """Handler start times; ``all_started`` is set when ``expected`` ran."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = math.inf
        self.all_started = trio.Event()

    def record(self, job_id: uuid.UUID) -> None:
        self[job_id] = time.time()
        if len(self) >= self.expected:
            self.all_started.set()


def _bench_orchestrator(url: str, concurrency: int, started: _Started) -> Orchestrator:
    orch = Orchestrator(url, concurrency=concurrency, poll_interval=1.0)

    @orch.job("noop")
    async def noop(ctx: JobContext, payload: int) -> None:
        started.record(ctx.job.id)

    return orch


async def _admin(url: str, statement: str) -> None:
    from ._store import open_store

    async with open_store(url, size=1) as store:
        async with store.connection() as conn:
            await store._aio(conn.execute, statement)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    server_url = args.database_url or os.environ.get("ORCHESTRATOR_DATABASE_URL")
    if not server_url:
        server_url = await Orchestrator().resolve_database_url()
    name = f"orchestrator_bench_{os.getpid()}"
    await _admin(server_url, f"CREATE DATABASE {name}")
    url = _with_database(server_url, name)
    n, concurrency = args.jobs, args.concurrency
    started = _Started()
    out: dict[str, Any] = {"n": n, "batch": args.batch, "concurrency": concurrency}
    try:
        orch = _bench_orchestrator(url, concurrency, started)
        async with orch.running(work=False):
            t0 = time.perf_counter()
            for i in range(n):
                await orch.submit("noop", i, owner=OWNER)
            out["enqueue_single_jobs_s"] = n / (time.perf_counter() - t0)
            await _admin(url, "TRUNCATE orchestrator.job_status")
            t0 = time.perf_counter()
            ids: list[uuid.UUID] = []
            for first in range(0, n, args.batch):
                jobs = await orch.submit_many("noop", range(first, min(n, first + args.batch)), owner=OWNER)
                ids.extend(j.id for j in jobs)
            out["enqueue_batch_jobs_s"] = n / (time.perf_counter() - t0)
            await _admin(url, "ANALYZE orchestrator.job_status")

        # Processing: a worker drains the N queued jobs. Waiting for them
        # from the same process would add its own reads; wait for the last
        # handler to start instead, then read the rows once.
        started.clear()
        started.expected = n
        orch = _bench_orchestrator(url, concurrency, started)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        async with orch.running():
            await started.all_started.wait()
            finals = await orch.wait_many(ids, by=OWNER)
            wall = time.perf_counter() - t0
            writer = orch.writer
            statements, rows = (writer.statements, writer.rows) if writer else (0, 0)
            by_name = dict(orch.store.statements)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        assert all(f.state.value == "completed" for f in finals)
        out["process_jobs_s"] = n / wall
        out["process_wall_s"] = wall
        out["process_cpu_ms_per_job"] = 1000 * (
            (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        ) / n
        out["statements_per_job"] = sum(by_name.values()) / n
        out["writer_statements"] = statements
        out["writer_rows_per_statement"] = rows / statements if statements else math.nan

        # Latency: single jobs on an idle worker.
        await _admin(url, "TRUNCATE orchestrator.job_status")
        started.expected = math.inf
        orch = _bench_orchestrator(url, concurrency, started)
        to_start: list[float] = []
        to_done: list[float] = []
        async with orch.running():
            for rep in range(args.lat_warmup + args.lat_reps):
                t_submit = time.time()
                job = await orch.submit("noop", rep, owner=OWNER)
                final = await orch.wait(job.id, by=OWNER)
                if rep >= args.lat_warmup:
                    to_start.append(1000 * (started[job.id] - t_submit))
                    to_done.append(1000 * (final.completed_at.timestamp() - t_submit))  # type: ignore[union-attr]
                await trio.sleep(random.uniform(args.lat_gap, 2 * args.lat_gap))
        out["lat_start_p50_ms"] = statistics.median(to_start)
        out["lat_start_p99_ms"] = _percentile(to_start, 0.99)
        out["lat_done_p50_ms"] = statistics.median(to_done)
        out["lat_done_p99_ms"] = _percentile(to_done, 0.99)
    finally:
        with trio.CancelScope(shield=True):
            await _admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orchestrator bench", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None, help="server to benchmark on (default: embedded)")
    parser.add_argument("--jobs", "-n", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--lat-reps", type=int, default=50)
    parser.add_argument("--lat-warmup", type=int, default=5)
    parser.add_argument("--lat-gap", type=float, default=0.2)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    out = trio.run(_run, args)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:32} {value:12.2f}" if isinstance(value, float) else f"{key:32} {value:>12}")
    sys.stdout.flush()
    return 0
