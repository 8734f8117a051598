"""The public API: register jobs, run a worker, submit, cancel, get, wait."""

from __future__ import annotations

import builtins
import logging
import math
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from datetime import datetime, timezone
from typing import Any, TypeVar, overload

import trio
from pydantic import TypeAdapter

from actors import open_supervisor

from . import _operations as operations
from ._database_url import check_database_url
from ._dispatcher import Dispatcher
from ._errors import DatabaseUnavailable, InvalidInput, OrchestratorError
from ._explain import Explanation, explain_job
from ._retention import (
    DEFAULT_BATCH,
    DEFAULT_PRUNE_INTERVAL,
    MAX_BATCH,
    MAX_PRUNE_INTERVAL,
    Pruner,
    PruneResult,
    Retention,
    prune,
)
from ._groups import NurseryEdge
from ._jobs import Handler, JobDefinition, Registry, RetryPolicy, payload_type
from ._lifecycle import JobState
from ._metrics import QUEUE_DEPTH_INTERVAL, Metrics
from ._migrations import load_migrations
from ._models import CancelOutcome, JobRecord, Principal, parse_job_id
from ._tracing import Tracing, load_tracing
from ._periodic import DEFAULT_GRACE_SECONDS, PeriodicSchedules, Schedule, check_schedule_options
from ._schedule_listing import ScheduleInfo, read_schedules
from ._store import (
    CANCEL_CHANNEL,
    DONE_CHANNEL,
    JOBS_CHANNEL,
    Store,
    open_store,
    parse_job_ids,
    retry_unavailable,
)
from ._validation import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_PAYLOAD_DEPTH,
    MAX_DELAY_SECONDS,
    PayloadLimits,
    check_max_attempts,
    check_name,
    check_priority,
    check_seconds,
    check_int,
    check_timeout,
)
from ._waiters import trio_waiters
from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator")

H = TypeVar("H", bound=Handler)

