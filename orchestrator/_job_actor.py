"""The job actor: one per running job; its mailbox orders the lifecycle.

The claim statement already persisted ``active`` (and committed) before the
actor exists, so the actor starts the handler at once, in a cancel scope
inside the actor's nursery. The handler's outcome comes back as a message to
the same mailbox, so every later transition is ordered by it, however fast
the handler is. Each write is guarded by the
expected prior status and the lease token; a write that does not apply
means someone else moved the job (a cancel, a rescuer), and the actor reads
the row to learn which.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

import trio
from pydantic_core import to_jsonable_python

from actors import Actor, ActorDead, MailboxFull

from ._lifecycle import (
    Applied,
    Cancel,
    Event,
    Fail,
    JobState,
    Rejected,
    Release,
    Snapshot,
    Succeed,
    transition,
)
from ._claimed import ClaimedJob
from ._errors import InvalidInput, StoreError
from ._jobs import JobContext, JobDefinition
from ._models import JobRecord
from ._summary import Summary
from ._tracing import Tracing
from ._port import JobPort
from ._store import TransitionRow, retry_unavailable
from ._validation import PayloadLimits, check_json
from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator.job")

Clock = Callable[[], datetime]


# Messages: small and frozen.


@dataclass(frozen=True, slots=True)
class HandlerReturned:
    result: Any


@dataclass(frozen=True, slots=True)
class HandlerRaised:
    error: dict[str, Any]
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """An authorised cancel reached this node."""


@dataclass(frozen=True, slots=True)
class ReportProgress:
    value: float


@dataclass(frozen=True, slots=True)
class ReleaseJob:
    """This node is stopping: interrupt the handler, give the job back."""


@dataclass(frozen=True, slots=True)
class LeaseLost:
    """The heartbeat could not renew this job's lease: another node may own
    it now, so this one stops the handler and writes nothing more."""


JobMessage: TypeAlias = (
    HandlerReturned | HandlerRaised | CancelRequested | ReportProgress | ReleaseJob | LeaseLost
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The actor's answer to a message: did the job move, and where is it."""

    applied: bool
    state: JobState
    reason: str | None = None


#: The longest error message stored for a failed attempt.
MAX_ERROR_MESSAGE = 2000

#: What a handler may return: JSON data, at most this large and deep.
RESULT_LIMITS = PayloadLimits(max_bytes=16 * 1024 * 1024, max_depth=256)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """A JSON-ready description of a handler's exception.

    The message is cut to :data:`MAX_ERROR_MESSAGE` characters and cleared of
    what JSONB cannot hold (NUL, lone surrogates), so that storing why a job
    failed can never fail itself.
    """
    return {"type": type(exc).__name__, "message": storable_text(str(exc), MAX_ERROR_MESSAGE)}


