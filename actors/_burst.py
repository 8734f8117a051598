"""Fewer cyclic garbage collections while a burst of spawned actors starts.

Every actor is some 15 to 30 objects the cyclic garbage collector tracks (its
task, the task's context, its coroutines, the mailbox, the ref, the instance
and, with a nursery, the nursery's cancel scope and sets). Spawning 100,000
of them adds millions of tracked objects, and CPython's collector runs a
full collection each time the long-lived objects have grown by a quarter:
every one of those traverses the whole, growing heap, and together they took
more than half of the time of such a burst (docs/performance.md), to find
nothing, since live actors are not garbage.

So while at least :data:`BURST` actors spawned by one supervisor have not
yet started to run, the collector's generation 0 threshold is raised to
:data:`BURST_GEN0`; it goes back to what it was as soon as the last of them
has started. Collections still happen during the burst, only less often,
and a program that has disabled the collector, or uses a higher threshold
already, is left alone (as is a second supervisor's burst during the first:
the threshold is raised already). An actor counts as started when its task
first runs; a task that is cancelled before that still runs (trio delivers
the cancellation inside it), so the count always returns to zero. Each
supervisor counts its own children: a supervisor lives in one trio run, so
the count needs no lock. A threshold the program sets during a burst is
overwritten when the burst ends.
"""

from __future__ import annotations

import gc
from typing import Final, final

#: Actors spawned and not yet started from which the threshold is raised: the
#: bursts of a dispatcher claiming a few hundred jobs at a time never reach it.
BURST: Final = 1000
#: Generation 0 threshold during a burst (CPython's default is 700).
BURST_GEN0: Final = 100_000


@final
class SpawnBurst:
    """Counts spawned actors that have not started; raises the threshold meanwhile."""

    __slots__ = ("pending", "_saved")

    def __init__(self) -> None:
        self.pending = 0
        self._saved: tuple[int, int, int] | None = None

    @property
    def raised(self) -> bool:
        """Whether the threshold is raised now."""
        return self._saved is not None

    def spawned(self) -> None:
        """An actor was spawned; its task has not run yet."""
        self.pending += 1
        if self.pending >= BURST and self._saved is None and gc.isenabled():
            saved = gc.get_threshold()
            if saved[0] < BURST_GEN0:
                self._saved = (saved[0], saved[1], saved[2])
                gc.set_threshold(BURST_GEN0, saved[1], saved[2])

    def started(self) -> None:
        """A spawned actor's task has started to run."""
        self.pending -= 1
        if self.pending == 0 and self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
