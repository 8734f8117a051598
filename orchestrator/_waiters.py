"""Who waits for which job to end, on this process."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar

import trio


class Pokeable(Protocol):
    def poke(self, job_id: uuid.UUID | None) -> None: ...


W = TypeVar("W", bound=Pokeable)


class Hints:
    """The job ids hinted at since a waiter last looked: the part of a watch
    that does not depend on the event loop."""

    def __init__(self) -> None:
        self._poked: set[uuid.UUID] = set()
        self._everything = False

    def poke(self, job_id: uuid.UUID | None) -> None:
        """Hint that ``job_id`` may have ended (``None``: any of them may have)."""
        if job_id is None:
            self._everything = True
        else:
            self._poked.add(job_id)
        self._wake()

    def _wake(self) -> None:
        raise NotImplementedError

    def _take(self) -> set[uuid.UUID] | None:
        """The ids hinted at, or ``None`` when everything must be re-read."""
        poked, self._poked = self._poked, set()
        everything, self._everything = self._everything, False
        return None if everything or not poked else poked


class Watch(Hints):
    """Interest in some jobs, on trio; :meth:`wait_changed` returns on each hint."""

    def __init__(self) -> None:
        super().__init__()
        self._event = trio.Event()

    def _wake(self) -> None:
        self._event.set()

    async def wait_changed(self, timeout: float) -> set[uuid.UUID] | None:
        """Wait for hints that jobs may have ended, or ``timeout`` seconds.

        Returns:
            The ids hinted at since the last call, or ``None`` when every
            watched job should be re-read: the timeout passed with no hint,
            or a hint named no job.
        """
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()
        return self._take()

    def take_pending(self, poked: set[uuid.UUID] | None) -> set[uuid.UUID] | None:
        """Add the hints that arrived since :meth:`wait_changed` returned."""
        if poked is None or not (self._poked or self._everything):
            return poked
        self._event = trio.Event()
        more = self._take()
        return None if more is None else poked | more


class Waiters(Generic[W]):
    """Watches keyed by job id, poked when that job may have ended.

    A poke is a hint to re-read the row, never the answer itself: the
    database is the source of truth. The registry is the same on trio and
    asyncio; only the watch (how to wait) differs.

    Args:
        make_watch: builds the watch handed to each waiter.
    """

    def __init__(self, make_watch: Callable[[], W]) -> None:
        self._make_watch = make_watch
        self._watches: dict[uuid.UUID, set[W]] = {}

    @contextmanager
    def watch(self, *job_ids: uuid.UUID) -> Iterator[W]:
        """Register interest in ``job_ids`` for the duration of the block."""
        watch = self._make_watch()
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
        for watch in list(self._watches.get(job_id, ())):
            watch.poke(job_id)

    def notify_all(self) -> None:
        """Poke every watch with no job named: each re-reads all it waits for."""
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.poke(None)

    def __len__(self) -> int:
        return len(self._watches)


def trio_waiters() -> Waiters[Watch]:
    """A registry whose watches wait on trio."""
    return Waiters(Watch)
