"""The worker's summary: one INFO line per interval instead of lines per job.

Per-job lifecycle records are DEBUG (and cost nothing unless DEBUG is on);
what an operator reads at the default level is this line: jobs claimed,
completed, failed, retried, cancelled, released and rescued in the last
interval, and the median run time of the attempts that ended in it.

It is also where the node's Prometheus figures (``_metrics``) are fed from:
every lifecycle event the dispatcher and the job actors report passes
through here once, so the metrics hooks are not scattered through them.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from ._metrics import Metrics

if TYPE_CHECKING:
    from ._claimed import ClaimedJob
    from ._store import Row

logger = logging.getLogger("orchestrator.summary")

#: Seconds between summary lines (a quiet interval prints nothing).
SUMMARY_INTERVAL = 10.0

_COUNTS = ("claimed", "completed", "failed", "retried", "cancelled", "released", "rescued")


class Summary:
    """Counts of one node's lifecycle events since the last line."""

    __slots__ = (
        "claimed", "completed", "failed", "retried", "cancelled", "released", "rescued", "run_times", "metrics",
    )  # fmt: skip

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.run_times: list[float] = []
        self.metrics = Metrics() if metrics is None else metrics
        self.reset()

    def reset(self) -> None:
        self.claimed = self.completed = self.failed = self.retried = 0
        self.cancelled = self.released = self.rescued = 0
        self.run_times = []

    def claimed_jobs(self, rows: int, started: Sequence[ClaimedJob]) -> None:
        """A claim statement returned ``rows`` rows, and ``started`` of them
        got an actor (the others could not run and were failed)."""
        self.claimed += rows
        self.metrics.claimed(started)

    def ended(self, event: str, run_time: float, kind: str, queue: str) -> None:
        """An attempt ended: ``event`` is ``completed``, ``failed``,
        ``retried``, ``cancelled`` or ``released``; ``run_time`` in seconds."""
        setattr(self, event, getattr(self, event) + 1)
        self.run_times.append(run_time)
        self.metrics.ended(event, kind, queue, run_time)

    def moved(self, rows: Sequence[Row], state: str) -> None:
        """Jobs this node moved to ``state`` with a statement of its own, not
        through a job actor (each row has the job's kind and queue)."""
        self.metrics.moved(rows, state)

    def rescued_jobs(self, rows: Sequence[Row]) -> None:
        """Jobs of dead nodes were moved on (each row has its ``outcome``)."""
        self.rescued += len(rows)
        self.metrics.rescued(rows)

    def lease_lost(self) -> None:
        self.metrics.lease_losses.inc()

    def fields(self) -> dict[str, float | int | None]:
        """The counts, and ``p50_run_ms`` (``None`` when no attempt ended)."""
        fields: dict[str, float | int | None] = {name: getattr(self, name) for name in _COUNTS}
        fields["p50_run_ms"] = round(statistics.median(self.run_times) * 1000, 3) if self.run_times else None
        return fields

    def log(self, interval: float) -> None:
        """Write the line (if anything happened) and start counting afresh."""
        fields = self.fields()
        if any(fields[name] for name in _COUNTS):
            p50 = fields["p50_run_ms"]
            logger.info(
                "last %gs: %d claimed, %d completed, %d failed, %d retried, %d cancelled, %d released,"
                " %d rescued; p50 run time %s",
                interval,
                *(fields[name] for name in _COUNTS),
                "-" if p50 is None else f"{p50} ms",
                extra={"event": "worker.summary", "interval_s": interval, **fields},
            )
        self.reset()

    async def run(self, interval: float = SUMMARY_INTERVAL) -> None:
        """Log a line every ``interval`` seconds until cancelled; the last
        partial interval is logged too."""
        began = trio.current_time()
        try:
            while True:
                await trio.sleep(interval)
                self.log(interval)
                began = trio.current_time()
        finally:
            self.log(round(trio.current_time() - began, 3))
