"""`orchestrator bench` end to end with a tiny N on the test server: the JSON has every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from orchestrator._bench._render import METRICS

ROOT = Path(__file__).resolve().parents[2]


def test_bench_json_has_every_figure(pg_server: str) -> None:
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": pg_server}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "bench", "-n", "40", "--batch", "15", "--lat-reps", "3",
         "--lat-warmup", "1", "--lat-gap", "0.01", "--cancel-reps", "2", "--json", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    [run] = out["runs"]
    missing = [m.key for m in METRICS if not isinstance(run.get(m.key), (int, float))]
    assert missing == []
    assert run["lat_samples"] == 3 and run["cancel_samples"] == 2 and run["cancel_interrupt_seen"] == 2
    assert run["process_jobs_s"] > 0 and run["statements_per_job"] > 0


def test_bench_scale_only_json_has_the_scale_figures(pg_server: str) -> None:
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": pg_server}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "bench", "--scale-only", "-n", "20", "--scale-concurrencies", "2",
         "--actors", "300", "--tells", "500", "--sleepers", "12", "--batch", "5", "--history", "50",
         "--backlog", "80", "--claims", "3", "--concurrency", "4", "--json", "--no-progress"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scale = json.loads(done.stdout)["scale"]
    assert "runs" not in json.loads(done.stdout)
    sleepers = scale["sleepers"]
    assert sleepers["jobs"] == 12 and sleepers["holding_rss_bytes"] > 0 and sleepers["idle_rss_bytes"] > 0
    large = scale["large_table"]
    # The large table: its history plus the backlog; the empty one: what the
    # claims (and warm-up) take; the unclaimable one: that plus two backlogs.
    assert large["rows"] == {"large": 130, "empty": (3 + 5) * 4, "unclaimable": (3 + 5) * 4 + 2 * 80}
    for table in ("empty", "large", "unclaimable"):
        assert large["claim"][table]["p50_ms"] > 0
        assert set(large["others"]) == {"queue_depth", "prune_batch", "next_due", "count_prunable"}
    assert large["claim_p50_ratio"] > 0 and large["unclaimable_p50_ratio"] > 0
    assert scale["idle_actors"]["alive"] == 300 and scale["tell"]["messages"] == 500

