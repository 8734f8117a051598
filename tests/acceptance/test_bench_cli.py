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
