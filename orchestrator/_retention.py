"""Retention: finished jobs older than an age per state are deleted.

Deletes go in bounded batches (one short statement each, oldest first, on
the retention index of migration 0009), so no transaction stays open and
no claim waits. A round holds a session-level advisory lock from its first
batch to its last, on the one connection its batches run on: one process
prunes a schema at a time, and another one that finds the lock taken skips
its round. (A lock per batch statement would let a second daemon take over
between two batches of the first, and the two rounds interleave.) A worker
prunes every ``prune_interval`` seconds; ``orchestrator prune`` does it by
hand.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio
from pydantic import BaseModel, ConfigDict

from ._errors import InvalidInput, OrchestratorError, quote_prefix
from ._validation import check_int, check_seconds

logger = logging.getLogger("orchestrator.retention")

#: The states retention applies to, in the order rounds go through them.
TERMINAL_STATES = ("completed", "failed", "cancelled")
DAY = 86_400.0
#: Defaults: completed jobs a week, failed and cancelled ones 30 days.
DEFAULT_AGES = {"completed": 7 * DAY, "failed": 30 * DAY, "cancelled": 30 * DAY}
#: A retention age, at most: 100 years.
MAX_AGE_SECONDS = 100 * 365 * DAY
#: Rows one statement deletes, at most.
DEFAULT_BATCH = 1000
MAX_BATCH = 100_000
#: Seconds between a worker's prune rounds.
DEFAULT_PRUNE_INTERVAL = 3600.0
MAX_PRUNE_INTERVAL = 30 * DAY

_UNITS = {"w": 7 * DAY, "d": DAY, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION = re.compile(r"^(?:(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|[wdhms]))+$")
_PART = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|[wdhms])")


def parse_duration(text: str, field: str, *, high: float = MAX_AGE_SECONDS, allow_zero: bool = True) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``12h``, ``7d``, ``2w``, or a
    sum such as ``1d12h`` (``ms`` too).

    Raises:
        InvalidInput: naming ``field`` and quoting the text.
    """
    cleaned = text.strip().lower().replace(" ", "") if isinstance(text, str) else ""
    if not isinstance(text, str) or not cleaned:
        raise InvalidInput(field, f"must be a duration such as 90s, 15m, 12h, 7d or 1d12h, got {quote_prefix(text)}")
    try:
        seconds = float(cleaned)
    except ValueError:
        if not _DURATION.match(cleaned):
            raise InvalidInput(
                field, f"must be a duration such as 90s, 15m, 12h, 7d or 1d12h, got {quote_prefix(text)}"
            ) from None
        seconds = sum(float(m["number"]) * _UNITS[m["unit"]] for m in _PART.finditer(cleaned))
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero) or seconds > high:
        low = "0" if allow_zero else "more than 0"
        raise InvalidInput(field, f"must be {low} and at most {high:,.0f} seconds, got {quote_prefix(text)}")
    return seconds


