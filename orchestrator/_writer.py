"""The transition writer: many job actors' writes, one statement per batch.

Each job actor awaits the acknowledgement of its own write before it handles
its next message, so writes stay ordered per job while jobs share
statements. Batches form by themselves: whatever arrived while the previous
statement ran goes into the next one, with no timer.

A batch that takes jobs off the node (they end, or go back to the queue)
frees their slots: when a :class:`Refill` (the dispatcher) is attached, the
writer asks it how many jobs to claim for them, and the same statement
claims them (``apply_transitions_and_claim``); the claimed rows go to the
refill before any of the batch's writers hears back.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ._errors import DatabaseUnavailable, StoreError
from ._port import Row, TransitionPort
from ._store import TransitionRow, retry_unavailable

logger = logging.getLogger("orchestrator.writer")


@dataclass(slots=True)
class _Request:
    row: TransitionRow
    done: trio.Event = field(default_factory=trio.Event)
    applied: bool = False
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class RefillClaim:
    """What a batch's statement is to claim: as ``claim_jobs`` is called."""

    kinds: Sequence[str]
    slots: Mapping[str, int]
    node: str
    lease_seconds: float


class Refill(Protocol):
    """Who decides how many jobs a batch's statement claims, and runs them.

    ``reserve`` is called before the statement: the slots it returns count
    as taken until ``refilled`` (with the rows the statement claimed) or
    ``cancel`` (the statement failed: nothing was claimed) gives them back.
    """

    def reserve(self, rows: Sequence[TransitionRow]) -> RefillClaim | None: ...

    def cancel(self, claim: RefillClaim) -> None: ...

    async def refilled(self, claim: RefillClaim, rows: list[Row]) -> None: ...


class TransitionWriter:
    """Coalesces guarded transitions from many job actors into one statement.

    Args:
        store: where to write.
        capacity: requests that may wait for the next batch; writers beyond
            it wait for room (backpressure).
        max_batch: rows per statement at most.
        reconnect_backoff: first and largest pause between attempts while
            the database is unreachable.
    """

    def __init__(
        self,
        store: TransitionPort,
        *,
        capacity: int = 2048,
        max_batch: int = 500,
        reconnect_backoff: tuple[float, float] = (0.05, 5.0),
    ) -> None:
        self._store = store
        self._send, self._receive = trio.open_memory_channel[_Request](capacity)
        self._max_batch = max_batch
        self._backoff = reconnect_backoff
        self.statements = 0
        self.rows = 0
        #: Jobs claimed by the batches' statements (see :class:`Refill`).
        self.claimed = 0
        self._refill: Refill | None = None
        #: Statements that found the database unreachable (then retried).
        self.failed_attempts = 0

    @property
    def pending(self) -> int:
        """Writes waiting for the next batch."""
        return self._send.statistics().current_buffer_used

    def attach(self, refill: Refill | None) -> None:
        """Let batches claim replacements for the jobs they take off the
        node, through ``refill`` (``None``: no more)."""
        self._refill = refill

    async def write(self, row: TransitionRow) -> bool:
        """Persist ``row`` with the next batch.

        Returns:
            Whether the guarded transition applied.

        Raises:
            StoreError: PostgreSQL rejected the batch.
        """
        request = _Request(row)
        await self._send.send(request)
        await request.done.wait()
        if request.error is not None:
            raise request.error
        return request.applied

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until cancelled."""
        task_status.started()
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._write_batch(batch)

    async def _write_batch(self, batch: list[_Request]) -> None:
        # A job must not be written twice in one statement (UPDATE ... FROM
        # would apply only one of its rows); actors await each write, so
        # this only guards against a bug elsewhere.
        seen: set[uuid.UUID] = set()
        now: list[_Request] = []
        later: list[_Request] = []
        for request in batch:
            (later if request.row.job_id in seen else now).append(request)
            seen.add(request.row.job_id)
        try:
            applied = await self._apply_retrying([r.row for r in now])
        except StoreError as exc:
            if len(now) > 1:
                # One job's row broke the statement: write each alone, so
                # that only that job hears of it.
                for request in now:
                    await self._write_batch([request])
            else:
                now[0].error = exc
                now[0].done.set()
        except Exception as exc:
            for request in now:
                request.error = exc
                request.done.set()
        else:
            for request in now:
                request.applied = request.row.job_id in applied
                request.done.set()
        finally:
            # Cancelled mid-statement: nobody may be left waiting.
            for request in now:
                request.done.set()
        if later:
            await self._write_batch(later)

    async def _apply(self, rows: list[TransitionRow], claim: RefillClaim | None) -> tuple[set[uuid.UUID], list[Row]]:
        try:
            if claim is None:
                return await self._store.apply_transitions(rows), []
            # A claim's answer lost to cancellation would leave its jobs
            # started with nobody running them: the statement runs shielded,
            # bounded by the lease it takes.
            with trio.move_on_after(claim.lease_seconds, shield=True):
                return await self._store.apply_transitions_and_claim(
                    rows, kinds=claim.kinds, slots=claim.slots, node=claim.node, lease_seconds=claim.lease_seconds
                )
            raise DatabaseUnavailable(f"PostgreSQL did not answer within {claim.lease_seconds}s")
        except DatabaseUnavailable:
            self.failed_attempts += 1
            raise

    async def _apply_retrying(self, rows: list[TransitionRow]) -> set[uuid.UUID]:
        # While the database is away, hold the batch and try again: an actor
        # whose write was in fact committed reads back its own state (and a
        # claim that committed is not made again: the batch's guards no
        # longer match, so the retried statement claims nothing).
        refill = self._refill
        claim = refill.reserve(rows) if refill is not None else None
        try:
            applied, claimed = await retry_unavailable(
                f"{len(rows)} writes", self._apply, rows, claim, backoff=self._backoff
            )
        except BaseException:
            if refill is not None and claim is not None:
                refill.cancel(claim)
            raise
        self.statements += 1
        self.rows += len(rows)
        self._store.metrics.batch_rows.observe(len(rows))
        if refill is not None and claim is not None:
            self.claimed += len(claimed)
            # Before the batch's writers hear back, so that their jobs
            # leaving the node never lets the dispatcher claim these slots
            # a second time; shielded, as the dispatcher's own claim.
            with trio.move_on_after(claim.lease_seconds, shield=True):
                await refill.refilled(claim, claimed)
        return applied
