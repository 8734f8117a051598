"""The pure job state machine against DESIGN.md's G1, G2 and G4."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator._lifecycle import (
    TICK,
    Applied,
    Cancel,
    Fail,
    JobState,
    Rejected,
    Release,
    Snapshot,
    Start,
    Succeed,
    stamp,
    transition,
)

Q, A, C, F, X = JobState.QUEUED, JobState.ACTIVE, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
ALLOWED_EDGES = {(Q, A), (A, C), (A, F), (A, X), (A, Q), (Q, X)}
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
HOURS = 3 * 3600 * 10**6  # µs


def queued(created_at: datetime = T0, max_attempts: int = 3, attempt: int = 1) -> Snapshot:
    return Snapshot(state=Q, attempt=attempt, max_attempts=max_attempts, created_at=created_at)


def applied(job: Snapshot, event: object) -> Snapshot:
    decision = transition(job, event)  # type: ignore[arg-type]
    assert isinstance(decision, Applied), decision
    assert decision.before is job
    return decision.after


def active(max_attempts: int = 3, attempt: int = 1) -> Snapshot:
    return applied(queued(max_attempts=max_attempts, attempt=attempt), Start(T0 + timedelta(seconds=1)))


# -- property ------------------------------------------------------------------

# Clock steps: mostly tiny (to hit equal and 1 µs-apart readings), sometimes
# large jumps forwards or backwards by up to three hours.
clock_steps = st.one_of(st.integers(-3, 3), st.integers(-HOURS, HOURS)).map(lambda us: timedelta(microseconds=us))

event_specs = st.tuples(
    st.sampled_from(["start", "succeed", "fail", "fail_retry", "cancel", "release"]),
    clock_steps,  # this event's clock, relative to the previous event's clock
    clock_steps,  # retry_at, relative to this event's clock
)


def make_event(kind: str, now: datetime, retry_delta: timedelta) -> object:
    return {
        "start": lambda: Start(now),
        "succeed": lambda: Succeed(now, result={"at": now.isoformat()}),
        "fail": lambda: Fail(now, error="boom"),
        "fail_retry": lambda: Fail(now, error="boom, retry", retry_at=now + retry_delta),
        "cancel": lambda: Cancel(now),
        "release": lambda: Release(now),
    }[kind]()


def expected_target(state: JobState, kind: str, job: Snapshot) -> JobState | None:
    """Where the design says ``kind`` takes a job in ``state`` (None: rejected)."""
    if state is Q:
        return {"start": A, "cancel": X}.get(kind)
    if state is A:
        retry = Q if job.attempt < job.max_attempts else F
        return {"succeed": C, "fail": F, "fail_retry": retry, "cancel": X, "release": Q}.get(kind)
    return None


def check_timestamps(job: Snapshot) -> None:
    if job.started_at is not None:
        assert job.started_at > job.created_at
    if job.completed_at is not None:
        assert job.completed_at > job.created_at
        if job.started_at is not None:
            assert job.completed_at > job.started_at
    # Mirrors the database's other CHECKs: completed_at iff terminal,
    # started_at whenever the job is or was running to completion.
    assert (job.completed_at is not None) == job.state.is_terminal
    if job.state in (A, C):
        assert job.started_at is not None


@settings(max_examples=500, deadline=None)
@given(
    created_at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
    ),
    max_attempts=st.integers(1, 5),
    specs=st.lists(event_specs, max_size=40),
)
def test_random_event_sequences_keep_g1_g2_g4(
    created_at: datetime, max_attempts: int, specs: list[tuple[str, timedelta, timedelta]]
) -> None:
    job = queued(created_at, max_attempts)
    now = created_at
    for kind, step, retry_delta in specs:
        now += step
        event = make_event(kind, now, retry_delta)
        decision = transition(job, event)  # type: ignore[arg-type]
        target = expected_target(job.state, kind, job)

        if job.state.is_terminal:  # G4: absorbing, with a definite answer
            assert decision == Rejected(job.state, f"already {job.state.value}")
            continue
        if target is None:
            assert decision == Rejected(job.state, f"not allowed while {job.state.value}")
            continue

        assert isinstance(decision, Applied), (job, event, decision)
        before, after = decision.before, decision.after
        assert before is job
        # G1: only allowed edges, and the one this event calls for.
        assert (before.state, after.state) in ALLOWED_EDGES
        assert after.state is target
        retried = kind == "fail_retry" and after.state is Q
        assert after.attempt == before.attempt + (1 if retried else 0)
        assert 1 <= after.attempt <= after.max_attempts == max_attempts
        assert after.created_at == created_at
        if retried:
            assert after.run_at == event.retry_at  # type: ignore[attr-defined]
        if kind == "release":
            assert after.run_at == now
        # G2: every new stamp is max(clock, previous latest + 1 µs).
        floor = before.latest_timestamp + TICK
        for name in ("started_at", "completed_at"):
            new = getattr(after, name)
            if new is not None and new != getattr(before, name):
                assert new >= floor
                assert new == max(now, floor)
        check_timestamps(after)
        assert after.latest_timestamp >= before.latest_timestamp
        job = after


# -- examples: each allowed edge -----------------------------------------------


def test_start_moves_queued_to_active_and_stamps_started_at() -> None:
    job = applied(queued(), Start(T0 + timedelta(seconds=5)))
    assert (job.state, job.attempt, job.started_at, job.completed_at) == (A, 1, T0 + timedelta(seconds=5), None)


def test_succeed_completes_with_result() -> None:
    job = applied(active(), Succeed(T0 + timedelta(seconds=9), result={"n": 1}))
    assert (job.state, job.result, job.completed_at) == (C, {"n": 1}, T0 + timedelta(seconds=9))


def test_fail_without_retry_at_fails_even_with_attempts_left() -> None:
    job = applied(active(max_attempts=5), Fail(T0 + timedelta(seconds=9), error="bad input"))
    assert (job.state, job.attempt, job.error) == (F, 1, "bad input")
    assert job.completed_at == T0 + timedelta(seconds=9)


def test_fail_with_retry_at_requeues_with_next_attempt() -> None:
    retry_at = T0 + timedelta(minutes=2)
    job = applied(active(max_attempts=3), Fail(T0 + timedelta(seconds=9), error="flaky", retry_at=retry_at))
    assert (job.state, job.attempt, job.run_at, job.error, job.completed_at) == (Q, 2, retry_at, "flaky", None)


def test_fail_with_retry_at_on_last_attempt_fails() -> None:
    job = applied(active(max_attempts=3, attempt=3), Fail(T0 + timedelta(seconds=9), "flaky", T0 + timedelta(hours=1)))
    assert (job.state, job.attempt) == (F, 3)
    assert job.completed_at is not None


def test_release_requeues_keeping_the_attempt() -> None:
    job = applied(active(max_attempts=3, attempt=2), Release(T0 + timedelta(seconds=9)))
    assert (job.state, job.attempt, job.run_at, job.completed_at) == (Q, 2, T0 + timedelta(seconds=9), None)


@pytest.mark.parametrize("start", [queued(), active()], ids=["queued", "active"])
def test_cancel_from_either_live_state(start: Snapshot) -> None:
    job = applied(start, Cancel(T0 + timedelta(seconds=30)))
    assert (job.state, job.completed_at) == (X, T0 + timedelta(seconds=30))


def test_restart_after_retry_restamps_started_at_after_everything_before() -> None:
    first = active()
    requeued = applied(first, Fail(T0 + timedelta(seconds=2), "flaky", T0 + timedelta(seconds=3)))
    # The next node's clock is an hour behind.
    again = applied(requeued, Start(T0 - timedelta(hours=1)))
    assert again.started_at == first.started_at + TICK  # type: ignore[operator]


# -- examples: rejections ------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "event", "reason"),
    [
        (queued(), Succeed(T0), "not allowed while queued"),
        (queued(), Fail(T0, "x"), "not allowed while queued"),
        (queued(), Fail(T0, "x", retry_at=T0), "not allowed while queued"),
        (queued(), Release(T0), "not allowed while queued"),
        (active(), Start(T0), "not allowed while active"),
    ],
)
def test_events_that_do_not_apply_in_a_live_state_are_rejected(job: Snapshot, event: object, reason: str) -> None:
    assert transition(job, event) == Rejected(job.state, reason)  # type: ignore[arg-type]


TERMINALS = {
    "completed": applied(active(), Succeed(T0 + timedelta(seconds=3))),
    "failed": applied(active(), Fail(T0 + timedelta(seconds=3), "x")),
    "cancelled": applied(queued(), Cancel(T0 + timedelta(seconds=3))),
}
ALL_EVENTS = [Start(T0), Succeed(T0), Fail(T0, "x"), Fail(T0, "x", T0), Cancel(T0), Release(T0)]


@pytest.mark.parametrize("name", TERMINALS)
@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_terminal_states_reject_everything(name: str, event: object) -> None:
    job = TERMINALS[name]
    before = dataclasses.replace(job)
    assert transition(job, event) == Rejected(JobState(name), f"already {name}")  # type: ignore[arg-type]
    assert job == before


def test_state_terminality_and_str() -> None:
    assert {s for s in JobState if s.is_terminal} == {C, F, X}
    assert str(JobState.ACTIVE) == "active"


# -- stamp() -------------------------------------------------------------------


def test_stamp_keeps_a_clock_reading_later_than_the_floor() -> None:
    assert stamp(T0 + timedelta(seconds=1), T0) == T0 + timedelta(seconds=1)


def test_stamp_exactly_one_tick_later_is_kept() -> None:
    assert stamp(T0 + TICK, T0) == T0 + TICK


@pytest.mark.parametrize("behind", [timedelta(0), timedelta(microseconds=1), timedelta(hours=5)])
def test_stamp_never_goes_back_or_repeats(behind: timedelta) -> None:
    assert stamp(T0 - behind, T0) == T0 + TICK


def test_tick_is_postgres_resolution() -> None:
    assert TICK == timedelta(microseconds=1)


def test_latest_timestamp_is_the_newest_set_stamp() -> None:
    job = Snapshot(Q, 1, 1, created_at=T0, started_at=T0 + timedelta(seconds=2))
    assert job.latest_timestamp == T0 + timedelta(seconds=2)
    assert queued().latest_timestamp == T0
