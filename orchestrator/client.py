"""A producer client for plain asyncio services (FastAPI, aiohttp, ...).

Services that run on asyncio hand work to trio daemons (``orchestrator run``)
through :class:`Client`: it submits, reads, lists, cancels and waits for
jobs with the same rules, statements and exceptions as
:class:`orchestrator.Orchestrator`, on an asyncpg pool on the caller's loop.

This module never imports trio_asyncio (importing it would patch asyncio
for the whole host process), and the client never runs jobs.

Example::

    from orchestrator import Principal
    from orchestrator.client import Client

    async with Client("postgresql://app@db/app") as client:
        alice = Principal(user_id="alice", org_id="acme")
        job = await client.submit("thumbnail", {"w": 64}, owner=alice)
        final = await client.wait(job.id, by=alice, timeout=60)
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from pydantic import TypeAdapter

from . import _operations as operations
from ._asyncio_store import AsyncioStore, DoneListener, Watch
from ._database_url import check_database_url
from ._errors import DatabaseUnavailable, OrchestratorError, UnknownJobKind, quote_prefix
from ._jobs import known_kinds
from ._lifecycle import JobState
from ._models import CancelOutcome, JobRecord, Principal, parse_job_id
from ._orchestrator import DATABASE_URL_ENV, NotRunning
from ._tracing import Tracing, load_tracing
from ._validation import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_PAYLOAD_DEPTH, PayloadLimits, check_name
from ._waiters import Waiters

if TYPE_CHECKING:
    from ._orchestrator import Orchestrator

__all__ = ["Client", "ClientNotOpen", "MissingDatabaseUrl"]

logger = logging.getLogger("orchestrator.client")


class MissingDatabaseUrl(OrchestratorError, ValueError):
    """No database URL was given and ``ORCHESTRATOR_DATABASE_URL`` is unset."""


class ClientNotOpen(NotRunning):
    """The client is used before :meth:`Client.open`, or after :meth:`Client.close`."""


@dataclass(frozen=True)
class _KindSpec:
    """How the client checks and defaults one kind of job."""

    payload: TypeAdapter[Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 1


_ANY_PAYLOAD = _KindSpec(TypeAdapter(Any))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _as_adapter(payload_type: Any) -> TypeAdapter[Any]:
    return payload_type if isinstance(payload_type, TypeAdapter) else TypeAdapter(payload_type)


class Client:
    """Submit, read, cancel and wait for jobs from a plain asyncio program.

    The methods mirror :class:`orchestrator.Orchestrator`'s (same names,
    arguments, results and exceptions); trio daemons on the same database
    and schema run the jobs.

    A client belongs to the event loop that opens it (its connections do):
    open and use it on one loop, e.g. in the application's lifespan.

    Payloads are checked before anything is written, in one of three ways:

    * :meth:`from_orchestrator`: with the payload types (and the queue,
      priority and max_attempts defaults) of an orchestrator's registered
      jobs, exactly as its workers will validate them; other kinds raise
      :class:`~orchestrator.UnknownJobKind`.
    * ``job_types``: a mapping of kind to payload type (a pydantic model,
      any type pydantic knows, or a ``TypeAdapter``); other kinds raise
      :class:`~orchestrator.UnknownJobKind`.
    * neither: any kind is accepted and a payload need only be
      JSON-serialisable (as pydantic serialises ``Any``); the worker
      validates it when it runs the job, and a payload it rejects makes the
      job fail.

    Args:
        database_url: a ``postgresql://`` URL; else the environment variable
            ``ORCHESTRATOR_DATABASE_URL``; else :class:`MissingDatabaseUrl`
            is raised. Unlike the orchestrator, the client never starts an
            embedded PostgreSQL: it talks to the daemons' database.
        schema: the PostgreSQL schema of the orchestrator's objects. It must
            already be migrated (by a daemon, or ``orchestrator migrate``).
        pool_size: the most pooled connections; one more is opened, on the
            first ``wait`` or ``cancel`` of a running job, to LISTEN for
            finished jobs.
        job_types: kind -> payload type, as above.
        poll_interval: seconds between re-reads of jobs being waited for,
            in case a notification was missed.
        connect_timeout: seconds to wait for a new connection.
        max_payload_bytes, max_payload_depth: as for the orchestrator.
        tracing: start a ``submit`` span per submission and store its trace
            context with the jobs, when the ``opentelemetry`` package is
            installed (the ``otel`` extra); see ``orchestrator._tracing``.
        tracer_provider: where those spans go (default: the global provider).

    Raises:
        MissingDatabaseUrl: neither ``database_url`` nor the environment names
            a database.
        InvalidInput: the URL is not a well-formed ``postgresql://`` URL.
        ValueError: a bad schema name, pool size or poll interval.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        schema: str = "orchestrator",
        pool_size: int = 4,
        job_types: Mapping[str, Any] | None = None,
        poll_interval: float = 1.0,
        connect_timeout: float = 10.0,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_payload_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH,
        tracing: bool = True,
        tracer_provider: Any = None,
    ) -> None:
        self._payload_limits = PayloadLimits(max_payload_bytes, max_payload_depth)
        self._tracing_wanted = (tracing, tracer_provider)
        self._tracing: Tracing | None = None
        url = database_url or os.environ.get(DATABASE_URL_ENV)
        if not url:
            raise MissingDatabaseUrl(
                f"no database URL: pass database_url= or set {DATABASE_URL_ENV} "
                "(the client does not start an embedded PostgreSQL)"
            )
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.database_url = check_database_url(url)
        self.schema = schema
        self.poll_interval = poll_interval
        self._store = AsyncioStore(url, schema, pool_size, connect_timeout)
        self._kinds: dict[str, _KindSpec] | None = (
            {kind: _KindSpec(_as_adapter(t)) for kind, t in job_types.items()} if job_types is not None else None
        )
        self._waiters: Waiters[Watch] = Waiters(Watch)
        self._listener: DoneListener | None = None
        self._state = "new"

    @classmethod
    def from_orchestrator(
        cls,
        orch: Orchestrator,
        database_url: str | None = None,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        poll_interval: float | None = None,
        connect_timeout: float = 10.0,
    ) -> Self:
        """A client that checks payloads with ``orch``'s registered job types.

        Each registered kind's payload type, queue, priority and
        max_attempts become this client's; kinds ``orch`` has no handler
        for raise :class:`~orchestrator.UnknownJobKind`.

        Args:
            orch: the orchestrator whose workers will run the jobs. It need
                not be running.
            database_url: default ``orch.database_url``, then the environment.
            schema: default ``orch.schema``.
            poll_interval: default ``orch.poll_interval``.
        """
        client = cls(
            database_url or orch.database_url,
            schema=orch.schema if schema is None else schema,
            pool_size=pool_size,
            poll_interval=orch.poll_interval if poll_interval is None else poll_interval,
            connect_timeout=connect_timeout,
            job_types={},
            max_payload_bytes=orch.payload_limits.max_bytes,
            max_payload_depth=orch.payload_limits.max_depth,
        )
        definitions = [orch.registry.get(kind) for kind in orch.registry.kinds]
        client._kinds = {
            d.kind: _KindSpec(d.payload, queue=d.queue, priority=d.priority, max_attempts=d.max_attempts)
            for d in definitions
        }
        return client

    # -- lifetime ----------------------------------------------------------

    async def open(self) -> Self:
        """Connect (the pool's first connection is made here).

        Returns:
            The client itself.

        Raises:
            DatabaseUnavailable: the server cannot be reached.
            RuntimeError: the client was opened before.
        """
        if self._state != "new":
            raise RuntimeError(f"this client is {self._state}; a client opens once")
        await self._store.open()
        self._tracing = load_tracing(*self._tracing_wanted)
        self._listener = DoneListener(self._store, self._waiters)
        self._state = "open"
        return self

    async def close(self) -> None:
        """Disconnect. Waits in progress raise :class:`ClientNotOpen`.

        Calling it again, or on a client never opened, does nothing.
        """
        if self._state != "open":
            self._state = "closed"
            return
        self._state = "closed"
        listener, self._listener = self._listener, None
        self._waiters.notify_all()
        if listener is not None:
            await listener.close()
        await self._store.close()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        """Whether the client is between :meth:`open` and :meth:`close`."""
        return self._state == "open"

    @property
    def kinds(self) -> builtins.list[str] | None:
        """The kinds this client accepts, or ``None`` when it accepts any."""
        return None if self._kinds is None else sorted(self._kinds)

    @property
    def store(self) -> AsyncioStore:
        """The open store (statement counts, for tests and benchmarks)."""
        return self._require_store()

    def _require_store(self) -> AsyncioStore:
        if self._state != "open":
            raise ClientNotOpen(
                "use the client inside `async with Client(...) as client:` (or after `await client.open()`)"
                if self._state == "new"
                else "the client is closed"
            )
        return self._store

    def _spec(self, kind: str) -> _KindSpec:
        if self._kinds is None:
            return _ANY_PAYLOAD
        try:
            return self._kinds[kind]
        except KeyError:
            raise UnknownJobKind(f"unknown job kind {quote_prefix(kind)} (registered: {known_kinds(sorted(self._kinds))})") from None

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
            delay: seconds before the job may run.
            priority, max_attempts, queue: default to the kind's registered
                values (with :meth:`from_orchestrator`), else 0, 1 and
                ``"default"``.
            unique_key: while a job of this kind with this key is queued or
                active in the owner's organisation, return it instead of
                queueing a duplicate.

        Raises:
            UnknownJobKind: the client knows job types and not this one.
            pydantic.ValidationError: the payload does not fit the kind's
                type; the error names the field. Nothing is written.
            DatabaseUnavailable: the server cannot be reached.
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
        payload rejects the whole batch. Arguments and exceptions are as
        for :meth:`submit`, with one unique key (or ``None``) per payload.
        """
        store = self._require_store()
        spec = self._spec(check_name("kind", kind))
        return await operations.submit_jobs(
            store,
            kind=kind,
            payload_type=spec.payload,
            payloads=payloads,
            owner=owner,
            queue=spec.queue if queue is None else queue,
            priority=spec.priority if priority is None else priority,
            max_attempts=spec.max_attempts if max_attempts is None else max_attempts,
            delay=delay,
            unique_keys=unique_keys,
            limits=self._payload_limits,
            single=single,
            tracing=self._tracing,
        )

    # -- reading -----------------------------------------------------------

    async def get(self, job_id: uuid.UUID | str, *, by: Principal) -> JobRecord:
        """The job as stored now.

        Raises:
            InvalidJobId: ``job_id`` is not a UUID.
            JobNotFound: no such job in ``by``'s organisation.
        """
        return await operations.get_job(self._require_store(), parse_job_id(job_id), by)

    async def wait(self, job_id: uuid.UUID | str, *, by: Principal, timeout: float | None = None) -> JobRecord:
        """Return the job once it is completed, failed or cancelled.

        Raises:
            JobNotFound, InvalidJobId: as :meth:`get`.
            TimeoutError: ``timeout`` seconds passed first.
            ClientNotOpen: the client was closed meanwhile.
        """
        [record] = await self.wait_many([job_id], by=by, timeout=timeout)
        return record

    async def wait_many(
        self, job_ids: Iterable[uuid.UUID | str], *, by: Principal, timeout: float | None = None
    ) -> builtins.list[JobRecord]:
        """Return the jobs, in the order given, once every one is terminal.

        Wakes on the notification a job's end sends on the schema's ``done``
        channel, and re-reads the jobs still pending at least every
        ``poll_interval`` seconds in case a notification was missed. While
        the database is unreachable it keeps trying (within ``timeout``).

        Raises:
            JobNotFound, InvalidJobId: as :meth:`get`, for any of the ids.
            TimeoutError: ``timeout`` seconds passed first.
            ClientNotOpen: the client was closed meanwhile.
        """
        store = self._require_store()
        ids = [parse_job_id(j) for j in job_ids]
        done: dict[uuid.UUID, JobRecord] = {}
        pending = set(ids)
        async with asyncio.timeout(timeout):
            with self._waiters.watch(*pending) as watch:
                # Listen before the first read: a job ending after it is
                # then announced to this watch.
                if self._listener is not None:
                    await self._listener.ensure_started()
                to_read: set[uuid.UUID] | None = pending
                backoff = 0.05
                while pending:
                    self._require_store()
                    try:
                        # Re-read only the jobs hinted at, unless a quiet
                        # poll interval passed: then every pending one.
                        ended = await operations.read_terminal(
                            store, by, pending if to_read is None else to_read & pending
                        )
                    except DatabaseUnavailable as exc:
                        self._require_store()
                        logger.warning("database unavailable (%s); retrying a wait in %.2fs", exc, backoff)
                        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                        backoff = min(5.0, backoff * 2)
                        to_read = None
                        continue
                    backoff = 0.05
                    done.update(ended)
                    pending.difference_update(ended)
                    if pending:
                        to_read = await watch.wait_changed(self.poll_interval)
        return [done[jid] for jid in ids]

    # -- cancelling --------------------------------------------------------

    async def cancel(self, job_id: uuid.UUID | str, *, by: Principal) -> CancelOutcome:
        """Cancel a queued or running job; return once it is terminal.

        A queued job is cancelled by one guarded update. A running one gets
        a durable cancel request; the daemon running it cancels the handler
        and persists ``cancelled``, unless the job ended first, which the
        outcome then says (``cancelled=False`` with the reason).

        Raises:
            NotAuthorized: ``by`` is neither the owner nor an admin of the
                job's organisation. Nothing changes.
            JobNotFound, InvalidJobId: as :meth:`get`.
        """
        return await operations.cancel_job(
            self._require_store(),
            parse_job_id(job_id),
            by,
            clock=_utc_now,
            wait_terminal=lambda j: self.wait(j, by=by),
        )

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
