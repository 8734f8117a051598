"""CPU and memory of processes on this machine, from /proc (Linux).

Used for the worker daemon and for the PostgreSQL backends serving the
benchmark's database (only meaningful when the server runs here; a read that
fails gives None and the figure is left out).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_of(pids: Iterable[int]) -> dict[int, float] | None:
    """CPU seconds per pid; None as soon as one cannot be read."""
    out: dict[int, float] = {}
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is None:
            return None
        out[pid] = seconds
    return out


def cpu_used(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds used between two readings (processes new since ``before`` count from 0)."""
    if before is None or after is None:
        return None
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size of ``pid`` (default: this process), in bytes."""
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None
