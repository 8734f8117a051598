"""What ``submit``, ``get``, ``cancel`` and ``wait`` do, on any event loop.

These coroutines await only the store object they are given, so the trio
orchestrator and the plain-asyncio client share them (and the SQL behind
them) instead of each keeping its own copy of the rules.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ._auth import authorize_cancel, visible_row
from pydantic import TypeAdapter

from ._errors import InvalidInput, OrchestratorError, quote_prefix
from ._lifecycle import Applied, Cancel, JobState, transition
from ._models import CancelOutcome, JobRecord, Principal
from ._port import ProducerPort as JobStore
from ._tracing import Tracing, submitting
from ._port import Row
from ._validation import (
    PayloadLimits,
    check_list_limit,
    check_optional_name,
    check_submission,
    encode_payload,
)

#: How many times ``cancel`` re-reads a job that moved under it.
CANCEL_ROUNDS = 20


def check_owner(owner: Any) -> Principal:
    """The owner of new jobs: a :class:`Principal`.

    Raises:
        InvalidInput: naming ``owner``.
    """
    if not isinstance(owner, Principal):
        raise InvalidInput("owner", f"must be a Principal, got {type(owner).__name__}")
    return owner


async def submit_jobs(
    store: JobStore,
    *,
    kind: str,
    payload_type: TypeAdapter[Any],
    payloads: Iterable[Any],
    owner: Principal,
    queue: str,
    priority: int,
    max_attempts: int,
    delay: float,
    unique_keys: Sequence[str | None] | None = None,
    limits: PayloadLimits = PayloadLimits(),
    single: bool = False,
    tracing: Tracing | None = None,
) -> list[JobRecord]:
    """Check a submission at the boundary, then insert it in one statement.

    Every option and payload is checked before anything is written: one bad
    value refuses the whole batch. One record per payload, in order; a
    payload with a ``unique_key`` that matches a queued or active job of
    the same kind in the same organisation yields that job instead of a new
    one.

    Args:
        single: name a bad payload ``payload`` (for ``submit``) rather than
            ``payloads[i]``.
        tracing: where the ``submit`` span starts; its context is stored
            with the jobs (see ``_tracing``).

    Raises:
        InvalidInput: naming the bad option or payload field.
        pydantic.ValidationError: a payload does not fit ``payload_type``.
    """
    owner = check_owner(owner)
    try:
        given = list(payloads)
    except TypeError:
        raise InvalidInput("payloads", f"must be an iterable of payloads, got {type(payloads).__name__}") from None
    options = check_submission(
        kind=kind,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        delay=delay,
        unique_keys=unique_keys,
        count=len(given),
    )
    if not given:
        return []
    with submitting(tracing, options.kind, options.queue, len(given)) as submission:
        payloads_json = [
            encode_payload(payload_type, p, limits, field="payload" if single else f"payloads[{i}]")
            for i, p in enumerate(given)
        ]
        job_ids = [uuid.uuid4() for _ in payloads_json]
        rows = await store.submit(
            kind=options.kind,
            queue=options.queue,
            owner_user_id=owner.user_id,
            owner_org_id=owner.org_id,
            priority=options.priority,
            max_attempts=options.max_attempts,
            delay=options.delay,
            job_ids=job_ids,
            payloads_json=payloads_json,
            unique_keys=options.unique_keys,
            trace_context=submission.trace_context,
        )
        records = _records(rows, job_ids, options.unique_keys)
        submission.stored(records)
    return records


def _records(
    rows: Sequence[Mapping[str, Any]], job_ids: Sequence[uuid.UUID], keys: Sequence[str | None]
) -> list[JobRecord]:
    """One record per submitted job, in order: the row inserted, or the live
    job its unique key matched."""
    by_id = {r["job_id"]: r for r in rows}
    by_key = {r["unique_key"]: r for r in rows if r["unique_key"] is not None}
    records = []
    for job_id, key in zip(job_ids, keys):
        row = by_id.get(job_id) or (by_key.get(key) if key is not None else None)
        if row is None:
            raise OrchestratorError(f"job with unique key {quote_prefix(key)} was neither inserted nor found; submit again")
        records.append(JobRecord.from_row(row))
    return records


async def get_job(store: JobStore, job_id: uuid.UUID, by: Principal) -> JobRecord:
    """The job as stored now, if ``by`` may see it."""
    return JobRecord.from_row(visible_row(by, job_id, await store.get_job(job_id, by.org_id)))


async def list_jobs(
    store: JobStore,
    by: Principal,
    *,
    state: JobState | str | None = None,
    kind: str | None = None,
    queue: str | None = None,
    owner: str | None = None,
    limit: int = 100,
) -> list[JobRecord]:
    """Jobs of ``by``'s organisation, newest first, filtered."""
    status = check_state(state).value if state is not None else None
    rows = await store.list_jobs(
        by.org_id,
        status=status,
        kind=check_optional_name("kind", kind),
        queue=check_optional_name("queue", queue),
        owner=check_optional_name("owner", owner),
        limit=check_list_limit(limit),
    )
    return [JobRecord.from_row(r) for r in rows]