def format_duration(seconds: float) -> str:
    """``604800`` as ``7d``, ``5400`` as ``1h30m``: the largest whole units."""
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    parts = []
    left = seconds
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        count = int(left // size)
        if count and (unit != "w" or left % size == 0):
            parts.append(f"{count}{unit}")
            left -= count * size
    return "".join(parts)


def check_state(state: Any) -> str:
    """A state retention applies to.

    Raises:
        InvalidInput: naming ``state``.
    """
    if state not in TERMINAL_STATES:
        raise InvalidInput("state", f"must be one of {', '.join(TERMINAL_STATES)}, got {quote_prefix(state)}")
    return str(state)


@dataclass(frozen=True)
class Retention:
    """How long finished jobs are kept, per state (seconds; ``None``: forever).

    Raises:
        InvalidInput: an age is negative, not finite or over 100 years, naming
            ``retention_completed`` (and so on).
    """

    completed: float | None = DEFAULT_AGES["completed"]
    failed: float | None = DEFAULT_AGES["failed"]
    cancelled: float | None = DEFAULT_AGES["cancelled"]

    def __post_init__(self) -> None:
        for state in TERMINAL_STATES:
            age = getattr(self, state)
            if age is not None:
                object.__setattr__(self, state, check_seconds(f"retention_{state}", age, high=MAX_AGE_SECONDS))

    def ages(self, states: Iterable[str] | None = None, older_than: float | None = None) -> dict[str, float]:
        """The age per state to prune: ``older_than`` for every state when
        given, else each state's own; states kept forever are left out."""
        chosen = TERMINAL_STATES if states is None else tuple(check_state(s) for s in states)
        if older_than is not None:
            older_than = check_seconds("older_than", older_than, high=MAX_AGE_SECONDS)
            return dict.fromkeys(chosen, older_than)
        return {s: age for s in chosen if (age := getattr(self, s)) is not None}


class PruneResult(BaseModel):
    """What a prune round did (or, dry, would do)."""

    model_config = ConfigDict(frozen=True)

    counts: dict[str, int]
    ages: dict[str, float]
    dry_run: bool = False
    #: Another process held the prune lock: this round deleted nothing.
    skipped: bool = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Statements(Protocol):
    async def fetch(self, name: str, *args: Any) -> list[Mapping[str, Any]]: ...

    async def fetchval(self, name: str, *args: Any) -> Any: ...


class PruneStore(Statements, Protocol):
    def pinned(self) -> AbstractAsyncContextManager[Statements]:
        """One connection for a round's statements, closed if the round
        fails (see :meth:`orchestrator._store.Store.pinned`)."""
        ...


async def prune(
    store: PruneStore, ages: Mapping[str, float], *, batch: int = DEFAULT_BATCH, dry_run: bool = False
) -> PruneResult:
    """Delete (or with ``dry_run`` count) finished jobs older than ``ages[state]`` seconds.

    The round takes the prune lock first and holds it to its end, on the
    connection every batch runs on; each statement deletes at most
    ``batch`` rows. When another process holds the lock, the round deletes
    nothing and says ``skipped=True``. A round that fails or is cancelled
    closes its connection, which releases the lock.

    Raises:
        InvalidInput: a state, an age or the batch size is not allowed.
    """
    checked = {check_state(s): check_seconds(f"retention_{s}", a, high=MAX_AGE_SECONDS) for s, a in ages.items()}
    batch = check_int("batch", batch, 1, MAX_BATCH)
    if dry_run:
        rows = await store.fetch("count_prunable", list(checked), list(checked.values()))
        return PruneResult(counts={r["state"]: int(r["n"]) for r in rows}, ages=checked, dry_run=True)
    counts = dict.fromkeys(checked, 0)
    async with store.pinned() as session:
        if not await session.fetchval("prune_lock"):
            return PruneResult(counts=counts, ages=checked, skipped=True)
        for state, age in checked.items():
            while True:
                deleted = int(await session.fetchval("prune_jobs", state, age, batch))
                counts[state] += deleted
                if deleted < batch:
                    break
                # Let claims and everything else in this process run between batches.
                await trio.lowlevel.checkpoint()
        await session.fetchval("prune_unlock")
    return PruneResult(counts=counts, ages=checked)


@dataclass
class Pruner:
    """A worker's periodic prune: a round at start, then every ``interval`` seconds."""

    store: PruneStore
    retention: Retention
    interval: float
    batch: int = DEFAULT_BATCH
    rounds: int = 0
    last: PruneResult | None = None
    _round_done: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        """Prune until cancelled; a failed round is logged and the next one tried."""
        while True:
            try:
                result = await prune(self.store, self.retention.ages(), batch=self.batch)
            except OrchestratorError as exc:
                logger.warning("pruning finished jobs failed (the next round is in %gs): %s", self.interval, exc)
            else:
                self.last = result
                if result.total or result.skipped:
                    logger.info(
                        "pruned finished jobs: %s%s",
                        ", ".join(f"{s}={n}" for s, n in result.counts.items()),
                        " (skipped: another process is pruning)" if result.skipped else "",
                        extra={"event": "retention.pruned", "counts": result.counts, "skipped": result.skipped},
                    )
            self.rounds += 1
            self._round_done.set()
            self._round_done = trio.Event()
            await trio.sleep(self.interval)

    async def wait_rounds(self, count: int) -> PruneResult | None:
        """Return once ``count`` rounds have ended (with the last one's result)."""
        while self.rounds < count:
            await self._round_done.wait()
        return self.last
