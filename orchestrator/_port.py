"""The store's port: the statements the rest of the package calls, as types.

Three adapters provide them: :class:`orchestrator._store.Store` (trio,
asyncpg through trio-asyncio), :class:`orchestrator._asyncio_store.AsyncioStore`
(plain asyncio, the producer client's) and
:class:`orchestrator._memory_store.MemoryStore` (in memory, for unit tests of
the job actor, the writer and the dispatcher). Code that takes a store types
it by the narrowest protocol here, so the memory adapter can stand in for
PostgreSQL and mypy checks that every adapter keeps up with the port.

The guarded semantics behind each statement are written once, in
``sql/queries.sql``; the memory adapter repeats them, and the contract suite
(tests/store_contract.py) runs the same scenarios against both.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    # Only for the annotations: the row type lives with the SQL adapter,
    # which may be edited in parallel; importing it at run time would make
    # this module pull in asyncpg for nothing.
    from ._store import TransitionRow
    from ._metrics import Metrics

#: A row as a statement returns it: column name to value.
Row = Mapping[str, Any]


class ProducerPort(Protocol):
    """What ``submit``, ``get``, ``list``, ``cancel`` and ``wait`` need
    (see ``_operations``); every adapter provides it."""

    async def submit(
        self,
        *,
        kind: str,
        queue: str,
        owner_user_id: str,
        owner_org_id: str,
        priority: int,
        max_attempts: int,
        delay: float,
        job_ids: Sequence[uuid.UUID],
        payloads_json: Sequence[str],
        unique_keys: Sequence[str | None],
        trace_context: Mapping[str, str] | None = None,
    ) -> list[Row]: ...

    async def get_job(self, job_id: uuid.UUID, org_id: str) -> Row | None: ...

    async def get_jobs(self, job_ids: Sequence[uuid.UUID]) -> list[Row]: ...

    async def list_jobs(
        self, org_id: str, *, status: str | None, kind: str | None, queue: str | None, owner: str | None, limit: int
    ) -> list[Row]: ...

    async def cancel_queued(
        self, job_id: uuid.UUID, *, started_at: datetime | None, completed_at: datetime, by: str
    ) -> Row | None: ...

    async def request_cancel(self, job_id: uuid.UUID, *, by: str) -> bool: ...


class JobPort(Protocol):
    """What a job actor needs besides its writer: the row, read back when a
    guarded write did not apply."""

    async def get_job_any(self, job_id: uuid.UUID) -> Row | None: ...


class TransitionPort(Protocol):
    """What the transition writer needs: many guarded writes in one statement,
    and, where the writes free slots on the node, the claim of replacements
    in that same statement."""

    #: Where the writer records its batch sizes.
    metrics: Metrics

    async def apply_transitions(self, rows: Sequence[TransitionRow]) -> set[uuid.UUID]: ...

    async def apply_transitions_and_claim(
        self,
        rows: Sequence[TransitionRow],
        *,
        kinds: Sequence[str],
        slots: Mapping[str, int],
        node: str,
        lease_seconds: float,
    ) -> tuple[set[uuid.UUID], list[Row]]: ...


class WorkerPort(JobPort, TransitionPort, Protocol):
    """What a worker node (dispatcher, writer, job actors) needs of the store."""

    async def claim(
        self, *, kinds: Sequence[str], slots: Mapping[str, int], node: str, lease_seconds: float
    ) -> list[Row]: ...

    async def next_due(self, *, kinds: Sequence[str], queues: Sequence[str]) -> float | None: ...

    async def quarantine_malformed(self, limit: int = 1000) -> list[Row]: ...

    async def fail_unusable(self, failures: Sequence[tuple[uuid.UUID, int, str]]) -> set[uuid.UUID]: ...

    async def renew_leases(self, node: str, lease_seconds: float, tokens: Sequence[int]) -> dict[uuid.UUID, bool]: ...

    async def rescue_expired(self, limit: int = 1000) -> list[Row]: ...

    async def release_unstarted(
        self, jobs: Sequence[tuple[uuid.UUID, int, datetime | None]]
    ) -> set[uuid.UUID]: ...

    async def register_node(self, node: str, hostname: str, pid: int) -> None: ...

    async def stop_node(self, node: str) -> None: ...


class NotificationPort(Protocol):
    """Notifications on the schema's channels (``jobs``, ``done``, ``cancel``,
    ``events``), as ``(channel, payload)``; hints only, pollers catch what
    is missed."""

    def listen(
        self, names: Sequence[str], *, buffer: int = 4096
    ) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[tuple[str, str]]]: ...


class TrioStorePort(ProducerPort, WorkerPort, NotificationPort, Protocol):
    """Everything an orchestrator running on trio asks of its store, except
    migrating (which only PostgreSQL has)."""


if TYPE_CHECKING:
    from ._asyncio_store import AsyncioStore
    from ._memory_store import MemoryStore
    from ._store import Store

    def _adapters_fit_the_port(
        trio_store: Store, asyncio_store: AsyncioStore, memory: MemoryStore
    ) -> tuple[TrioStorePort, ProducerPort, TrioStorePort]:
        # mypy checks here that each adapter provides its ports.
        return trio_store, asyncio_store, memory
