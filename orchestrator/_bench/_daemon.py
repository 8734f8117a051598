"""The real daemon as the benchmark's worker: ``orchestrator run`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ._app import OUT_ENV
from ._db import BenchDb

APP = "orchestrator._bench._app:orch"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class DaemonFailed(RuntimeError):
    """The daemon exited (or never started); the message ends with its stderr."""


@dataclass
class Daemon:
    """A running ``orchestrator run`` process."""

    process: trio.Process
    #: When it registered as a node (epoch seconds, server clock): just before its first claim.
    started_at: float
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            raise DaemonFailed(f"the worker daemon exited early with {self.process.returncode}")


def daemon_command(url: str, schema: str, concurrency: int) -> list[str]:
    # The daemon's own default level (INFO: a summary line per interval, the
    # per-job records only at DEBUG), as users run it; ORCHESTRATOR_LOG_LEVEL
    # in the environment overrides it, e.g. WARNING to see what logging costs.
    return [
        sys.executable, "-m", "orchestrator", "--database-url", url, "--schema", schema,
        "run", "--app", APP, "--concurrency", str(concurrency),
    ]  # fmt: skip


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return " ".join(text[-limit:].split())


@asynccontextmanager
async def open_daemon(url: str, db: BenchDb, *, schema: str, concurrency: int) -> AsyncIterator[Daemon]:
    """Start a daemon on ``url``; yield once it registered as a node; SIGTERM it at the end.

    ``db`` is a connection to the same database, used to see it register.
    After the block, ``daemon.report`` holds what the bench app wrote at exit.

    Raises:
        DaemonFailed: it exited before registering, or did not register in time.
    """
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as tmp:
        report_path, log_path = Path(tmp) / "report.json", Path(tmp) / "daemon.log"
        with open(log_path, "wb") as log:
            process = await trio.lowlevel.open_process(
                daemon_command(url, schema, concurrency),
                env={**os.environ, OUT_ENV: str(report_path)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        daemon: Daemon | None = None
        try:
            with trio.move_on_after(START_TIMEOUT):
                while daemon is None:
                    if process.returncode is not None:
                        raise DaemonFailed(f"the worker daemon exited with {process.returncode}: {_tail(log_path)}")
                    started = await db.fetchval("node_started", process.pid)
                    if started is not None:
                        daemon = Daemon(process, float(started))
                    else:
                        await trio.sleep(0.01)
            if daemon is None:
                raise DaemonFailed(f"the worker daemon did not start within {START_TIMEOUT}s: {_tail(log_path)}")
            yield daemon
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process)
            if daemon is not None and report_path.exists():
                daemon.report = json.loads(report_path.read_text(encoding="utf-8"))


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_TIMEOUT):
        await process.wait()
        return
    process.kill()  # our own child, which ignored SIGTERM for a minute
    await process.wait()