DATABASE_URL_ENV = "ORCHESTRATOR_DATABASE_URL"


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
        queues: queues this worker claims from (default: those of its jobs);
            a mapping also limits how many jobs of each queue run at once.
        node_id: this worker's name in leases (default: host and pid).
        poll_interval: seconds between claims when no notification arrives,
            and between re-reads for waiters.
        lease_seconds: how long a claim holds without a heartbeat.
        pool_size: database connections for API calls and writes.
        shutdown_grace: seconds running jobs get to finish when the worker
            stops; jobs still running then go back to the queue.
        clock: wall clock for lifecycle timestamps (tests inject skewed ones).
        max_payload_bytes: the largest payload ``submit`` accepts, as JSON.
        max_payload_depth: the deepest nesting of a payload ``submit`` accepts.
        retention: how long finished jobs are kept, per state (default:
            completed 7 days, failed and cancelled 30 days).
        prune_interval: seconds between a worker's prune rounds (the first
            at start); ``None``: this worker never prunes.
        prune_batch: rows one prune statement deletes, at most.
        metrics_interval: seconds between reads of the queue depth for the
            metrics (one node in the cluster recounts per interval);
            ``None``: this orchestrator never reads it.
        tracing: OpenTelemetry spans for each submission and each attempt,
            linked through a trace context stored with the job, when the
            ``opentelemetry`` package is installed (the ``otel`` extra);
            ``False``: none, whatever is installed. See ``_tracing``.
        tracer_provider: where the spans go (default: the global provider).

    Raises:
        InvalidInput: a setting is out of its range.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "orchestrator",
        concurrency: int = 10,
        queues: Sequence[str] | Mapping[str, int] | None = None,
        node_id: str | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 30.0,
        pool_size: int = 4,
        shutdown_grace: float = 0.0,
        clock: Callable[[], datetime] = utc_now,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH,
        retention: Retention | None = None,
        prune_interval: float | None = DEFAULT_PRUNE_INTERVAL,
        prune_batch: int = DEFAULT_BATCH,
        metrics_interval: float | None = QUEUE_DEPTH_INTERVAL,
        tracing: bool = True,
        tracer_provider: Any = None,
    ) -> None:
        self.tracing = tracing
        self.tracer_provider = tracer_provider
        self._tracing: Tracing | None = None
        self.payload_limits = PayloadLimits(max_payload_bytes, max_payload_depth)
        self.retention = Retention() if retention is None else retention
        if not isinstance(self.retention, Retention):
            raise InvalidInput("retention", f"must be a Retention, got {type(retention).__name__}")
        self.prune_interval = (
            None if prune_interval is None
            else check_seconds("prune_interval", prune_interval, high=MAX_PRUNE_INTERVAL, allow_zero=False)
        )  # fmt: skip
        self.prune_batch = check_int("prune_batch", prune_batch, 1, MAX_BATCH)
        self.metrics_interval = (
            None if metrics_interval is None
            else check_seconds("metrics_interval", metrics_interval, high=MAX_PRUNE_INTERVAL, allow_zero=False)
        )  # fmt: skip
        #: This orchestrator's Prometheus metrics, on a registry of its own.
        self.metrics = Metrics()
        self.pruner: Pruner | None = None
        self.database_url = database_url
        self.schema = schema
        self.concurrency = concurrency
        self.queues = queues
        #: Whether the node id was chosen (not made up from host and pid).
        self.node_id_given = node_id is not None
        self.node_id = node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.pool_size = pool_size
        self.shutdown_grace = shutdown_grace
        self.clock = clock
        self.registry = Registry()
        self.schedules = PeriodicSchedules()
        self._store: Store | None = None
        self._dispatcher: Dispatcher | None = None
        self._writer: TransitionWriter | None = None
        self._waiters = trio_waiters()
        self._hurried = False

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
        kind = check_name("kind", kind)
        queue = check_name("queue", queue)
        max_attempts = check_max_attempts(max_attempts)
        timeout = check_timeout(timeout)
        priority = check_priority(priority)
        retry_backoff = check_seconds("retry_backoff", retry_backoff, high=MAX_DELAY_SECONDS, allow_zero=False)
        retry_backoff_max = check_seconds("retry_backoff_max", retry_backoff_max, high=MAX_DELAY_SECONDS)
        if retry_backoff_max < retry_backoff:
            raise InvalidInput("retry_backoff_max", f"must be at least retry_backoff ({retry_backoff}s)")

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

    @overload
    def periodic(
        self,
        cron: str,
        kind: str,
        *,
        payload: Any = None,
        name: str | None = None,
        timezone: str = "UTC",
        missed: str = "enqueue_once",
        grace: float = DEFAULT_GRACE_SECONDS,
        owner: Principal | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> Schedule: ...

    @overload
    def periodic(
        self,
        cron: str,
        kind: None = None,
        *,
        payload: Any = None,
        name: str | None = None,
        timezone: str = "UTC",
        missed: str = "enqueue_once",
        grace: float = DEFAULT_GRACE_SECONDS,
        owner: Principal | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Callable[[H], H]: ...

    def periodic(
        self,
        cron: str,
        kind: str | None = None,
        *,
        payload: Any = None,
        name: str | None = None,
        timezone: str = "UTC",
        missed: str = "enqueue_once",
        grace: float = DEFAULT_GRACE_SECONDS,
        owner: Principal | None = None,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Schedule | Callable[[H], H]:
        """Enqueue a job of ``kind`` at every period of ``cron``, once across
        all daemons. See :mod:`orchestrator._periodic`.

        ``orch.periodic("0 9 * * *", "report")`` schedules a kind already
        registered with :meth:`job`; ``@orch.periodic("*/5 * * * *")`` on a
        handler registers it as the kind ``name`` (default: the function's
        name) with the job options given, and schedules it.

        Args:
            cron: five fields (minute hour day-of-month month day-of-week)
                or an alias such as ``@daily``.
            payload: every period's payload, checked against the handler now.
            name: the schedule's name, unique per database (default: the kind).
            timezone: the IANA zone ``cron`` is read in.
            missed: a period no daemon was up to enqueue on time is enqueued
                late, once (``"enqueue_once"``: only the latest one missed,
                never a burst), or not at all (``"skip"``).
            grace: seconds after its instant a period still counts as on time.
            owner: the principal owning the jobs (default: ``periodic`` of
                organisation ``periodic``).

        Raises:
            InvalidInput: a value is wrong (``cron``, ``timezone``,
                ``missed``, ``payload.<field>``...), named; nothing is
                registered.
            UnknownJobKind: ``kind`` has no handler.
        """
        options = check_schedule_options(
            cron=cron, name=name, timezone=timezone, missed=missed, grace=grace,
            owner=owner, queue=queue, priority=priority, max_attempts=max_attempts,
        )  # fmt: skip
        if kind is not None:
            if timeout is not None:
                raise InvalidInput("timeout", "belongs to the kind: set it with @orch.job")
            definition = self.registry.get(check_name("kind", kind))
            schedule = options.bind(
                self.schedules, kind=definition.kind, payload_type=definition.payload, payload=payload,
                limits=self.payload_limits, queue=definition.queue, priority=definition.priority,
                max_attempts=definition.max_attempts,
            )  # fmt: skip
            self.schedules.add(schedule)
            return schedule

        def register(handler: H) -> H:
            kind = check_name("name", name if name is not None else getattr(handler, "__name__", None))
            schedule = options.bind(
                self.schedules, kind=kind, payload_type=TypeAdapter(payload_type(handler)), payload=payload,
                limits=self.payload_limits, queue=options.queue or "default", priority=options.priority or 0,
                max_attempts=options.max_attempts or 1,
            )  # fmt: skip
            self.job(kind, queue=schedule.queue, priority=schedule.priority, max_attempts=schedule.max_attempts, timeout=timeout)(handler)
            self.schedules.add(schedule)
            return handler

        return register

    # -- running -----------------------------------------------------------

    async def resolve_database_url(self) -> str:
        """The URL in use: the argument, the environment, or the embedded server.

        Raises:
            InvalidInput: the URL given is not a well-formed ``postgresql://`` URL.
        """
        if self.database_url:
            return check_database_url(self.database_url)
        from_env = os.environ.get(DATABASE_URL_ENV)
        if from_env:
            return check_database_url(from_env)
        from ._embedded import start_embedded

        self.database_url = await trio.to_thread.run_sync(start_embedded)
        return self.database_url

    @asynccontextmanager
    async def running(self, *, work: bool = True, migrate: bool = True) -> AsyncIterator[Orchestrator]:
        """Connect, migrate, and (with ``work``) run a worker in this process.

        With ``work=False`` nothing is claimed: the orchestrator only submits,
        cancels, reads and waits, as a producer does.

        An exception the block raises comes out as itself, with its
        ``__cause__`` and ``__context__``, never translated.

        Raises:
            DatabaseUnavailable: the database cannot be reached.
        """
        if self._store is not None:
            raise RuntimeError("this orchestrator is already running")
        self._hurried = False
        dsn = await self.resolve_database_url()
        self._tracing = load_tracing(self.tracing, self.tracer_provider, self.node_id)
        # What the block raises passes through the nurseries below: it comes
        # out as itself, as it would without the orchestrator.
        edge = NurseryEdge()
        with edge.unwrapping():
            async with open_store(dsn, schema=self.schema, size=self.pool_size, metrics=self.metrics) as store:
                if migrate:
                    applied = await store.migrate(load_migrations())
                    if applied:
                        logger.info("applied migrations: %s", ", ".join(applied))
                async with trio.open_nursery() as nursery:
                    # A producer only waits for jobs to end: the announcements of
                    # new jobs and of cancels are for workers, and each one
                    # would wake this process for nothing.
                    working = work and bool(self.registry.kinds)
                    channels = [JOBS_CHANNEL, DONE_CHANNEL, CANCEL_CHANNEL] if working else [DONE_CHANNEL]
                    await nursery.start(self._listen, store, channels)
                    self._store = store
                    if work:
                        await nursery.start(self.schedules.run, store)
                    if self.metrics_interval is not None:
                        nursery.start_soon(self.metrics.run_queue_depth, store, self.metrics_interval)
                    try:
                        if working:
                            async with self._worker(store) as dispatcher:
                                self._dispatcher = dispatcher
                                with edge.body():
                                    yield self
                        else:
                            with edge.body():
                                yield self
                    finally:
                        self.metrics.watch_worker(None, None)
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
            # Cancelled when the drain leaves actors behind (their last writes
            # wait for a database that does not answer): stopping is bounded.
            left_behind = trio.CancelScope()
            with left_behind:
                async with open_supervisor("jobs", intensity=10, period=1.0) as supervisor:
                    dispatcher = Dispatcher(
                        store=store,
                        registry=self.registry,
                        writer=writer,
                        supervisor=supervisor,
                        node_id=self.node_id,
                        concurrency=self.concurrency,
                        queue_limits=self.queue_limits(),
                        poll_interval=self.poll_interval,
                        lease_seconds=self.lease_seconds,
                        clock=self.clock,
                        on_job_exit=self._job_left_node,
                        metrics=self.metrics,
                        tracing=self._tracing,
                    )
                    await nursery.start(dispatcher.run)
                    self.metrics.watch_worker(dispatcher, writer)
                    await self._advertise(store)
                    if self.prune_interval is not None:
                        self.pruner = Pruner(store, self.retention, self.prune_interval, self.prune_batch)
                        nursery.start_soon(self.pruner.run)
                    if self._hurried:
                        dispatcher.hurry()
                    try:
                        yield dispatcher
                    finally:
                        with trio.CancelScope(shield=True):
                            left = await dispatcher.drain(self.shutdown_grace)
                        if left:
                            left_behind.cancel()
            nursery.cancel_scope.cancel()

    async def _advertise(self, store: Store) -> None:
        """Record what this node runs (for ``explain``); best effort: a
        worker that cannot say it still works."""
        try:
            await store.fetch(
                "advertise_node", self.node_id, list(self.registry.kinds), self.queue_limits(),
                self.concurrency, float(self.lease_seconds),
            )  # fmt: skip
        except OrchestratorError as exc:
            logger.warning("could not record what node %s runs (explain will not see it): %s", self.node_id, exc)

    def queue_limits(self) -> dict[str, int]:
        """Each queue this worker claims from, with its concurrency limit."""
        if self.queues is None:
            return dict.fromkeys(self.registry.queues, self.concurrency)
        if isinstance(self.queues, Mapping):
            return {q: min(int(n), self.concurrency) for q, n in self.queues.items()}
        return dict.fromkeys(self.queues, self.concurrency)

    def _job_left_node(self, job_id: uuid.UUID, state: JobState) -> None:
        self._waiters.notify(job_id)

    async def _listen(
        self, store: Store, channels: Sequence[str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Route the notifications of ``channels``; reconnect with backoff when the connection drops."""
        delay, ceiling = 0.05, 5.0
        started = False
        while True:
            try:
                async with store.listen(channels) as notifications:
                    if not started:
                        started = True
                        task_status.started()
                    else:
                        self.metrics.reconnected("listener")
                        # Whatever was announced while deaf is lost: re-read.
                        self._waiters.notify_all()
                        if self._dispatcher is not None:
                            self._dispatcher.wake()
                    delay = 0.05
                    async for channel, payload in notifications:
                        self._route(channel, payload)
            except DatabaseUnavailable as exc:
                if not started:
                    raise
                logger.warning("notification connection lost (%s); reconnecting in %.2fs", exc, delay)
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(ceiling, delay * 2)

    def _route(self, channel: str, payload: str) -> None:
        if channel == JOBS_CHANNEL:
            if self._dispatcher is not None:
                self._dispatcher.wake()
            return
        for job_id in parse_job_ids(payload):
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
        unique_key: str | None = None,
    ) -> JobRecord:
        """Queue one job; returns it as stored.

        Args:
            unique_key: while a job of this kind with this key is queued or
                active in the owner's organisation, return it instead of
                queueing a duplicate.

        Raises:
            UnknownJobKind: no handler is registered for ``kind``.
            InvalidInput: a value is not allowed: the payload holds what JSON
                cannot (NaN, NUL, lone surrogates, non-JSON types when the
                handler takes ``Any``), nests too deep or is too large; the
                delay is not from 0 to 100 years; the priority is not an
                integer in PostgreSQL's range; queue or unique key is empty,
                too long or holds control characters. The error names the
                field. Nothing is written.
            pydantic.ValidationError: the payload does not fit the handler's
                type; the error names the field. Nothing is written.
        """
        [job] = await self.submit_many(
            kind,
            [payload],
            owner=owner,
            delay=delay,
            priority=priority,
            max_attempts=max_attempts,
            queue=queue,
            unique_keys=[unique_key],
            single=True,
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
        unique_keys: Sequence[str | None] | None = None,
        single: bool = False,
    ) -> builtins.list[JobRecord]:
        """Queue many jobs of one kind in one statement.

        Every payload is validated before anything is written: one bad
        payload rejects the whole batch.

        Raises:
            UnknownJobKind: no handler is registered for ``kind``.
            InvalidInput: an option or a payload is not allowed (see
                :meth:`submit`); the error names it.
            pydantic.ValidationError: a payload does not fit the handler's type.
        """
        store = self._require_store()
        definition = self.registry.get(check_name("kind", kind))
        return await operations.submit_jobs(
            store,
            kind=kind,
            payload_type=definition.payload,
            payloads=payloads,
            owner=owner,
            queue=definition.queue if queue is None else queue,
            priority=definition.priority if priority is None else priority,
            max_attempts=definition.max_attempts if max_attempts is None else max_attempts,
            delay=delay,
            unique_keys=unique_keys,
            limits=self.payload_limits,
            single=single,
            tracing=self._tracing,
        )

    def continue_trace(self, headers: Mapping[str, str]) -> AbstractContextManager[None]:
        """Submissions inside continue the trace of these HTTP headers'
        ``traceparent`` (and ``tracestate``), unless a span is current
        already or tracing is off."""
        if self._tracing is None:
            return nullcontext()
        return self._tracing.continuing(headers)

    # -- reading -----------------------------------------------------------

    async def get(self, job_id: uuid.UUID | str, *, by: Principal) -> JobRecord:
        """The job as stored now.

        Raises:
            InvalidJobId: ``job_id`` is not a UUID.
            JobNotFound: no such job in ``by``'s organisation.
        """
        return await operations.get_job(self._require_store(), parse_job_id(job_id), by)

    async def list(
        self,
        *,
        by: Principal,
        state: JobState | str | None = None,
        kind: str | None = None,
        queue: str | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> builtins.list[JobRecord]:
        """Jobs of ``by``'s organisation, newest first, optionally filtered."""
        return await operations.list_jobs(
            self._require_store(), by, state=state, kind=kind, queue=queue, owner=owner, limit=limit
        )

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
    ) -> builtins.list[JobRecord]:
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
        with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
            with self._waiters.watch(*pending) as watch:
                to_read: set[uuid.UUID] | None = pending
                while pending:
                    # Re-read only the jobs hinted at, unless a quiet poll
                    # interval passed: then every pending one.
                    ended = await retry_unavailable(
                        "waiting for jobs",
                        operations.read_terminal,
                        store,
                        by,
                        pending if to_read is None else to_read & pending,
                    )
                    done.update(ended)
                    pending.difference_update(ended)
                    if pending:
                        to_read = await watch.wait_changed(self.poll_interval)
                        # One commit ends many jobs; let the rest of its
                        # notifications arrive before reading.
                        await trio.lowlevel.checkpoint()
                        to_read = watch.take_pending(to_read)
        if deadline.cancelled_caught:
            raise TimeoutError(f"{len(pending)} of {len(ids)} jobs still not finished after {timeout}s")
        return [done[jid] for jid in ids]

    async def explain(self, job_id: uuid.UUID | str, *, by: Principal) -> Explanation:
        """Why the job is where it is, from the database: ``reason`` (a
        :class:`~orchestrator.ExplainReason`) and a sentence, with the
        figures behind them.

        Raises:
            InvalidJobId: ``job_id`` is not a UUID.
            JobNotFound: no such job in ``by``'s organisation.
        """
        return await explain_job(self._require_store(), parse_job_id(job_id), by)

    async def list_schedules(self) -> builtins.list[ScheduleInfo]:
        """Every periodic schedule of the schema, by name, as the database
        holds them (registered by whichever daemons run them), each with its
        last period and the next one due. Cluster-wide: not a principal's
        view, like :meth:`prune`."""
        return await read_schedules(self._require_store())

    async def prune(
        self,
        *,
        older_than: float | None = None,
        states: Iterable[str] | None = None,
        dry_run: bool = False,
    ) -> PruneResult:
        """Delete finished jobs older than the retention ages (or
        ``older_than`` seconds, for every state), in bounded batches; with
        ``dry_run``, only count them. Every organisation's: this is an
        operator's tool, not a principal's.

        Raises:
            InvalidInput: a state or age is not allowed (naming it).
        """
        ages = self.retention.ages(states, older_than)
        return await prune(self._require_store(), ages, batch=self.prune_batch, dry_run=dry_run)

    # -- cancelling --------------------------------------------------------

    async def cancel(self, job_id: uuid.UUID | str, *, by: Principal) -> CancelOutcome:
        """Cancel a queued or running job; return once it is terminal.

        A queued job is cancelled by one guarded update. A running one gets
        a durable cancel request; the node running it (this one or another)
        cancels the handler and persists ``cancelled``, unless the job ended
        first, which the outcome then says.

        Raises:
            NotAuthorized: ``by`` is neither the owner nor an admin of the
                job's organisation. Nothing changes.
            JobNotFound, InvalidJobId: as :meth:`get`.
        """
        jid = parse_job_id(job_id)
        outcome = await operations.cancel_job(
            self._require_store(),
            jid,
            by,
            clock=self.clock,
            wait_terminal=lambda j: self.wait(j, by=by),
            deliver_locally=self._dispatcher.deliver_cancel if self._dispatcher is not None else None,
            cancelled_queued=lambda row: self.metrics.moved([row], "cancelled"),
        )
        self._waiters.notify(jid)
        return outcome

    def hurry_shutdown(self) -> None:
        """Make a stopping worker release its running jobs now.

        Leaving ``running()`` gives running jobs ``shutdown_grace`` seconds;
        calling this (on a second SIGINT, say) ends that wait at once. The
        jobs still go back to the queue.
        """
        self._hurried = True
        if self._dispatcher is not None:
            self._dispatcher.hurry()

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
