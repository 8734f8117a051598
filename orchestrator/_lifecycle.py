"""The job lifecycle as a pure state machine: states, events, transitions.

Nothing here does I/O. The job actor feeds events into :func:`transition`
and persists the snapshot it returns; the database guards repeat the same
rules (expected prior status, lease token), so a bug on either side is
caught by the other.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

#: The smallest step PostgreSQL's ``timestamptz`` can represent.
TICK = timedelta(microseconds=1)


class JobState(str, enum.Enum):
    """Where a job is in its life. Terminal states are absorbing."""

    QUEUED = "queued"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The lifecycle fields of one job, as persisted."""

    state: JobState
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_at: datetime | None = None
    result: Any = None
    error: Any = None

    @property
    def latest_timestamp(self) -> datetime:
        """The newest timestamp of this job: the floor for the next stamp."""
        stamps = [t for t in (self.created_at, self.started_at, self.completed_at) if t is not None]
        return max(stamps)


# Events. Each carries the clock reading of whoever produced it; the machine
# turns readings into monotonic stamps.


@dataclass(frozen=True, slots=True)
class Start:
    """The node holding the lease starts an attempt."""

    now: datetime


@dataclass(frozen=True, slots=True)
class Succeed:
    """The handler returned."""

    now: datetime
    result: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    """The handler raised or ran over its timeout.

    Attributes:
        retry_at: when a retry would run; ``None`` means the failure is not
            retryable, whatever attempts remain.
    """

    now: datetime
    error: Any
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """An authorised principal cancels the job."""

    now: datetime


@dataclass(frozen=True, slots=True)
class Release:
    """The node stops and gives the running job back to the queue.

    The attempt did not fail, so it is not counted: ``attempt`` stays.
    """

    now: datetime


Event: TypeAlias = Start | Succeed | Fail | Cancel | Release


@dataclass(frozen=True, slots=True)
class Applied:
    """The event moved the job; ``after`` is the snapshot to persist."""

    before: Snapshot
    after: Snapshot


@dataclass(frozen=True, slots=True)
class Rejected:
    """The event does not apply in the job's state; nothing changes."""

    state: JobState
    reason: str


Decision: TypeAlias = Applied | Rejected


def stamp(now: datetime, previous: datetime) -> datetime:
    """A timestamp that is never earlier than ``previous + 1 µs``.

    Clocks jump backwards and nodes disagree; taking the maximum keeps each
    job's timestamps strictly ordered whatever the clock says.
    """
    floor = previous + TICK
    return now if now >= floor else floor


def rejection_reason(state: JobState) -> str:
    """The reason given when an event reaches a job in ``state``."""
    if state.is_terminal:
        return f"already {state.value}"
    return f"not allowed while {state.value}"


def transition(job: Snapshot, event: Event) -> Decision:
    """Apply ``event`` to ``job`` following the allowed moves.

    ``queued -> active -> completed | failed | cancelled``,
    ``queued -> cancelled``, ``active -> queued`` for a retry (attempt + 1)
    and ``active -> queued`` when the node releases the job (attempt kept).
    """
    state = job.state
    if state.is_terminal:
        return Rejected(state, rejection_reason(state))
    floor = job.latest_timestamp
    match event:
        case Start(now=now) if state is JobState.QUEUED:
            after = dataclasses.replace(
                job, state=JobState.ACTIVE, started_at=stamp(now, floor), completed_at=None
            )
        case Succeed(now=now, result=result) if state is JobState.ACTIVE:
            after = dataclasses.replace(
                job, state=JobState.COMPLETED, completed_at=stamp(now, floor), result=result
            )
        case Fail(now=now, error=error, retry_at=retry_at) if state is JobState.ACTIVE:
            if retry_at is not None and job.attempt < job.max_attempts:
                after = dataclasses.replace(
                    job,
                    state=JobState.QUEUED,
                    attempt=job.attempt + 1,
                    run_at=retry_at,
                    error=error,
                )
            else:
                after = dataclasses.replace(
                    job, state=JobState.FAILED, completed_at=stamp(now, floor), error=error
                )
        case Release(now=now) if state is JobState.ACTIVE:
            after = dataclasses.replace(job, state=JobState.QUEUED, run_at=now)
        case Cancel(now=now):
            after = dataclasses.replace(job, state=JobState.CANCELLED, completed_at=stamp(now, floor))
        case _:
            return Rejected(state, rejection_reason(state))
    return Applied(job, after)
