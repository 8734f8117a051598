"""Scale figures (``orchestrator bench --scale``), for docs/performance.md.

Processing at several concurrencies, two daemons against one, idle actors
and ``tell`` throughput in the actor runtime alone, the RSS of a daemon
holding sleeping jobs (``_sleepers``), claim latency on a large table
against an empty one (``_large_table``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from typing import Any

import trio

from ._app import build
from ._db import open_bench_db
from ._large_table import claim_latency
from ._ours import OWNER, Settings, fresh_database, process
from ._render import Progress, format_number, render_table
from ._sleepers import sleeping_daemon

TELLS_TARGET = 300_000
ACTORS_MEMORY_TARGET = 1 << 30
ACTORS_TIME_TARGET = 3.0
CLAIM_RATIO_TARGET = 2.0


def actor_probe(what: str, n: int) -> dict[str, Any]:
    """Run the actor-runtime probe in a clean subprocess; its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator._bench._actors_probe", what, str(n)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


async def _processing(url: str, s: Settings, workers: int) -> dict[str, Any]:
    async with fresh_database(url, "orchestrator_scale") as db_url:
        producer = build(db_url, schema=s.schema)
        async with producer.running(work=False):
            for first in range(0, s.jobs, s.batch):
                await producer.submit_many("noop", range(first, min(s.jobs, first + s.batch)), owner=OWNER)
        async with open_bench_db(db_url, s.schema) as db:
            if s.analyze:
                await db.fetch("analyze_jobs")
            return await process(db_url, db, s, s.jobs, workers=workers)


async def run_scale(url: str, s: Settings, args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sweep = []
    for c in args.scale_concurrencies:
        progress.section(f"scale: processing {s.jobs} jobs at concurrency {c}")
        figures = await _processing(url, dataclasses.replace(s, concurrency=c), 1)
        sweep.append({"concurrency": c, **{k: v for k, v in figures.items() if k != "process_progress_s"}})
    out["processing_by_concurrency"] = sweep
    progress.section(f"scale: two daemons against one (concurrency {s.concurrency} each)")
    one = await _processing(url, s, 1)
    two = await _processing(url, s, 2)
    out["two_daemons"] = {
        "concurrency_each": s.concurrency,
        "one_jobs_s": one["process_jobs_s"],
        "two_jobs_s": two["process_jobs_s"],
        "ratio": two["process_jobs_s"] / one["process_jobs_s"],
        "two_db_cpu_ms_per_job": two.get("process_db_cpu_ms_per_job"),
        "two_worker_cpu_ms_per_job": two.get("process_worker_cpu_ms_per_job"),
    }
    progress.section(f"scale: {args.actors} idle actors")
    out["idle_actors"] = await trio.to_thread.run_sync(actor_probe, "spawn", args.actors)
    progress.section(f"scale: {args.tells} tells")
    out["tell"] = await trio.to_thread.run_sync(actor_probe, "tell", args.tells)
    progress.section(f"scale: a daemon holding {args.sleepers} sleeping jobs")
    out["sleepers"] = await sleeping_daemon(url, s, args.sleepers, progress)
    progress.section(f"scale: claims with {args.history:,} terminal and {args.backlog:,} queued rows")
    out["large_table"] = await claim_latency(
        url, s, history=args.history, backlog=args.backlog, claims=args.claims, progress=progress
    )
    return out


def render_scale(scale: dict[str, Any]) -> str:
    rows = [
        [f"processing at concurrency {r['concurrency']}, jobs/s", format_number(r["process_jobs_s"]),
         f"{format_number(r.get('statements_per_job'), 2)} stmt/job, worker {format_number(r.get('process_worker_cpu_ms_per_job'), 2)} "
         f"ms/job, PG {format_number(r.get('process_db_cpu_ms_per_job'), 2)} ms/job"]
        for r in scale["processing_by_concurrency"]
    ]  # fmt: skip
    two = scale["two_daemons"]
    rows.append([f"two daemons / one (concurrency {two['concurrency_each']} each)", f"{two['ratio']:.2f}x",
                 f"{format_number(two['two_jobs_s'])} vs {format_number(two['one_jobs_s'])} jobs/s"])  # fmt: skip
    actors = scale["idle_actors"]
    rows.append([f"{actors['actors']:,} idle actors: spawn time, s", format_number(actors["spawn_s"], 2),
                 f"target <= {ACTORS_TIME_TARGET:g} s"])  # fmt: skip
    rows.append([f"{actors['actors']:,} idle actors: RSS growth, MiB", format_number(actors["rss_growth_bytes"] / 2**20),
                 f"target <= {ACTORS_MEMORY_TARGET / 2**20:,.0f} MiB ({format_number(actors['rss_bytes_per_actor'])} B/actor)"])  # fmt: skip
    tell = scale["tell"]
    rows.append(["tell, messages/s", format_number(tell["tells_per_s"]), f"target >= {TELLS_TARGET:,}"])
    sleepers = scale["sleepers"]
    rows.append([f"daemon holding {sleepers['jobs']:,} sleeping jobs: RSS, MiB",
                 format_number(sleepers["holding_rss_bytes"] / 2**20),
                 f"idle {format_number(sleepers['idle_rss_bytes'] / 2**20)} MiB, "
                 f"{format_number(sleepers['growth_bytes_per_job'] / 1024, 1)} KiB/job"])  # fmt: skip
    rows.extend(_large_table_rows(scale["large_table"]))
    return "scale figures\n" + render_table(["figure", "value", "note"], rows)


def _large_table_rows(large: dict[str, Any]) -> list[list[str]]:
    empty, full, unclaimable = (large["claim"][name] for name in ("empty", "large", "unclaimable"))
    label = f"{large['history']:,} terminal + {large['backlog']:,} queued rows"
    rows = [
        [f"claim of {large['slots']}, empty table: p50 / p99, ms",
         f"{format_number(empty['p50_ms'], 2)} / {format_number(empty['p99_ms'], 2)}",
         f"{large['claims']} claims, in turn with the other tables'"],
        [f"claim of {large['slots']}, {label}: p50 / p99, ms",
         f"{format_number(full['p50_ms'], 2)} / {format_number(full['p99_ms'], 2)}",
         f"p50 {large['claim_p50_ratio']:.2f}x the empty table's (target <= {CLAIM_RATIO_TARGET:g}x)"],
        [f"claim of {large['slots']} behind {large['backlog']:,} delayed + {large['backlog']:,} other-kind rows: "
         "p50 / p99, ms",
         f"{format_number(unclaimable['p50_ms'], 2)} / {format_number(unclaimable['p99_ms'], 2)}",
         f"p50 {large['unclaimable_p50_ratio']:.2f}x the empty table's"],
    ]  # fmt: skip
    for statement, times in large["others"].items():
        rows.append([f"{statement} on the large table, p50 ms", format_number(times["large"], 1),
                     f"empty table {format_number(times['empty'], 1)} ms, "
                     f"unclaimable backlog {format_number(times['unclaimable'], 1)} ms"])  # fmt: skip
    return rows
