"""The public API: register jobs, run a worker, submit, cancel, get, wait."""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import trio
from pydantic import TypeAdapter

from actors import open_supervisor

from ._auth import authorize_cancel, visible_row
from ._dispatcher import Dispatcher
from ._errors import OrchestratorError
from ._jobs import Handler, JobDefinition, Registry, RetryPolicy, payload_type
from ._lifecycle import Applied, Cancel, JobState, transition
from ._migrations import load_migrations
from ._models import CancelOutcome, JobRecord, Principal, parse_job_id
from ._store import CANCEL_CHANNEL, DONE_CHANNEL, JOBS_CHANNEL, Store, open_store
from ._waiters import Waiters
from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator")

H = TypeVar("H", bound=Handler)

DATABASE_URL_ENV = "ORCHESTRATOR_DATABASE_URL"

#: How many times ``cancel`` re-reads a job that moved under it.
_CANCEL_ROUNDS = 20


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class NotRunning(OrchestratorError):
    """The orchestrator is used outside ``async with orch.running()``."""


class Orchestrator:
    """Jobs on PostgreSQL, run by actors on trio.

    Args:
        database_url: a ``postgresql://`` URL; else ``ORCHESTRATOR_DATABASE_URL``;
            else the embedded PostgreSQL (started on first use).
        schema: the PostgreSQL schema holding every object.
        concurrency: jobs this process runs at once.
        queues: queues this worker claims from (default: those of its jobs).
        node_id: this worker's name in leases (default: host and pid).
        poll_interval: seconds between claims when no notification arrives,
            and between re-reads for waiters.
        lease_seconds: how long a claim holds without a heartbeat.
        pool_size: database connections for API calls and writes.
        shutdown_grace: seconds running jobs get to finish when the worker
            stops; jobs still running then go back to the queue.
        clock: wall clock for lifecycle timestamps (tests inject skewed ones).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "orchestrator",
        concurrency: int = 10,
        queues: Sequence[str] | None = None,
        node_id: str | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        pool_size: int = 4,
        shutdown_grace: float = 0.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.concurrency = concurrency
        self.queues = list(queues) if queues is not None else None
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.pool_size = pool_size
        self.shutdown_grace = shutdown_grace
        self.clock = clock
        self.registry = Registry()
        self._store: Store | None = None
        self._dispatcher: Dispatcher | None = None
        self._writer: TransitionWriter | None = None
        self._waiters = Waiters()

    # -- registration --------------------------------------------------------

    def job(
        self,
        kind: str,
        *,
        max_attempts: int = 1,
        timeout: float | None = None,
        queue: str = "default",
        priority: int = 0,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 300.0,
    ) -> Callable[[H], H]:
        """Register the decorated ``async def handler(ctx, payload)`` for ``kind``.

        The payload is validated against the handler's annotation of its
        second parameter (a pydantic model, or any type pydantic knows).

        Args:
            max_attempts: attempts before the job fails for good.
            timeout: seconds one attempt may run; it then fails (and retries
                while attempts remain).
            retry_backoff: the first retry's delay; each next one doubles,
                up to ``retry_backoff_max``, with jitter.
        """
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")

        def register(handler: H) -> H:
            self.registry.add(
                JobDefinition(
                    kind=kind,
                    handler=handler,
                    payload=TypeAdapter(payload_type(handler)),
                    queue=queue,
                    max_attempts=max_attempts,
                    timeout=timeout,
                    priority=priority,
                    retry=RetryPolicy(retry_backoff, retry_backoff_max),
                )
            )
            return handler

        return register

    # -- running -----------------------------------------------------------

    async def resolve_database_url(self) -> str:
        """The URL in use: the argument, the environment, or the embedded server."""
        if self.database_url:
            return self.database_url
        from_env = os.environ.get(DATABASE_URL_ENV)
        if from_env:
            return from_env
        from ._embedded import start_embedded

        self.database_url = await trio.to_thread.run_sync(start_embedded)
        return self.database_url

    @asynccontextmanager
    async def running(self, *, work: bool = True, migrate: bool = True) -> AsyncIterator[Orchestrator]:
        """Connect, migrate, and (with ``work``) run a worker in this process.

        With ``work=False`` nothing is claimed: the orchestrator only submits,
        cancels, reads and waits, as a producer does.

        Raises:
            DatabaseUnavailable: the database cannot be reached.
        """
        if self._store is not None:
            raise RuntimeError("this orchestrator is already running")
        dsn = await self.resolve_database_url()
        async with open_store(dsn, schema=self.schema, size=self.pool_size) as store:
            if migrate:
                applied = await store.migrate(load_migrations())
                if applied:
                    logger.info("applied migrations: %s", ", ".join(applied))
            async with trio.open_nursery() as nursery:
                await nursery.start(self._listen, store)
                self._store = store
                try:
                    if work and self.registry.kinds:
                        async with self._worker(store) as dispatcher:
                            self._dispatcher = dispatcher
                            yield self
                    else:
                        yield self
                finally:
                    self._dispatcher = None
                    self._writer = None
                    self._store = None
                    nursery.cancel_scope.cancel()

    @asynccontextmanager
    async def _worker(self, store: Store) -> AsyncIterator[Dispatcher]:
        writer = TransitionWriter(store)
        self._writer = writer
        async with trio.open_nursery() as nursery:
            # The writer outlives the job actors: their last writes (a
            # release at shutdown) still need it.
            await nursery.start(writer.run)
            async with open_supervisor("jobs", intensity=10, period=1.0) as supervisor:
                dispatcher = Dispatcher(
                    store=store,
                    registry=self.registry,
                    writer=writer,
                    supervisor=supervisor,
                    node_id=self.node_id,
                    concurrency=self.concurrency,
                    queues=self.queues or self.registry.queues,
                    poll_interval=self.poll_interval,
                    lease_seconds=self.lease_seconds,
                    clock=self.clock,
                    on_job_exit=self._job_left_node,
                )
                await nursery.start(dispatcher.run)
                try:
                    yield dispatcher
                finally:
                    with trio.CancelScope(shield=True):
                        await dispatcher.drain(self.shutdown_grace)
            nursery.cancel_scope.cancel()

    def _job_left_node(self, job_id: uuid.UUID, state: JobState) -> None:
        self._waiters.notify(job_id)

    async def _listen(self, store: Store, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with store.listen([JOBS_CHANNEL, DONE_CHANNEL, CANCEL_CHANNEL]) as notifications:
            task_status.started()
            async for channel, payload in notifications:
                if channel == JOBS_CHANNEL:
                    if self._dispatcher is not None:
                        self._dispatcher.wake()
                    continue
                try:
                    job_id = uuid.UUID(payload)
                except ValueError:
                    continue
                if channel == DONE_CHANNEL:
                    self._waiters.notify(job_id)
                elif channel == CANCEL_CHANNEL and self._dispatcher is not None:
                    self._dispatcher.deliver_cancel(job_id)

    def _require_store(self) -> Store:
        if self._store is None:
            raise NotRunning("use the orchestrator inside `async with orch.running():`")
        return self._store

    # -- producing ---------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: Any,
        *,
        owner: Principal,
        delay: float = 0.0,
        priority: int | None = None,
        max_attempts: int | None = None,
        queue: str | None = None,
    ) -> JobRecord:
        """Queue one job; returns it as stored.

        Raises:
            UnknownJobKind: no handler is registered for ``kind``.
            pydantic.ValidationError: the payload does not fit the handler's
                type; the error names the field. Nothing is written.
        """
        [job] = await self.submit_many(
            kind, [payload], owner=owner, delay=delay, priority=priority, max_attempts=max_attempts, queue=queue
        )
        return job

    async def submit_many(
        self,
        kind: str,
        payloads: Iterable[Any],
        *,
        owner: Principal,
        delay: float = 0.0,
        priority: int | None = None,
        max_attempts: int | None = None,
        queue: str | None = None,
    ) -> list[JobRecord]:
        """Queue many jobs of one kind in one statement.

        Every payload is validated before anything is written: one bad
        payload rejects the whole batch.
        """
        store = self._require_store()
        definition = self.registry.get(kind)
        if not isinstance(owner, Principal):
            raise TypeError(f"owner must be a Principal, got {type(owner).__name__}")
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"delay must be a non-negative number of seconds, got {delay}")
        attempts = definition.max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {attempts}")
        data = [definition.to_json(p) for p in payloads]
        if not data:
            return []
        rows = await store.submit(
            kind=kind,
            queue=queue or definition.queue,
            owner_user_id=owner.user_id,
            owner_org_id=owner.org_id,
            priority=definition.priority if priority is None else priority,
            max_attempts=attempts,
            delay=delay,
            job_ids=[uuid.uuid4() for _ in data],
            payloads=data,
        )
        return [JobRecord.from_row(r) for r in rows]

    # -- reading -----------------------------------------------------------

    async def get(self, job_id: uuid.UUID | str, *, by: Principal) -> JobRecord:
        """The job as stored now.

        Raises:
            InvalidJobId: ``job_id`` is not a UUID.
            JobNotFound: no such job in ``by``'s organisation.
        """
        store = self._require_store()
        jid = parse_job_id(job_id)
        return JobRecord.from_row(visible_row(by, jid, await store.get_job(jid, by.org_id)))

    async def list(
        self, *, by: Principal, state: JobState | str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[JobRecord]:
        """Jobs of ``by``'s organisation, newest first."""
        store = self._require_store()
        status = JobState(state).value if state is not None else None
        rows = await store.list_jobs(by.org_id, status=status, kind=kind, limit=limit)
        return [JobRecord.from_row(r) for r in rows]

    async def wait(self, job_id: uuid.UUID | str, *, by: Principal, timeout: float | None = None) -> JobRecord:
        """Return the job once it is completed, failed or cancelled.

        Raises:
            JobNotFound, InvalidJobId: as :meth:`get`.
            TimeoutError: ``timeout`` seconds passed first.
        """
        [record] = await self.wait_many([job_id], by=by, timeout=timeout)
        return record

    async def wait_many(
        self, job_ids: Iterable[uuid.UUID | str], *, by: Principal, timeout: float | None = None
    ) -> list[JobRecord]:
        """Return the jobs, in the order given, once every one is terminal.

        Wakes on the notification a job's end sends (or, on this process, on
        the actor's exit), and re-reads the rows still pending at least every
        ``poll_interval`` seconds in case a notification was missed.

        Raises:
            JobNotFound, InvalidJobId: as :meth:`get`, for any of the ids.
            TimeoutError: ``timeout`` seconds passed first.
        """
        store = self._require_store()
        ids = [parse_job_id(j) for j in job_ids]
        done: dict[uuid.UUID, JobRecord] = {}
        pending = set(ids)
        with trio.fail_after(math.inf if timeout is None else timeout):
            with self._waiters.watch(*pending) as watch:
                to_read: set[uuid.UUID] | None = pending
                while pending:
                    # Re-read only the jobs hinted at, unless a quiet poll
                    # interval passed: then every pending one.
                    batch = sorted(pending if to_read is None else to_read & pending)
                    rows = {r["job_id"]: r for r in await store.get_jobs(batch)} if batch else {}
                    for jid in batch:
                        record = JobRecord.from_row(visible_row(by, jid, rows.get(jid)))
                        if record.is_terminal:
                            done[jid] = record
                            pending.discard(jid)
                    if pending:
                        to_read = await watch.wait_changed(self.poll_interval)
                        # One commit ends many jobs; let the rest of its
                        # notifications arrive before reading.
                        await trio.lowlevel.checkpoint()
                        to_read = watch.take_pending(to_read)
        return [done[jid] for jid in ids]

    # -- cancelling --------------------------------------------------------

    async def cancel(self, job_id: uuid.UUID | str, *, by: Principal) -> CancelOutcome:
        """Cancel a queued or running job; return once it is terminal.

        A queued job is cancelled by one guarded update. A running one gets
        a durable cancel request; the node running it cancels the handler
        and persists ``cancelled`` (unless the job finished first, which the
        outcome then says).

        Raises:
            NotAuthorized: ``by`` is neither the owner nor an admin of the
                job's organisation. Nothing changes.
            JobNotFound, InvalidJobId: as :meth:`get`.
        """
        store = self._require_store()
        jid = parse_job_id(job_id)
        for _ in range(_CANCEL_ROUNDS):
            row = visible_row(by, jid, await store.get_job(jid, by.org_id))
            authorize_cancel(by, row)
            record = JobRecord.from_row(row)
            if record.is_terminal:
                return _refused(record)
            if record.state is JobState.QUEUED:
                decision = transition(record.snapshot(), Cancel(self.clock()))
                assert isinstance(decision, Applied)
                completed_at = decision.after.completed_at
                assert completed_at is not None
                if await store.cancel_queued(
                    jid, started_at=record.started_at, completed_at=completed_at, by=by.user_id
                ):
                    self._waiters.notify(jid)
                    return CancelOutcome(job_id=jid, cancelled=True, state=JobState.CANCELLED)
                continue
            if await store.request_cancel(jid, by=by.user_id):
                if self._dispatcher is not None:
                    self._dispatcher.deliver_cancel(jid)
                final = await self.wait(jid, by=by)
                if final.state is JobState.CANCELLED:
                    return CancelOutcome(job_id=jid, cancelled=True, state=final.state)
                return _refused(final)
        raise OrchestratorError(f"job {jid} kept changing state; cancel gave up after {_CANCEL_ROUNDS} rounds")

    # -- introspection -----------------------------------------------------

    @property
    def store(self) -> Store:
        """The open store (inside ``running()``)."""
        return self._require_store()

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    @property
    def writer(self) -> TransitionWriter | None:
        return self._writer


def _refused(record: JobRecord) -> CancelOutcome:
    """A job that ended before this cancel could apply."""
    return CancelOutcome(job_id=record.id, cancelled=False, state=record.state, reason=f"already {record.state.value}")


