"""The peers (Procrastinate, PgQueuer) through their harness, and the SQL floor, as subprocesses."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import trio

from ._app import build
from ._ours import Settings, fresh_database


class PeersUnavailable(RuntimeError):
    """The harness or the bench extra is missing; the message says which."""


def check_peers(peers_dir: Path) -> None:
    """Raise PeersUnavailable unless the harness is there and its packages import."""
    if not (peers_dir / "peerbench_common.py").is_file():
        raise PeersUnavailable(f"no peers' harness in {peers_dir} (give --peers-dir)")
    import importlib.util

    missing = [m for m in ("psycopg", "procrastinate", "pgqueuer", "uvloop") if importlib.util.find_spec(m) is None]
    if missing:
        raise PeersUnavailable(f"missing {', '.join(missing)}: pip install -e '.[bench]'")


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            figures: dict[str, Any] = json.loads(line)
            return figures
    raise RuntimeError("no JSON line in the output")


async def run_peer(name: str, peers_dir: Path, server_url: str, s: Settings) -> dict[str, Any]:
    """One run of ``bench_<name>.py`` (its own fresh database) on the same server; its figures."""
    env = {
        **os.environ,
        "DATABASE_URL": server_url, "N": str(s.jobs), "BATCH": str(s.batch), "CONCURRENCY": str(s.concurrency),
        "LAT_REPS": str(s.lat_reps), "LAT_WARMUP": str(s.lat_warmup), "LAT_GAP": str(s.lat_gap),
        "ANALYZE": "1" if s.analyze else "0",
    }  # fmt: skip
    env.pop("RESULTS", None)
    done = await trio.run_process(
        [sys.executable, str(peers_dir / f"bench_{name}.py")], env=env, capture_stdout=True, capture_stderr=True, check=False
    )
    if done.returncode != 0:
        tail = " ".join(done.stderr.decode(errors="replace").strip()[-300:].split())
        raise RuntimeError(f"peer {name} exited with {done.returncode}: {tail}")
    return _last_json(done.stdout.decode())


async def run_floor(script: Path, server_url: str, s: Settings) -> list[dict[str, Any]]:
    """The SQL floor on a fresh, migrated database of the same server; one dict per mode."""
    if not script.is_file():
        raise PeersUnavailable(f"no SQL floor script at {script} (give --floor-script)")
    async with fresh_database(server_url, "orchestrator_floor") as url:
        async with build(url, schema=s.schema).running(work=False):
            pass  # migrates
        env = {**os.environ, "DSN": url, "N": str(s.jobs), "C": str(s.concurrency)}
        done = await trio.run_process([sys.executable, str(script)], env=env, capture_stdout=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the SQL floor exited with {done.returncode}")
        return [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
