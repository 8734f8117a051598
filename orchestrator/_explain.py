"""``explain``: why a job is where it is, from the database alone.

One statement (``explain_job``) gathers the job's row and what surrounds it
(live nodes and their limits, the jobs ahead of it, its lease holder's
heartbeat), measured by the database's clock; :func:`decide` turns that into
a machine-readable reason and a sentence. The decision is pure, so the order
in which the reasons are considered is stated once, here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from ._auth import visible_row
from ._lifecycle import JobState
from ._models import Principal

Row = Mapping[str, Any]


class Reason(str, Enum):
    """Why a job is where it is (``Explanation.reason``)."""

    #: Queued, waiting for its ``run_at`` (a ``delay``).
    SCHEDULED = "scheduled"
    #: Queued again after a failed attempt, waiting out the backoff.
    RETRYING = "retrying"
    #: Due, but no live node runs its kind in its queue.
    NO_WORKER = "no_worker"
    #: Due, but every live node that could run it is at a limit.
    QUEUE_FULL = "queue_full"
    #: Due, behind due jobs of higher priority in its queue.
    BEHIND_HIGHER_PRIORITY = "behind_higher_priority"
    #: Due, behind due jobs of the same priority that were due earlier.
    BEHIND_EARLIER = "behind_earlier"
    #: Due, first in line, and a live node has room: the next claim takes it.
    READY = "ready"
    #: Claimed by a node that has not started it yet.
    CLAIMED = "claimed"
    #: Running on a node that keeps its lease.
    RUNNING = "running"
    #: Its node's lease ran out; a live node will rescue it.
    LEASE_EXPIRED = "lease_expired"
    #: Running; a cancel was requested and the node has not delivered it yet.
    CANCEL_REQUESTED = "cancel_requested"
    #: Completed, failed or cancelled: it will not move again.
    TERMINAL = "terminal"


class Explanation(BaseModel):
    """Why a job is where it is: ``reason`` for machines, ``message`` for people.

    Durations are seconds by the database's clock at ``checked_at``; fields
    that do not apply to the reason are ``None``.
    """

    model_config = ConfigDict(frozen=True)

    job_id: uuid.UUID
    kind: str
    queue: str
    state: JobState
    reason: Reason
    message: str
    checked_at: datetime
    attempt: int
    max_attempts: int
    priority: int
    run_at: datetime
    due_in_seconds: float | None = None
    lease_node: str | None = None
    heartbeat_age_seconds: float | None = None
    lease_expires_at: datetime | None = None
    lease_expires_in_seconds: float | None = None
    ahead: int | None = None
    ahead_higher_priority: int | None = None
    live_nodes: int
    nodes_running_kind: int
    nodes_serving_queue: int
    nodes_at_limit: int
    cancel_requested_at: datetime | None = None
    cancel_requested_by: str | None = None
    completed_at: datetime | None = None
    last_error: Any = None


class ExplainStore(Protocol):
    async def fetchrow(self, name: str, *args: Any) -> Row | None: ...


async def explain_job(store: ExplainStore, job_id: uuid.UUID, by: Principal) -> Explanation:
    """Why job ``job_id`` is where it is, if ``by`` may see it.

    Raises:
        JobNotFound: no such job in ``by``'s organisation.
    """
    row = visible_row(by, job_id, await store.fetchrow("explain_job", job_id, by.org_id))
    return decide(row)


def _seconds(value: float) -> str:
    """A duration for a sentence: ``42 s``, ``3.5 min``, ``2.0 h``, ``1.5 d``."""
    value = abs(value)
    if value < 120:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def describe_error(error: Any) -> str:
    """A stored error (``{"type", "message"}`` usually) in a few words."""
    if isinstance(error, Mapping):
        kind, message = error.get("type"), error.get("message")
        if kind and message:
            return f"{kind}: {message}"
        if kind or message:
            return str(kind or message)
    return "no error recorded" if error is None else str(error)


def _lease_words(row: Row) -> str:
    node = row["lease_node"]
    age = row["heartbeat_age_seconds"]
    if age is None:
        heard = "which has no node row"
    elif row["lease_node_stopped"]:
        heard = f"which stopped; its last heartbeat was {_seconds(age)} ago"
    else:
        heard = f"whose last heartbeat was {_seconds(age)} ago"
    return f"node {node} {heard}"


def _expiry_words(row: Row) -> str:
    left = row["lease_expires_in_seconds"]
    if left is None:
        return "its lease has no expiry"
    if left >= 0:
        return f"the lease expires in {_seconds(left)}"
    return f"the lease expired {_seconds(left)} ago"


def _attempt_words(row: Row) -> str:
    return f"attempt {row['attempt']} of {row['max_attempts']}"


def decide(row: Row) -> Explanation:
    """The explanation of an ``explain_job`` row."""
    reason, message = _reason(row)
    leased = row["lease_token"] is not None
    return Explanation(
        job_id=row["job_id"],
        kind=row["kind"],
        queue=row["queue"],
        state=JobState(row["status"]),
        reason=reason,
        message=message,
        checked_at=row["checked_at"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        priority=row["priority"],
        run_at=row["run_at"],
        due_in_seconds=row["due_in_seconds"] if reason in (Reason.SCHEDULED, Reason.RETRYING) else None,
        lease_node=row["lease_node"] if leased else None,
        heartbeat_age_seconds=row["heartbeat_age_seconds"] if leased else None,
        lease_expires_at=row["lease_expires_at"] if leased else None,
        lease_expires_in_seconds=row["lease_expires_in_seconds"] if leased else None,
        ahead=row["ahead"] if _is_waiting_due(row) else None,
        ahead_higher_priority=row["ahead_higher_priority"] if _is_waiting_due(row) else None,
        live_nodes=row["live_nodes"],
        nodes_running_kind=row["nodes_running_kind"],
        nodes_serving_queue=row["nodes_serving"],
        nodes_at_limit=row["nodes_at_limit"],
        cancel_requested_at=row["cancel_requested_at"],
        cancel_requested_by=row["cancel_requested_by"],
        completed_at=row["completed_at"],
        last_error=row["error"],
    )


def _is_waiting_due(row: Row) -> bool:
    return row["status"] == "queued" and row["lease_token"] is None and (row["due_in_seconds"] or 0) <= 0


def _reason(row: Row) -> tuple[Reason, str]:
    """The reason and its sentence. The first that applies wins: a terminal
    state, then the lease (its holder, its expiry, a pending cancel), then
    the schedule, then who could claim it, then its place in the queue."""
    state = JobState(row["status"])
    kind, queue = row["kind"], row["queue"]
    if state.is_terminal:
        return Reason.TERMINAL, _terminal_words(row, state)
    if row["lease_token"] is not None:
        left = row["lease_expires_in_seconds"]
        if left is not None and left < 0:
            return Reason.LEASE_EXPIRED, (
                f"leased by {_lease_words(row)}, and {_expiry_words(row)}: a live node will rescue it "
                f"({_attempt_words(row)}; it is retried if attempts remain, else failed)"
            )
        if state is JobState.ACTIVE and row["cancel_requested_at"] is not None:
            return Reason.CANCEL_REQUESTED, (
                f"cancel requested by {row['cancel_requested_by']} {_seconds(row['cancel_requested_seconds_ago'])} ago "
                f"and not yet delivered: the job runs on {_lease_words(row)}; {_expiry_words(row)}"
            )
        if state is JobState.ACTIVE:
            return Reason.RUNNING, (
                f"running ({_attempt_words(row)}, progress {row['progress']:.0%}) on {_lease_words(row)}; "
                f"{_expiry_words(row)}"
            )
        return Reason.CLAIMED, f"claimed by {_lease_words(row)}, not started yet; {_expiry_words(row)}"
    due_in = row["due_in_seconds"]
    retry = ""
    if row["attempt"] > 1:
        retry = f" ({_attempt_words(row)}; last error: {describe_error(row['error'])})"
    if due_in is not None and due_in > 0:
        if row["attempt"] > 1:
            return Reason.RETRYING, (
                f"retrying after backoff: {_attempt_words(row)} is due in {_seconds(due_in)} "
                f"(at {row['run_at'].isoformat()}); last error: {describe_error(row['error'])}"
            )
        return Reason.SCHEDULED, f"waiting for its run_at: due in {_seconds(due_in)} (at {row['run_at'].isoformat()})"
    if row["nodes_running_kind"] == 0:
        return Reason.NO_WORKER, (
            f"due, but no live node runs kind {kind!r} ({row['live_nodes']} live node(s) in all){retry}"
        )
    if row["nodes_serving"] == 0:
        return Reason.NO_WORKER, (
            f"due, but none of the {row['nodes_running_kind']} live node(s) running kind {kind!r} "
            f"claims from queue {queue!r}{retry}"
        )
    if row["nodes_at_limit"] >= row["nodes_serving"]:
        return Reason.QUEUE_FULL, (
            f"due, but queue {queue!r} is at its concurrency limit on every live node running kind {kind!r} "
            f"({row['nodes_serving']} node(s)){retry}"
        )
    if row["ahead_higher_priority"] > 0:
        return Reason.BEHIND_HIGHER_PRIORITY, (
            f"due, behind {row['ahead_higher_priority']} job(s) of higher priority in queue {queue!r}{retry}"
        )
    if row["ahead"] > 0:
        return Reason.BEHIND_EARLIER, (
            f"due, behind {row['ahead']} job(s) of the same priority that were due earlier in queue {queue!r}{retry}"
        )
    return Reason.READY, (
        f"due and first in line in queue {queue!r}; {row['nodes_serving'] - row['nodes_at_limit']} live node(s) "
        f"running kind {kind!r} have room and claim it at their next poll{retry}"
    )


def _terminal_words(row: Row, state: JobState) -> str:
    at = row["completed_at"].isoformat() if row["completed_at"] is not None else "an unknown time"
    if state is JobState.COMPLETED:
        return f"completed at {at} ({_attempt_words(row)}); it will not run again"
    if state is JobState.FAILED:
        return f"failed at {at} ({_attempt_words(row)}): {describe_error(row['error'])}"
    by = row["cancel_requested_by"]
    return f"cancelled at {at}" + (f" by {by}" if by else "") + "; it will not run"
