"""A claimed job as the hot path sees it: a small tuple, no pydantic.

The claim statement (``claim_jobs``) marks the rows ``active`` and returns
only the columns a job actor needs. Decoding them into a pydantic
:class:`~orchestrator.JobRecord` per job would cost more than the rest of the
actor's bookkeeping; the record is built only if a handler asks for
``ctx.job``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from ._lifecycle import JobState, Snapshot
from ._models import JobRecord, Owner


class ClaimedJob(NamedTuple):
    """One row of ``claim_jobs``: a job this node now runs (status ``active``).

    ``previous_started_at`` is the row's ``started_at`` before this claim
    (``None`` on a first attempt), so that a claim this node gives back
    without starting it (``release_unstarted``) leaves the row as it was.
    """

    id: uuid.UUID
    kind: str
    queue: str
    payload: Any
    owner_user_id: str
    owner_org_id: str
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime
    progress: float
    error: Any
    cancel_requested: bool
    lease_token: int
    previous_started_at: datetime | None
    #: The submitter's trace context (see ``_tracing``); ``None``: untraced.
    trace_context: Mapping[str, str] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClaimedJob:
        return cls(
            row["job_id"], row["kind"], row["queue"], row["payload"], row["owner_user_id"],
            row["owner_org_id"], row["priority"], row["attempt"], row["max_attempts"], row["run_at"],
            row["created_at"], row["started_at"], row["progress"], row["error"], row["cancel_requested"],
            row["lease_token"], row["previous_started_at"], row["trace_context"],
        )  # fmt: skip

    def snapshot(self) -> Snapshot:
        """The lifecycle fields as the claim left them, for the state machine."""
        return Snapshot(
            state=JobState.ACTIVE,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            created_at=self.created_at,
            started_at=self.started_at,
            run_at=self.run_at,
            error=self.error,
        )

    def record(self) -> JobRecord:
        """The job as a public record, as it stood when this attempt was claimed."""
        return JobRecord(
            id=self.id,
            kind=self.kind,
            queue=self.queue,
            state=JobState.ACTIVE,
            owner=Owner(user_id=self.owner_user_id, org_id=self.owner_org_id),
            priority=self.priority,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            payload=self.payload,
            run_at=self.run_at,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=None,
            progress=self.progress,
            # Only a completed job has a result, and a claimed job is not one.
            result=None,
            error=self.error,
            cancel_requested=self.cancel_requested,
        )
