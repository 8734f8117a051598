"""Who waits for which job to end, on this process."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import trio


class Watch:
    """Interest in some jobs; :meth:`wait_changed` returns on each hint."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self._poked: set[uuid.UUID] = set()

    def _poke(self, job_id: uuid.UUID) -> None:
        self._poked.add(job_id)
        self._event.set()

    async def wait_changed(self, timeout: float) -> set[uuid.UUID] | None:
        """Wait for hints that jobs may have ended, or ``timeout`` seconds.

        Returns:
            The ids hinted at since the last call, or ``None`` when the
            timeout passed with no hint (re-read everything then).
        """
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()
        poked, self._poked = self._poked, set()
        return poked or None

    def take_pending(self, poked: set[uuid.UUID] | None) -> set[uuid.UUID] | None:
        """Add the hints that arrived since :meth:`wait_changed` returned."""
        if poked is None or not self._poked:
            return poked
        more, self._poked = self._poked, set()
        self._event = trio.Event()
        return poked | more


class Waiters:
    """Watches keyed by job id, poked when that job may have ended.

    A poke is a hint to re-read the row, never the answer itself: the
    database is the source of truth.
    """

    def __init__(self) -> None:
        self._watches: dict[uuid.UUID, set[Watch]] = {}

    @contextmanager
    def watch(self, *job_ids: uuid.UUID) -> Iterator[Watch]:
        """Register interest in ``job_ids`` for the duration of the block."""
        watch = Watch()
        for job_id in job_ids:
            self._watches.setdefault(job_id, set()).add(watch)
        try:
            yield watch
        finally:
            for job_id in job_ids:
                watches = self._watches.get(job_id)
                if watches is not None:
                    watches.discard(watch)
                    if not watches:
                        del self._watches[job_id]

    def notify(self, job_id: uuid.UUID) -> None:
        for watch in self._watches.get(job_id, ()):
            watch._poke(job_id)

    def notify_all(self) -> None:
        for job_id in list(self._watches):
            self.notify(job_id)

    def __len__(self) -> int:
        return len(self._watches)