async def read_terminal(
    store: JobStore, by: Principal, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, JobRecord]:
    """The jobs among ``job_ids`` that are terminal now.

    Raises:
        JobNotFound: one of them does not exist for ``by``.
    """
    batch = sorted(job_ids)
    rows = {r["job_id"]: r for r in await store.get_jobs(batch)} if batch else {}
    done = {}
    for jid in batch:
        record = JobRecord.from_row(visible_row(by, jid, rows.get(jid)))
        if record.is_terminal:
            done[jid] = record
    return done


async def cancel_job(
    store: JobStore,
    job_id: uuid.UUID,
    by: Principal,
    *,
    clock: Callable[[], datetime],
    wait_terminal: Callable[[uuid.UUID], Awaitable[JobRecord]],
    deliver_locally: Callable[[uuid.UUID], object] | None = None,
    cancelled_queued: Callable[[Row], object] | None = None,
) -> CancelOutcome:
    """Cancel a queued or running job; return once it is terminal.

    A queued job is cancelled by one guarded update (``cancelled_queued``
    is then called with its row: the caller's metrics count it). A running one gets a
    durable cancel request (announced to every node); the node running it
    cancels the handler and persists ``cancelled``, unless the job ended
    first, which the outcome then says.
    """
    for _ in range(CANCEL_ROUNDS):
        row = visible_row(by, job_id, await store.get_job(job_id, by.org_id))
        authorize_cancel(by, row)
        record = JobRecord.from_row(row)
        if record.is_terminal:
            return refused(record)
        if record.state is JobState.QUEUED:
            decision = transition(record.snapshot(), Cancel(clock()))
            assert isinstance(decision, Applied) and decision.after.completed_at is not None
            cancelled = await store.cancel_queued(
                job_id, started_at=record.started_at, completed_at=decision.after.completed_at, by=by.user_id
            )
            if cancelled is not None:
                if cancelled_queued is not None:
                    cancelled_queued(cancelled)
                return CancelOutcome(job_id=job_id, cancelled=True, state=JobState.CANCELLED)
            continue
        if await store.request_cancel(job_id, by=by.user_id):
            if deliver_locally is not None:
                deliver_locally(job_id)
            final = await wait_terminal(job_id)
            if final.state is JobState.CANCELLED:
                return CancelOutcome(job_id=job_id, cancelled=True, state=final.state)
            return refused(final)
    raise OrchestratorError(f"job {job_id} kept changing state; cancel gave up after {CANCEL_ROUNDS} rounds")


def check_state(state: JobState | str) -> JobState:
    """A state filter.

    Raises:
        InvalidInput: naming ``state`` and the states there are.
    """
    try:
        return JobState(state)
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise InvalidInput("state", f"must be one of {allowed}, got {quote_prefix(state)}") from None


def refused(record: JobRecord) -> CancelOutcome:
    """The outcome for a job that ended before a cancel could apply."""
    return CancelOutcome(
        job_id=record.id, cancelled=False, state=record.state, reason=f"already {record.state.value}"
    )
