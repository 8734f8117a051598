"""The store in memory: the statements of ``sql/queries.sql``, without PostgreSQL.

For unit tests of the job actor, the transition writer and the dispatcher
(the port is :mod:`orchestrator._port`). Each method repeats the guards of
its SQL statement (expected status, lease token, pending cancel request),
the CHECK constraints of ``job_status`` that a worker's writes can break
(``job_status_timestamps_check`` and its siblings, raised as
:class:`StoreError` naming the constraint, the statement rolled back), and
the notifications the statements send. Time is the injected ``clock``: the
database's clock, which judges lease expiry and stamps what the SQL stamps
with ``clock_timestamp()``.

Faults can be injected: :meth:`MemoryStore.go_away` makes every statement
raise :class:`DatabaseUnavailable` (as the SQL adapter does for a dropped
connection) until :meth:`MemoryStore.come_back`; :meth:`MemoryStore.lose_ack`
lets the next run of a statement commit and then raises
:class:`DatabaseUnavailable`, as when the connection drops before the answer
arrives; :meth:`MemoryStore.refuse` makes the next run of a statement fail
with :class:`StoreError`, changing nothing, as PostgreSQL refusing it.

Not modelled: malformed rows from before migration 0004 (every row here is
written through the validation boundary, so ``quarantine_malformed`` finds
none), SQL-level locking (each statement runs alone, as if serialised),
migrations, tokens, the dashboard's statements, and the bounds of
PostgreSQL's types.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import trio

from ._errors import DatabaseUnavailable, StoreError
from ._port import Row
from ._metrics import Metrics
from ._store import TransitionRow

_TICK = timedelta(microseconds=1)
_LIVE = ("queued", "active")
_TERMINAL = ("completed", "failed", "cancelled")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _jsonb(value: Any, column: str) -> Any:
    """``value`` as it comes back from a jsonb column (tuples become lists),
    or the error PostgreSQL gives for what jsonb cannot hold."""
    if value is None:
        return None
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"PostgreSQL rejected a statement: invalid {column}: {exc}", sqlstate="22P02") from exc


def _jsonb_text(text: str, column: str) -> Any:
    """JSON ``text`` as it comes back from a jsonb column, or the error
    PostgreSQL gives for text that is not JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StoreError(f"PostgreSQL rejected a statement: invalid input syntax for type json: {exc}", sqlstate="22P02") from exc


