"""Retries, timeouts, progress, delays and priorities, on a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
import trio

from orchestrator import JobContext, JobState, Orchestrator, StoreError
from orchestrator._store import TransitionRow
from tests.integration.helpers import ALICE, Size, one_row


async def test_a_job_failing_once_succeeds_on_retry(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)
    attempts: list[int] = []

    @orch.job("flaky", max_attempts=3, retry_backoff=0.05)
    async def flaky(ctx: JobContext, payload: Size) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    async with orch.running():
        job = await orch.submit("flaky", {"w": 1}, owner=ALICE)
        final = await orch.wait(job.id, by=ALICE, timeout=30)
    assert attempts == [1, 2]
    assert (final.state, final.attempt, final.result) == (JobState.COMPLETED, 2, "ok")
    assert final.error == {"type": "RuntimeError", "message": "first attempt fails"}
    assert final.created_at < final.started_at < final.completed_at


async def test_a_job_failing_every_attempt_fails_with_the_last_error(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)

    @orch.job("broken", max_attempts=3, retry_backoff=0.02)
    async def broken(ctx: JobContext, payload: Size) -> None:
        raise ValueError(f"attempt {ctx.attempt} broke")

    async with orch.running():
        job = await orch.submit("broken", {"w": 1}, owner=ALICE)
        final = await orch.wait(job.id, by=ALICE, timeout=30)
    assert (final.state, final.attempt) == (JobState.FAILED, 3)
    assert final.error == {"type": "ValueError", "message": "attempt 3 broke"}
    row = await one_row(database_url, job.id)
    assert row["started_at"] < row["completed_at"]


async def test_an_attempt_running_over_its_timeout_fails_then_retries(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)
    interrupted = 0

    @orch.job("stuck", max_attempts=2, timeout=0.1, retry_backoff=0.02)
    async def stuck(ctx: JobContext, payload: Size) -> None:
        nonlocal interrupted
        try:
            await trio.sleep_forever()
        finally:
            interrupted += 1

    async with orch.running():
        job = await orch.submit("stuck", {"w": 1}, owner=ALICE)
        final = await orch.wait(job.id, by=ALICE, timeout=30)
    assert (final.state, final.attempt, interrupted) == (JobState.FAILED, 2, 2)
    assert final.error["type"] == "Timeout"


async def test_progress_is_persisted_while_the_job_runs(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)
    halfway = trio.Event()
    finish = trio.Event()

    @orch.job("slow")
    async def slow(ctx: JobContext, payload: Size) -> None:
        await ctx.progress(0.5)
        halfway.set()
        await finish.wait()

    async with orch.running():
        job = await orch.submit("slow", {"w": 1}, owner=ALICE)
        await halfway.wait()
        during = await orch.get(job.id, by=ALICE)
        finish.set()
        final = await orch.wait(job.id, by=ALICE)
    assert (during.state, during.progress) == (JobState.ACTIVE, 0.5)
    assert (final.state, final.progress) == (JobState.COMPLETED, 1.0)


async def test_a_delayed_job_does_not_start_before_its_time(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=5.0)

    @orch.job("later")
    async def later(ctx: JobContext, payload: Size) -> None:
        return None

    async with orch.running():
        job = await orch.submit("later", {"w": 1}, owner=ALICE, delay=0.3)
        final = await orch.wait(job.id, by=ALICE, timeout=30)
    assert final.state is JobState.COMPLETED
    assert final.started_at >= job.run_at
    assert (job.run_at - job.created_at).total_seconds() >= 0.3


async def test_higher_priority_jobs_are_claimed_first(database_url: str) -> None:
    orch = Orchestrator(database_url, concurrency=1, poll_interval=0.05)
    order: list[int] = []

    @orch.job("ranked")
    async def ranked(ctx: JobContext, payload: Size) -> None:
        order.append(payload.w)

    async with orch.running(work=False):
        for priority in (0, 5, 1, 9):
            await orch.submit("ranked", {"w": priority}, owner=ALICE, priority=priority)
    async with orch.running():
        jobs = await orch.list(by=ALICE)
        await orch.wait_many([j.id for j in jobs], by=ALICE)
    assert order == [9, 5, 1, 0]


async def test_transitions_are_guarded_by_status_and_lease_token(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)

    @orch.job("noop")
    async def noop(ctx: JobContext, payload: Size) -> None:
        return None

    async with orch.running(work=False):
        job = await orch.submit("noop", {"w": 1}, owner=ALICE)
        store = orch.store
        [claimed] = await store.claim(kinds=["noop"], slots={"default": 5}, node="n1", lease_seconds=30)
        token = claimed["lease_token"]
        # The claim itself started the job, stamped by the database after its creation.
        assert (await orch.get(job.id, by=ALICE)).state is JobState.ACTIVE
        started = claimed["started_at"]
        assert started > claimed["created_at"]
        complete = TransitionRow(job.id, token, "active", "completed", completed_at=started + timedelta(seconds=1))
        # A stale token (another node's lease) applies nothing.
        assert await store.apply_transitions([dataclasses.replace(complete, token=token + 1)]) == set()
        # A transition from a state the job is not in applies nothing.
        assert await store.apply_transitions([dataclasses.replace(complete, expected="queued")]) == set()
        # The database itself refuses a completion stamped before the start.
        with pytest.raises(StoreError, match="job_status_timestamps_check") as caught:
            await store.apply_transitions([dataclasses.replace(complete, completed_at=started - timedelta(microseconds=1))])
        assert caught.value.constraint == "job_status_timestamps_check"
        assert (await orch.get(job.id, by=ALICE)).state is JobState.ACTIVE
        assert await store.apply_transitions([complete]) == {job.id}
        # The same transition again is not repeated: the job is no longer active.
        assert await store.apply_transitions([complete]) == set()
        assert await store.apply_transitions([TransitionRow(uuid.uuid4(), token, "active", "completed")]) == set()


async def test_wait_gives_up_after_its_timeout_with_a_timeout_error(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.05)

    @orch.job("never")
    async def never(ctx: JobContext, payload: Size) -> None:
        return None

    async with orch.running(work=False):
        job = await orch.submit("never", {"w": 1}, owner=ALICE)
        with pytest.raises(TimeoutError, match="1 of 1 jobs still not finished after 0.2s"):
            await orch.wait(job.id, by=ALICE, timeout=0.2)


async def test_a_slot_freed_among_long_jobs_is_refilled_without_waiting_for_the_poll(database_url: str) -> None:
    # Ten slots, nine held by long jobs: the tenth frees alone, fewer than
    # the fifth of the slots a claim waits for. It must still be refilled
    # well before the (long) poll interval.
    orch = Orchestrator(database_url, concurrency=10, poll_interval=60.0)
    release = trio.Event()
    holding = 0

    @orch.job("long")
    async def long(ctx: JobContext, payload: Size) -> None:
        nonlocal holding
        holding += 1
        await release.wait()

    @orch.job("short")
    async def short(ctx: JobContext, payload: Size) -> None:
        return None

    async with orch.running(work=False):
        longs = await orch.submit_many("long", [{"w": i} for i in range(9)], owner=ALICE, priority=10)
        shorts = await orch.submit_many("short", [{"w": i} for i in range(3)], owner=ALICE)
    async with orch.running():
        with trio.fail_after(20):
            finals = await orch.wait_many([s.id for s in shorts], by=ALICE)
        assert holding == 9
        release.set()
        await orch.wait_many([j.id for j in longs], by=ALICE)
    assert {f.state for f in finals} == {JobState.COMPLETED}
