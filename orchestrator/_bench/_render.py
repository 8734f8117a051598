"""Tables of figures, and the progress line on stderr."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ._stats import ratio, summary


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    digits: int = 0


#: The figures of a run, in the order printed (the peers' harness measures the same keys).
METRICS: tuple[Metric, ...] = (
    Metric("enqueue_single_jobs_s", "enqueue 1-by-1 (trio), jobs/s"),
    Metric("enqueue_single_asyncio_jobs_s", "enqueue 1-by-1 (asyncio Client), jobs/s"),
    Metric("enqueue_batch_jobs_s", "enqueue in batches, jobs/s"),
    Metric("process_jobs_s", "processing, jobs/s"),
    Metric("statements_per_job", "statements per job (processing)", 2),
    Metric("process_worker_cpu_ms_per_job", "worker CPU, ms per job", 2),
    Metric("process_db_cpu_ms_per_job", "PostgreSQL CPU, ms per job", 2),
    Metric("lat_start_p50_ms", "enqueue -> start p50, ms", 1),
    Metric("lat_start_p99_ms", "enqueue -> start p99, ms", 1),
    Metric("lat_done_p50_ms", "enqueue -> completed p50, ms", 1),
    Metric("lat_done_p99_ms", "enqueue -> completed p99, ms", 1),
    Metric("lat_enqueue_call_p50_ms", "enqueue call p50, ms", 1),
    Metric("cancel_interrupt_p50_ms", "cancel -> handler interrupted p50, ms", 1),
    Metric("cancel_interrupt_p99_ms", "cancel -> handler interrupted p99, ms", 1),
    Metric("cancel_persisted_p50_ms", "cancel -> cancelled persisted p50, ms", 1),
    Metric("cancel_persisted_p99_ms", "cancel -> cancelled persisted p99, ms", 1),
)


def format_number(value: float | None, digits: int = 0) -> str:
    """A figure with thousands separators; '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def format_summary(values: Sequence[float], digits: int) -> str:
    """One value as is; several as 'median [min-max]'."""
    if not values:
        return "-"
    med, lo, hi = summary(values)
    if len(values) == 1 or math.isnan(med):
        return format_number(med, digits)
    return f"{format_number(med, digits)} [{format_number(lo, digits)}-{format_number(hi, digits)}]"


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _values(runs: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def comparison_table(ours: Sequence[Mapping[str, Any]], peers: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Our figures beside each peer's, with ours / theirs."""
    names = list(peers)
    header = ["figure", "trio-orchestrator", *names, *(f"ours/{n}" for n in names)]
    rows = []
    for m in METRICS:
        mine = _values(ours, m.key)
        if not mine and not any(_values(peers[n], m.key) for n in names):
            continue
        row = [m.label, format_summary(mine, m.digits)]
        theirs = [_values(peers[n], m.key) for n in names]
        row += [format_summary(t, m.digits) for t in theirs]
        for t in theirs:
            r = ratio(summary(mine)[0] if mine else None, summary(t)[0] if t else None)
            row.append("-" if r is None else f"{r:.2f}x")
        rows.append(row)
    return render_table(header, rows)


class Progress:
    """What runs now, redrawn in place on stderr; silent when stderr is not a terminal."""

    def __init__(self, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._t0 = time.monotonic()
        self._section = ""
        self._shown = False

    def section(self, name: str) -> None:
        self._section = name
        self(name)

    def __call__(self, label: str) -> None:
        if not self.enabled:
            return
        text = label if label == self._section or not self._section else f"{self._section}: {label}"
        elapsed = time.monotonic() - self._t0
        self.stream.write(f"\r\x1b[2K[{elapsed:6.1f}s] {text}"[:200])
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