@dataclass(slots=True)
class JobRow:
    """One row of ``job_status``."""

    job_id: uuid.UUID
    kind: str
    queue: str
    payload: Any
    owner_user_id: str
    owner_org_id: str
    priority: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    unique_key: str | None = None
    status: str = "queued"
    attempt: int = 1
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_node: str | None = None
    lease_token: int | None = None
    lease_expires_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    progress: float = 0.0
    result: Any = None
    error: Any = None
    rescued_from: str | None = None
    trace_context: dict[str, str] | None = None

    def as_row(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def broken_constraint(self) -> str | None:
        """The CHECK of migration 0001 this row breaks, if any (NULL passes, as in SQL)."""
        if self.started_at is not None and self.started_at < self.created_at:
            return "job_status_timestamps_check"
        if self.completed_at is not None and self.started_at is not None and self.completed_at < self.started_at:
            return "job_status_timestamps_check"
        if self.completed_at is not None and self.completed_at < self.created_at:
            return "job_status_completed_after_created_check"
        if (self.status in _TERMINAL) != (self.completed_at is not None):
            return "job_status_terminal_timestamps_check"
        if self.status in ("active", "completed") and self.started_at is None:
            return "job_status_started_check"
        if self.status == "active" and self.lease_token is None:
            return "job_status_active_lease_check"
        if self.attempt > self.max_attempts or self.attempt < 1:
            return "job_status_attempts_check"
        if not 0.0 <= self.progress <= 1.0:
            return "job_status_progress_check"
        return None


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of a job's status or cancel request, for tests
    that check the history (which moves happened, who asked for a cancel)."""

    statement: str
    job_id: uuid.UUID
    before: str
    after: str
    attempt: int
    by: str | None = None


@dataclass(slots=True)
class _Node:
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None


@dataclass(slots=True)
class _Statement:
    """One statement's changes, applied only if it commits."""

    name: str
    changed: dict[uuid.UUID, JobRow] = field(default_factory=dict)
    notices: list[tuple[str, str]] = field(default_factory=list)


class MemoryStore:
    """The job statements over a dict of rows; see the module docstring.

    Args:
        clock: the database's clock (an aware datetime); a test makes it
            follow trio's ``MockClock`` to judge lease expiry.
    """

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self.clock = clock
        self.metrics = Metrics()
        self.jobs: dict[uuid.UUID, JobRow] = {}
        self.nodes: dict[str, _Node] = {}
        #: Every committed change of status or cancel request, in order.
        self.history: list[Change] = []
        #: The constraints statements broke (each statement was refused).
        self.refused: list[str] = []
        #: Statements run, by name (as the SQL adapters count them).
        self.statements: dict[str, int] = {}
        self._token = 0
        self._down = False
        self._lost_acks: dict[str, int] = {}
        self._refusals: dict[str, int] = {}
        self._listeners: list[tuple[dict[str, str], trio.MemorySendChannel[tuple[str, str]]]] = []
        self._changed = trio.Event()

    # -- faults ------------------------------------------------------------

    def go_away(self) -> None:
        """Every statement raises :class:`DatabaseUnavailable` from now on,
        and listeners lose their connection."""
        self._down = True
        for _, send in self._listeners:
            send.close()
        self._listeners.clear()

    def come_back(self) -> None:
        """Statements run again."""
        self._down = False

    def clear_faults(self) -> None:
        """The database is back and no acknowledgement will be lost."""
        self._down = False
        self._lost_acks.clear()
        self._refusals.clear()

    @property
    def is_down(self) -> bool:
        return self._down

    def lose_ack(self, statement: str, times: int = 1) -> None:
        """The next ``times`` runs of ``statement`` commit, then raise
        :class:`DatabaseUnavailable` instead of answering."""
        self._lost_acks[statement] = self._lost_acks.get(statement, 0) + times

    def refuse(self, statement: str, times: int = 1) -> None:
        """The next ``times`` runs of ``statement`` fail with
        :class:`StoreError` and change nothing."""
        self._refusals[statement] = self._refusals.get(statement, 0) + times

    def expire_lease(self, job_id: uuid.UUID) -> None:
        """Make the job's lease run out now, as if its node had stalled past it."""
        job = self.jobs[job_id]
        if job.lease_expires_at is not None:
            job.lease_expires_at = self.clock() - _TICK

    # -- inspection (no statement, no fault) ---------------------------------

    def peek(self, job_id: uuid.UUID) -> JobRow | None:
        """The row as it stands, bypassing faults: for a test's checks."""
        return self.jobs.get(job_id)

    def changed(self) -> trio.Event:
        """An event set by the next commit that changes any job (take it
        before reading, so that a commit meanwhile is not missed)."""
        return self._changed

    # -- the statement machinery ---------------------------------------------

    def _begin(self, name: str) -> _Statement:
        self.statements[name] = self.statements.get(name, 0) + 1
        if self._down:
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: the memory store is down ({name})")
        refusals = self._refusals.get(name, 0)
        if refusals:
            self._refusals[name] = refusals - 1
            raise StoreError(f"PostgreSQL rejected a statement: {name} refused (injected)", sqlstate="XX000")
        return _Statement(name)

    def _stage(self, statement: _Statement, job: JobRow) -> JobRow:
        """A copy of ``job`` that the statement may change."""
        staged = statement.changed.get(job.job_id)
        if staged is None:
            staged = statement.changed[job.job_id] = dataclasses.replace(job)
        return staged

    def _commit(self, statement: _Statement, by: str | None = None) -> None:
        """Check the constraints, apply the statement, announce it; or roll it back.

        Raises:
            StoreError: a changed row breaks a CHECK (nothing is applied).
            DatabaseUnavailable: the acknowledgement is to be lost (the
                changes are applied).
        """
        for row in statement.changed.values():
            constraint = row.broken_constraint()
            if constraint is not None:
                self.refused.append(constraint)
                raise StoreError(
                    f'PostgreSQL rejected a statement: CheckViolationError: new row for relation "job_status"'
                    f' violates check constraint "{constraint}"',
                    sqlstate="23514",
                    constraint=constraint,
                )
        finished, moved = [], []
        for job_id, row in statement.changed.items():
            old = self.jobs.get(job_id)
            before = old.status if old is not None else ""
            if before != row.status or (old is not None and old.cancel_requested_at != row.cancel_requested_at):
                self.history.append(
                    Change(statement.name, job_id, before, row.status, row.attempt,
                           by if old is not None and old.cancel_requested_by != row.cancel_requested_by else None)
                )  # fmt: skip
            if row.status in _TERMINAL and before not in _TERMINAL:
                finished.append(str(job_id))
            if old is None or before != row.status or old.progress != row.progress or old.attempt != row.attempt:
                moved.append(str(job_id))
            self.jobs[job_id] = row
        if finished:
            statement.notices.append(("done", ",".join(finished)))
        if moved:
            statement.notices.append(("events", ",".join(moved)))
        self._notify(statement.notices)
        if statement.changed:
            self._changed.set()
            self._changed = trio.Event()
        lost = self._lost_acks.get(statement.name, 0)
        if lost:
            self._lost_acks[statement.name] = lost - 1
            raise DatabaseUnavailable(f"PostgreSQL is unreachable: connection lost after {statement.name} committed")

    def _notify(self, notices: Sequence[tuple[str, str]]) -> None:
        for by_channel, send in list(self._listeners):
            for name, payload in notices:
                if name in by_channel:
                    try:
                        send.send_nowait((name, payload))
                    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                        pass

    async def _answer(self) -> None:
        # Every statement is a round trip: other tasks run meanwhile.
        await trio.lowlevel.checkpoint()

    def _next_token(self) -> int:
        self._token += 1
        return self._token

    def _start_floor(self, job: JobRow, now: datetime) -> datetime:
        """``greatest(clock_timestamp(), COALESCE(started_at, created_at) + 1 µs)``."""
        floor = (job.started_at or job.created_at) + _TICK
        return now if now >= floor else floor

    # -- the producer's statements -------------------------------------------

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
    ) -> list[Row]:
        """``submit_jobs``: insert queued jobs; a live job with the same
        unique key (organisation, kind) is returned instead of a new one."""
        statement = self._begin("submit_jobs")
        now = self.clock()
        taken = {
            j.unique_key: j
            for j in self.jobs.values()
            if j.unique_key is not None and j.status in _LIVE and j.owner_org_id == owner_org_id and j.kind == kind
        }
        inserted: list[JobRow] = []
        matched: list[JobRow] = []
        for job_id, payload, key in zip(job_ids, payloads_json, unique_keys):
            if key is not None and key in taken:
                if taken[key] not in matched and taken[key] not in inserted:
                    matched.append(taken[key])
                continue
            job = JobRow(
                job_id=job_id, kind=kind, queue=queue, payload=_jsonb_text(payload, "payload"),
                owner_user_id=owner_user_id, owner_org_id=owner_org_id, priority=priority,
                max_attempts=max_attempts, run_at=now + timedelta(seconds=delay), created_at=now, unique_key=key,
                trace_context=None if trace_context is None else dict(trace_context),
            )  # fmt: skip
            statement.changed[job_id] = job
            inserted.append(job)
            if key is not None:
                taken[key] = job
        if inserted:
            # The insert trigger's notification: dispatchers claim.
            statement.notices.append(("jobs", ""))
        self._commit(statement)
        await self._answer()
        return [j.as_row() for j in inserted + matched]

    async def get_job(self, job_id: uuid.UUID, org_id: str) -> Row | None:
        """``get_job``: one job, only within ``org_id``."""
        self._begin("get_job")
        job = self.jobs.get(job_id)
        await self._answer()
        return job.as_row() if job is not None and job.owner_org_id == org_id else None

    async def get_job_any(self, job_id: uuid.UUID) -> Row | None:
        """``get_job_any``: one job, whatever its organisation."""
        self._begin("get_job_any")
        job = self.jobs.get(job_id)
        await self._answer()
        return job.as_row() if job is not None else None

    async def get_jobs(self, job_ids: Sequence[uuid.UUID]) -> list[Row]:
        """``get_jobs``: the jobs among ``job_ids`` that exist."""
        self._begin("get_jobs")
        rows: list[Row] = [self.jobs[j].as_row() for j in dict.fromkeys(job_ids) if j in self.jobs]
        await self._answer()
        return rows

    async def list_jobs(
        self, org_id: str, *, status: str | None, kind: str | None, queue: str | None, owner: str | None, limit: int
    ) -> list[Row]:
        """``list_jobs`` (first page): an organisation's jobs, newest first, filtered."""
        self._begin("list_jobs")
        jobs = [
            j
            for j in self.jobs.values()
            if j.owner_org_id == org_id
            and (status is None or j.status == status)
            and (kind is None or j.kind == kind)
            and (queue is None or j.queue == queue)
            and (owner is None or j.owner_user_id == owner)
        ]
        jobs.sort(key=lambda j: (j.created_at, j.job_id), reverse=True)
        await self._answer()
        return [j.as_row() for j in jobs[:limit]]

    async def cancel_queued(
        self, job_id: uuid.UUID, *, started_at: datetime | None, completed_at: datetime, by: str
    ) -> Row | None:
        """``cancel_queued``: cancel a queued job, guarded by status and by
        the ``started_at`` the stamp was computed from."""
        statement = self._begin("cancel_queued")
        job = self.jobs.get(job_id)
        row = None
        if job is not None and job.status == "queued" and job.started_at == started_at:
            staged = self._stage(statement, job)
            staged.status = "cancelled"
            staged.completed_at = staged.cancel_requested_at = completed_at
            staged.cancel_requested_by = by
            row = staged
        self._commit(statement, by)
        await self._answer()
        return row.as_row() if row is not None else None

    async def request_cancel(self, job_id: uuid.UUID, *, by: str) -> bool:
        """``request_cancel``: record a cancel request on an active job and
        announce it on the ``cancel`` channel; the first request's time and
        author are kept."""
        statement = self._begin("request_cancel")
        job = self.jobs.get(job_id)
        requested = job is not None and job.status == "active"
        if job is not None and requested:
            staged = self._stage(statement, job)
            if staged.cancel_requested_at is None:
                staged.cancel_requested_at = self.clock()
                staged.cancel_requested_by = by
            statement.notices.append(("cancel", str(job_id)))
        self._commit(statement, by)
        await self._answer()
        return requested

    # -- the worker's statements ---------------------------------------------

    async def claim(
        self, *, kinds: Sequence[str], slots: Mapping[str, int], node: str, lease_seconds: float
    ) -> list[Row]:
        """``claim_jobs``: lease and start due jobs, at most ``slots[queue]``
        of each queue, by priority, then run_at, then id; the rows become
        ``active`` with ``started_at`` after their creation and previous start."""
        statement = self._begin("claim_jobs")
        rows = self._claim(statement, kinds, slots, node, lease_seconds)
        self._commit(statement)
        await self._answer()
        return rows

    def _claim(
        self,
        statement: _Statement,
        kinds: Sequence[str],
        slots: Mapping[str, int],
        node: str,
        lease_seconds: float,
        exclude: frozenset[uuid.UUID] = frozenset(),
    ) -> list[Row]:
        now = self.clock()
        rows: list[Row] = []
        for queue, wanted in slots.items():
            if wanted <= 0:
                continue
            # The statement's snapshot: rows it changed itself are not seen.
            due = [
                j
                for j in self.jobs.values()
                if j.status == "queued" and j.lease_token is None and j.queue == queue
                and j.run_at <= now and j.kind in kinds and j.job_id not in exclude
            ]  # fmt: skip
            due.sort(key=lambda j: (-j.priority, j.run_at, j.job_id))
            for job in due[:wanted]:
                previous = job.started_at
                staged = self._stage(statement, job)
                staged.status = "active"
                staged.started_at = self._start_floor(job, now)
                staged.lease_node = node
                staged.lease_token = self._next_token()
                staged.lease_expires_at = now + timedelta(seconds=lease_seconds)
                rows.append(
                    {
                        **{k: v for k, v in staged.as_row().items() if k in _CLAIMED_COLUMNS},
                        "cancel_requested": staged.cancel_requested_at is not None,
                        "previous_started_at": previous,
                    }
                )
        return rows

    async def next_due(self, *, kinds: Sequence[str], queues: Sequence[str]) -> float | None:
        """``next_due``: seconds until the next waiting job is due (negative
        when overdue); ``None`` when none waits."""
        self._begin("next_due")
        run_ats = [
            j.run_at
            for j in self.jobs.values()
            if j.status == "queued" and j.lease_token is None and j.kind in kinds and j.queue in queues
        ]
        await self._answer()
        if not run_ats:
            return None
        return (min(run_ats) - self.clock()).total_seconds()

    async def apply_transitions(self, rows: Sequence[TransitionRow]) -> set[uuid.UUID]:
        """``apply_transitions``: each row applies only if its job is in the
        expected status under the expected lease token; a move back to
        ``queued`` yields to a pending cancel request."""
        statement = self._begin("apply_transitions")
        applied = self._apply(statement, rows)
        self._commit(statement)
        await self._answer()
        return applied

    async def apply_transitions_and_claim(
        self,
        rows: Sequence[TransitionRow],
        *,
        kinds: Sequence[str],
        slots: Mapping[str, int],
        node: str,
        lease_seconds: float,
    ) -> tuple[set[uuid.UUID], list[Row]]:
        """``apply_transitions_and_claim``: ``apply_transitions``, then, only
        if every row taking its job off the node (next status not
        ``active``) applied, ``claim_jobs`` for ``slots``, never of the jobs
        the rows write; one statement: all of it commits, or none."""
        statement = self._begin("apply_transitions_and_claim")
        applied = self._apply(statement, rows)
        leaving = {t.job_id for t in rows if t.next != "active"}
        claimed: list[Row] = []
        if leaving <= applied:
            claimed = self._claim(statement, kinds, slots, node, lease_seconds, frozenset(t.job_id for t in rows))
        self._commit(statement)
        await self._answer()
        return applied, claimed

    def _apply(self, statement: _Statement, rows: Sequence[TransitionRow]) -> set[uuid.UUID]:
        applied: set[uuid.UUID] = set()
        for t in rows:
            job = self.jobs.get(t.job_id)
            if job is None or t.job_id in applied:
                # UPDATE ... FROM applies one row per job.
                continue
            if job.status != t.expected or job.lease_token != t.token:
                continue
            if t.next == "queued" and job.cancel_requested_at is not None:
                continue
            staged = self._stage(statement, job)
            staged.status = t.next
            staged.started_at = t.started_at if t.started_at is not None else job.started_at
            staged.completed_at = t.completed_at
            staged.run_at = t.run_at if t.run_at is not None else job.run_at
            staged.attempt = t.attempt if t.attempt is not None else job.attempt
            staged.progress = t.progress if t.progress is not None else job.progress
            staged.result = _jsonb(t.result, "result") if t.result is not None else job.result
            staged.error = _jsonb(t.error, "error") if t.error is not None else job.error
            if t.next == "queued":
                staged.lease_node = staged.lease_token = staged.lease_expires_at = None
            applied.add(t.job_id)
        return applied

    async def renew_leases(self, node: str, lease_seconds: float, tokens: Sequence[int]) -> dict[uuid.UUID, bool]:
        """``renew_leases``: mark the node alive and extend the leases it
        holds with ``tokens``; each job renewed, with whether a cancel was
        requested."""
        statement = self._begin("renew_leases")
        now = self.clock()
        held = set(tokens)
        if node in self.nodes:
            self.nodes[node].heartbeat_at = now
        renewed: dict[uuid.UUID, bool] = {}
        for job in self.jobs.values():
            if job.lease_node == node and job.lease_token in held and job.status in _LIVE:
                staged = self._stage(statement, job)
                staged.lease_expires_at = now + timedelta(seconds=lease_seconds)
                renewed[job.job_id] = job.cancel_requested_at is not None
        self._commit(statement)
        await self._answer()
        return renewed

    async def register_node(self, node: str, hostname: str, pid: int) -> None:
        """``register_node``: a daemon announces itself (again)."""
        self._begin("register_node")
        now = self.clock()
        self.nodes[node] = _Node(hostname, pid, now, now)
        await self._answer()

    async def stop_node(self, node: str) -> None:
        """``stop_node``: a daemon says it stopped."""
        self._begin("stop_node")
        if node in self.nodes:
            self.nodes[node].stopped_at = self.clock()
        await self._answer()

    async def rescue_expired(self, limit: int = 1000) -> list[Row]:
        """``rescue_expired``: jobs whose lease ran out go back to the queue
        (attempt + 1), or end ``failed`` when their attempts are used up, or
        ``cancelled`` when a cancel was requested; a queued one just loses
        the lease."""
        statement = self._begin("rescue_expired")
        now = self.clock()
        expired = [
            j
            for j in self.jobs.values()
            if j.status in _LIVE and j.lease_token is not None
            and j.lease_expires_at is not None and j.lease_expires_at < now
        ]  # fmt: skip
        expired.sort(key=lambda j: (j.lease_expires_at or now, j.job_id))
        rows: list[Row] = []
        for job in expired[:limit]:
            if job.status == "queued":
                outcome = "queued"
            elif job.cancel_requested_at is not None:
                outcome = "cancelled"
            elif job.attempt < job.max_attempts:
                outcome = "retry"
            else:
                outcome = "failed"
            staged = self._stage(statement, job)
            staged.status = "queued" if outcome == "retry" else outcome
            if outcome == "retry":
                staged.attempt += 1
                staged.run_at = now
            staged.completed_at = self._start_floor(job, now) if outcome in ("cancelled", "failed") else None
            if outcome != "queued":
                staged.error = {"type": "LeaseExpired", "message": f"node {job.lease_node} stopped renewing its lease"}
            staged.rescued_from = job.lease_node
            staged.lease_node = staged.lease_token = staged.lease_expires_at = None
            rows.append(
                {"job_id": job.job_id, "outcome": outcome, "rescued_from": job.lease_node, "kind": job.kind, "queue": job.queue}
            )
        self._commit(statement)
        await self._answer()
        return rows

    async def quarantine_malformed(self, limit: int = 1000) -> list[Row]:
        """``quarantine_malformed``: rows here pass the validation boundary,
        so none is malformed."""
        self._begin("quarantine_malformed")
        await self._answer()
        return []

    async def fail_unusable(self, failures: Sequence[tuple[uuid.UUID, int, str]]) -> set[uuid.UUID]:
        """``fail_unusable``: fail claimed jobs this node cannot run, guarded
        by their lease tokens."""
        statement = self._begin("fail_unusable")
        now = self.clock()
        failed: set[uuid.UUID] = set()
        for job_id, token, reason in failures:
            job = self.jobs.get(job_id)
            if job is None or job.status not in _LIVE or job.lease_token != token or job_id in failed:
                continue
            staged = self._stage(statement, job)
            staged.status = "failed"
            staged.completed_at = self._start_floor(job, now)
            staged.error = {"type": "InvalidJob", "message": reason}
            staged.lease_node = staged.lease_token = staged.lease_expires_at = None
            failed.add(job_id)
        self._commit(statement)
        await self._answer()
        return failed

    async def release_unstarted(
        self, jobs: Sequence[tuple[uuid.UUID, int, datetime | None]]
    ) -> set[uuid.UUID]:
        """``release_unstarted``: give back claimed jobs never started, with
        ``started_at`` as before the claim; not those with a cancel request."""
        statement = self._begin("release_unstarted")
        released: set[uuid.UUID] = set()
        for job_id, token, previous_started_at in jobs:
            job = self.jobs.get(job_id)
            if job is None or job.status != "active" or job.lease_token != token or job.cancel_requested_at is not None:
                continue
            staged = self._stage(statement, job)
            staged.status = "queued"
            staged.started_at = previous_started_at
            staged.lease_node = staged.lease_token = staged.lease_expires_at = None
            released.add(job_id)
        self._commit(statement)
        await self._answer()
        return released

    # -- notifications -----------------------------------------------------

    @asynccontextmanager
    async def listen(
        self, names: Sequence[str], *, buffer: int = 4096
    ) -> AsyncIterator[trio.MemoryReceiveChannel[tuple[str, str]]]:
        """Receive ``(name, payload)`` for notifications on these channels;
        the iteration ends when the store goes away (reconnect then)."""
        self._begin("listen")
        send, receive = trio.open_memory_channel[tuple[str, str]](buffer)
        entry = ({name: name for name in names}, send)
        self._listeners.append(entry)
        try:
            async with receive:
                yield receive
        finally:
            send.close()
            if entry in self._listeners:
                self._listeners.remove(entry)


#: The columns ``claim_jobs`` returns from the row (see ``ClaimedJob``).
_CLAIMED_COLUMNS = frozenset(
    {
        "job_id", "kind", "queue", "payload", "owner_user_id", "owner_org_id", "priority", "attempt",
        "max_attempts", "run_at", "created_at", "started_at", "progress", "error", "lease_token", "trace_context",
    }
)  # fmt: skip
