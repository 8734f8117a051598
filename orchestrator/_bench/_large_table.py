"""Claim latency on large tables against an empty one (``orchestrator bench --scale``).

Three fresh databases on the same server: *empty* holds only the queued rows
the timed claims take; *large* holds ``history`` completed rows of another
kind plus ``backlog`` queued ones; *unclaimable* holds the rows the claims
take plus two backlogs in the same queue that no claim may take, both ahead
of them in the queue's order: ``backlog`` jobs of the claimed kind delayed by
a day at a higher priority, and ``backlog`` due jobs of a kind the claimer
does not run. The same ``claim_jobs`` statement (through the
store, as the dispatcher runs it, ``concurrency`` slots) is timed on each in
turn, the order rotating, so that the machine's noise hits all alike; the
jobs each claim took are then completed (untimed), as a worker would, so the
claim index sees the churn of a live queue. Then the other statements that
read the whole table on a schedule (queue depth, a prune batch, the next due
job, the prune dry run) are timed on each the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from .._store import Store
from ._app import build
from ._db import BenchDb, open_bench_db
from ._ours import Progress, Settings, fresh_database
from ._stats import percentile

KIND = "noop"
NODE = "bench-claim"
LEASE_SECONDS = 300.0
#: Untimed claims first: connection warm-up, plan caching.
WARMUP = 5
#: Timings of each of the other statements, per table.
OTHER_REPS = 5
#: A prune batch the size of the daemons' default, of rows older than an hour.
PRUNE_BATCH = 1000
PRUNE_AGE = 3600.0
TABLES = ("empty", "large", "unclaimable")
#: The kind the unclaimable table's second backlog has, which the claims do not ask for.
OTHER_KIND = "elsewhere"


def _rotated(k: int) -> tuple[str, ...]:
    first = k % len(TABLES)
    return TABLES[first:] + TABLES[:first]


def _stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "mean_ms": sum(samples) / len(samples) if samples else float("nan"),
    }


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = await call()
    return 1000 * (time.perf_counter() - t0), result


def _others(store: Store) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The periodic statements that could grow with the history, as the workers run them."""
    return {
        "queue_depth": lambda: store.fetchrow("queue_depth", 0.0),  # interval 0: this call counts
        "prune_batch": lambda: store.fetchrow("prune_jobs", "completed", PRUNE_AGE, PRUNE_BATCH),
        "next_due": lambda: store.next_due(kinds=[KIND], queues=["default"]),
        "count_prunable": lambda: store.fetch("count_prunable", ["completed"], [PRUNE_AGE]),
    }


async def _fill(db: BenchDb, queued: int, *, history: int = 0, unclaimable: int = 0) -> None:
    if history:
        await db.fetch("fill_terminal", history)
    if unclaimable:
        # First, so that the other kind's jobs are due before the claimable
        # ones: ahead of them in the queue's order.
        await db.fetch("fill_queued", unclaimable, OTHER_KIND)
        await db.fetch("fill_delayed", unclaimable, KIND)
    await db.fetch("fill_queued", queued, KIND)
    await db.fetch("analyze_jobs")


async def claim_latency(
    url: str, s: Settings, *, history: int, backlog: int, claims: int, progress: Progress
) -> dict[str, Any]:
    """Time ``claims`` claims of ``s.concurrency`` jobs on each table; the figures (ms)."""
    slots = s.concurrency
    needed = (WARMUP + claims) * slots
    if backlog < needed:  # the command line refuses this first (check_scale_options)
        raise ValueError(f"a backlog of {backlog} is fewer than the {needed} rows {claims} claims (+{WARMUP}) of {slots} take")
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(fresh_database(url, "orchestrator_claim")) for name in TABLES}
        for db_url in urls.values():
            async with build(db_url, schema=s.schema).running(work=False):
                pass  # migrates
        dbs = {name: await stack.enter_async_context(open_bench_db(db_url, s.schema)) for name, db_url in urls.items()}
        progress(f"filling: {history:,} terminal and {backlog:,} queued rows; {2 * backlog:,} unclaimable")
        await _fill(dbs["empty"], needed)
        await _fill(dbs["large"], backlog, history=history)
        await _fill(dbs["unclaimable"], needed, unclaimable=backlog)
        rows = {name: int(await db.fetchval("table_rows")) for name, db in dbs.items()}

        async def claim(db: BenchDb) -> float:
            ms, claimed = await _timed(
                lambda: db.store.claim(kinds=[KIND], slots={"default": slots}, node=NODE, lease_seconds=LEASE_SECONDS)
            )
            if len(claimed) != slots:
                raise RuntimeError(f"a claim of {slots} slots took {len(claimed)} jobs")
            await db.fetch("finish_claimed", [r["job_id"] for r in claimed])
            return ms

        samples: dict[str, list[float]] = {name: [] for name in TABLES}
        for k in range(WARMUP + claims):
            if k % 20 == 0:
                progress(f"claims {k}/{WARMUP + claims}")
            # Rotate which table goes first, so none always follows another's finish.
            for name in _rotated(k):
                ms = await claim(dbs[name])
                if k >= WARMUP:
                    samples[name].append(ms)
        others: dict[str, dict[str, list[float]]] = {name: {} for name in TABLES}
        for k in range(OTHER_REPS):
            progress(f"other statements {k + 1}/{OTHER_REPS}")
            for name in _rotated(k):
                for statement, call in _others(dbs[name].store).items():
                    ms, _ = await _timed(call)
                    others[name].setdefault(statement, []).append(ms)
    out: dict[str, Any] = {
        "history": history,
        "backlog": backlog,
        "claims": claims,
        "slots": slots,
        "rows": rows,
        "claim": {name: _stats(samples[name]) for name in TABLES},
        "others": {
            statement: {name: percentile(others[name][statement], 0.5) for name in TABLES}
            for statement in others["large"]
        },
    }
    out["claim_p50_ratio"] = out["claim"]["large"]["p50_ms"] / out["claim"]["empty"]["p50_ms"]
    out["unclaimable_p50_ratio"] = out["claim"]["unclaimable"]["p50_ms"] / out["claim"]["empty"]["p50_ms"]
    return out