def storable_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, NUL and lone surrogates replaced."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return _UNSTORABLE.sub("\ufffd", cut)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class JobActor(Actor[JobMessage]):
    """Owns one claimed job until it leaves this node.

    Args:
        job: the row as claimed (status ``active``, lease held, committed).
        definition: the job's kind.
        writer: where transitions are persisted.
        store: for reading the row back when a write did not apply.
        clock: wall clock for timestamps (stamped monotonic per job).
        on_exit: called once when the actor stops, with the job's last
            known state.
        summary: where the attempt's end is counted for the worker's
            summary line.
        tracing: where the attempt's span starts (``None``: no span).
    """

    def __init__(
        self,
        job: ClaimedJob,
        definition: JobDefinition,
        writer: TransitionWriter,
        store: JobPort,
        clock: Clock,
        on_exit: Callable[[ClaimedJob, JobState], None],
        summary: Summary,
        tracing: Tracing | None = None,
    ) -> None:
        self.job = job
        self._token = job.lease_token
        self._definition = definition
        self._writer = writer
        self._store = store
        self._clock = clock
        self._on_exit = on_exit
        self._summary = summary
        self._began = 0.0
        self._snapshot: Snapshot = job.snapshot()
        self._handler_scope: trio.CancelScope | None = None
        self._finished = False
        self._write_refused = False
        self._tracing = tracing
        self._span: Any = None
        #: How the attempt ended, for its span: the last lifecycle event.
        self._outcome: str | None = None

    @property
    def state(self) -> JobState:
        return self._snapshot.state

    async def on_start(self) -> None:
        # ``active`` is durable already (the claim committed it).
        self._began = trio.current_time()
        if self._tracing is not None:
            self._span = self._tracing.start_attempt(self.job)
        if logger.isEnabledFor(logging.DEBUG):
            self._log_event("active", JobState.QUEUED, JobState.ACTIVE, self.job.attempt)
        self.nursery.start_soon(self._run_handler)

    async def on_stop(self) -> None:
        self._cancel_handler()
        if self._span is not None and self._tracing is not None:
            outcome = self._outcome or self._snapshot.state.value
            self._tracing.end_attempt(self._span, outcome, self._snapshot.error)
        self._on_exit(self.job, self._snapshot.state)

    async def receive(self, message: JobMessage) -> Outcome:
        if self._finished:
            return Outcome(False, self.state, _reason(self.state))
        match message:
            case HandlerReturned(result=result):
                return await self._settle(Succeed(self._clock(), result))
            case HandlerRaised(error=error, retryable=retryable):
                now = self._clock()
                retry_at = None
                if retryable:
                    delay = self._definition.retry.delay(self._snapshot.attempt)
                    retry_at = now + timedelta(seconds=delay)
                return await self._settle(Fail(now, error, retry_at))
            case CancelRequested():
                self._cancel_handler()
                return await self._settle(Cancel(self._clock()))
            case ReportProgress(value=value):
                return await self._write_progress(value)
            case ReleaseJob():
                self._cancel_handler()
                outcome = await self._settle(Release(self._clock()))
                return outcome
            case LeaseLost():
                logger.warning("job %s: lease lost; handler cancelled, nothing written", self.job.id)
                self._outcome = "lease lost"
                self._finish()
                return Outcome(False, self.state, "lease lost")
        raise TypeError(f"job actor got an unknown message {message!r}")

    async def _settle(self, event: Event) -> Outcome:
        decision = transition(self._snapshot, event)
        if isinstance(decision, Rejected):
            return Outcome(False, decision.state, decision.reason)
        try:
            applied = await self._writer.write(self._row(decision))
        except StoreError as exc:
            return await self._unwritable(decision, exc)
        if applied:
            return self._moved(decision.after)
        return await self._reconcile(decision)

    async def _unwritable(self, decision: Applied, exc: StoreError) -> Outcome:
        """PostgreSQL refused this job's write: fail the job with why, once.

        If even that is refused, the node lets go of the job; its lease runs
        out and the rescuer ends it.
        """
        logger.error("job %s: PostgreSQL refused its %s write: %s", self.job.id, decision.after.state.value, exc)
        if not self._write_refused and self._snapshot.state is JobState.ACTIVE:
            self._write_refused = True
            error = {"type": "StoreError", "message": storable_text(str(exc), MAX_ERROR_MESSAGE)}
            self._cancel_handler()
            return await self._settle(Fail(self._clock(), error, None))
        self._finish()
        return Outcome(False, self.state, f"could not be stored: {exc}")

    def _row(self, decision: Applied) -> TransitionRow:
        before, after = decision.before, decision.after
        return TransitionRow(
            job_id=self.job.id,
            token=self._token,
            expected=before.state.value,
            next=after.state.value,
            started_at=after.started_at if after.started_at != before.started_at else None,
            completed_at=after.completed_at,
            run_at=after.run_at if after.state is JobState.QUEUED else None,
            result=after.result if after.state is JobState.COMPLETED else None,
            progress=1.0 if after.state is JobState.COMPLETED else None,
            error=after.error if after.error is not before.error else None,
            attempt=after.attempt if after.attempt != before.attempt else None,
        )

    def _moved(self, after: Snapshot) -> Outcome:
        before, self._snapshot = self._snapshot, after
        self._log_transition(before, after)
        if after.state is not JobState.ACTIVE:
            # Terminal, or back in the queue for a retry: either way this
            # node is done with the job.
            self._finish()
        return Outcome(True, after.state)

    def _log_transition(self, before: Snapshot, after: Snapshot) -> None:
        if before.state is after.state:
            return
        event = "retry" if after.state is JobState.QUEUED and after.attempt > before.attempt else after.state.value
        if after.state is JobState.QUEUED and after.attempt == before.attempt:
            event = "released"
        self._outcome = "retried" if event == "retry" else event
        # Counted for the INFO summary line; one record per job only at DEBUG.
        self._summary.ended(
            "retried" if event == "retry" else event, trio.current_time() - self._began, self.job.kind, self.job.queue
        )
        if logger.isEnabledFor(logging.DEBUG):
            self._log_event(event, before.state, after.state, after.attempt)

    def _log_event(self, event: str, before: JobState, after: JobState, attempt: int) -> None:
        # One DEBUG line per lifecycle event; the fields let a JSON log
        # formatter emit them as keys.
        logger.debug(
            "job %s %s: %s -> %s (attempt %d/%d)",
            self.job.id,
            self.job.kind,
            before.value,
            after.value,
            attempt,
            self.job.max_attempts,
            extra={
                "event": f"job.{event}",
                "job_id": str(self.job.id),
                "kind": self.job.kind,
                "queue": self.job.queue,
                "attempt": attempt,
                "state": after.value,
                "previous_state": before.value,
            },
        )

    async def _reconcile(self, decision: Applied) -> Outcome:
        """A guarded write did not apply: find out why from the row."""
        row = await retry_unavailable("reading a job back", self._store.get_job_any, self.job.id)
        if row is None:
            logger.error("job %s vanished while this node ran it", self.job.id)
            self._finish()
            return Outcome(False, self.state, "job vanished")
        current = JobRecord.from_row(row)
        ours = row["lease_token"] == self._token
        wanted = decision.after
        requeued = wanted.state is JobState.QUEUED and row["lease_token"] is None
        if current.state is wanted.state and current.attempt == wanted.attempt and (ours or requeued):
            # The write was committed but its acknowledgement was lost.
            return self._moved(wanted)
        if current.state is JobState.ACTIVE and ours and current.cancel_requested:
            # A retry yields to a cancel that was requested meanwhile.
            self._snapshot = current.snapshot()
            self._cancel_handler()
            return await self._settle(Cancel(self._clock()))
        if not ours and not current.state.is_terminal:
            logger.warning("job %s: lease lost (token %s); stopping its handler here", self.job.id, self._token)
            self._outcome = "lease lost"
        else:
            self._outcome = f"{current.state.value} elsewhere"
        self._snapshot = current.snapshot()
        self._finish()
        return Outcome(False, current.state, _reason(current.state))

    async def _write_progress(self, value: float) -> Outcome:
        if self.state is not JobState.ACTIVE:
            return Outcome(False, self.state, _reason(self.state))
        row = TransitionRow(
            job_id=self.job.id, token=self._token, expected="active", next="active", progress=value
        )
        if await self._writer.write(row):
            return Outcome(True, JobState.ACTIVE)
        return await self._reconcile(Applied(self._snapshot, self._snapshot))

    def _finish(self) -> None:
        self._finished = True
        self._cancel_handler()
        try:
            self.ref.stop_nowait()
        except MailboxFull:
            self.nursery.start_soon(self.ref.stop)
        except ActorDead:
            pass

    def _cancel_handler(self) -> None:
        if self._handler_scope is not None:
            self._handler_scope.cancel()

    async def _run_handler(self) -> None:
        definition = self._definition
        context = JobContext(self.job, self._report_progress)
        outcome: JobMessage
        with trio.CancelScope() as scope:
            self._handler_scope = scope
            try:
                payload = definition.validate(self.job.payload)
                with self._current_span(), self._timeout():
                    result = await definition.handler(context, payload)
                outcome = _returned(result)
            except trio.TooSlowError:
                outcome = HandlerRaised(
                    {"type": "Timeout", "message": f"attempt ran over its timeout of {definition.timeout}s"}
                )
            except Exception as exc:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("job %s (%s) attempt %d raised %r", self.job.id, self.job.kind, self.job.attempt, exc)
                outcome = HandlerRaised(describe_error(exc), retryable=_is_retryable(exc))
        # The handler is done: nothing is left to cancel (trio's cancel()
        # formats the calling task's repr even for a scope already exited).
        self._handler_scope = None
        if scope.cancelled_caught:
            return
        try:
            await self.ref.tell(outcome)
        except ActorDead:
            pass

    def _timeout(self) -> AbstractContextManager[Any]:
        timeout = self._definition.timeout
        return nullcontext() if timeout is None else trio.fail_after(timeout)

    def _current_span(self) -> AbstractContextManager[Any]:
        # The handler's own spans become children of the attempt's.
        if self._span is None or self._tracing is None:
            return nullcontext()
        return self._tracing.current(self._span)

    async def _report_progress(self, value: float) -> None:
        try:
            await self.ref.ask(ReportProgress(value))
        except ActorDead:
            pass


def _returned(result: Any) -> JobMessage:
    """The outcome of a handler that returned ``result``.

    A result that cannot be stored exactly (NaN, NUL, lone surrogates, not
    JSON, too large or deep) fails the job, the same way on every attempt,
    rather than failing the statement that would store it.
    """
    try:
        stored = check_json("result", to_jsonable_python(result), RESULT_LIMITS, strict=True)
    except InvalidInput as exc:
        return HandlerRaised({"type": "InvalidResult", "message": storable_text(str(exc), MAX_ERROR_MESSAGE)}, retryable=False)
    return HandlerReturned(stored)


def _is_retryable(exc: BaseException) -> bool:
    from pydantic import ValidationError
    from pydantic_core import PydanticSerializationError

    # A payload that does not validate, or a result that cannot be stored,
    # fails the same way on every attempt.
    return not isinstance(exc, (ValidationError, PydanticSerializationError))


def _reason(state: JobState) -> str | None:
    return f"already {state.value}" if state.is_terminal else None


__all__ = [
    "CancelRequested",
    "HandlerRaised",
    "HandlerReturned",
    "JobActor",
    "JobMessage",
    "LeaseLost",
    "Outcome",
    "ReleaseJob",
    "ReportProgress",
]
