"""The seed system's five cancellation scenarios, on a real PostgreSQL."""

from __future__ import annotations

import pytest

from orchestrator import JobNotFound, JobState, NotAuthorized
from tests.integration.helpers import (
    ALICE,
    BOB,
    CAROL_ADMIN,
    MALLORY_ADMIN,
    job_rows,
    make_orchestrator,
    one_row,
)


async def test_scenario_owner_cancels_a_running_job(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        job = await orch.submit("gated", {"w": 1}, owner=ALICE)
        await orch.gate.started.wait()
        assert (await orch.get(job.id, by=ALICE)).state is JobState.ACTIVE
        outcome = await orch.cancel(job.id, by=ALICE)
    assert outcome.cancelled and outcome.state is JobState.CANCELLED and outcome.reason is None
    assert orch.gate.cancelled, "the running handler was not interrupted"
    row = await one_row(database_url, job.id)
    assert row["status"] == "cancelled"
    assert row["created_at"] < row["started_at"] < row["completed_at"]


async def test_scenario_owner_cancels_a_queued_job(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        outcome = await orch.cancel(job.id, by=ALICE)
        final = await orch.get(job.id, by=ALICE)
    assert outcome.cancelled and outcome.state is JobState.CANCELLED
    assert final.state is JobState.CANCELLED
    row = await one_row(database_url, job.id)
    assert row["status"] == "cancelled" and row["started_at"] is None
    assert row["completed_at"] > row["created_at"]


async def test_scenario_non_owner_is_refused_and_nothing_changes(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        running = await orch.submit("gated", {"w": 1}, owner=ALICE)
        await orch.gate.started.wait()
        queued = await orch.submit("double", {"w": 1}, owner=ALICE, delay=3600)
        before = await job_rows(database_url)
        for job in (running, queued):
            with pytest.raises(NotAuthorized, match="'bob' may not cancel"):
                await orch.cancel(job.id, by=BOB)
        assert await job_rows(database_url) == before
        orch.gate.release.set()
        final = await orch.wait(running.id, by=ALICE)
    assert final.state is JobState.COMPLETED
    assert not orch.gate.cancelled
    assert (await one_row(database_url, queued.id))["status"] == "queued"


async def test_scenario_a_completed_job_cannot_be_cancelled(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        job = await orch.submit("double", {"w": 4}, owner=ALICE)
        done = await orch.wait(job.id, by=ALICE)
        before = await one_row(database_url, job.id)
        outcome = await orch.cancel(job.id, by=ALICE)
    assert done.state is JobState.COMPLETED
    assert not outcome.cancelled
    assert outcome.state is JobState.COMPLETED
    assert outcome.reason == "already completed"
    assert await one_row(database_url, job.id) == before


async def test_scenario_an_org_admin_cancels_any_job_of_the_organisation(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        running = await orch.submit("gated", {"w": 1}, owner=ALICE)
        queued = await orch.submit("double", {"w": 1}, owner=BOB, delay=3600)
        await orch.gate.started.wait()
        before = await job_rows(database_url)
        # An admin of another organisation does not even see the jobs.
        for job in (running, queued):
            with pytest.raises(JobNotFound):
                await orch.cancel(job.id, by=MALLORY_ADMIN)
        assert await job_rows(database_url) == before
        outcomes = [await orch.cancel(job.id, by=CAROL_ADMIN) for job in (running, queued)]
    assert [o.cancelled for o in outcomes] == [True, True]
    assert orch.gate.cancelled
    rows = {r["job_id"]: r for r in await job_rows(database_url)}
    assert rows[running.id]["status"] == rows[queued.id]["status"] == "cancelled"


async def test_a_second_cancel_gets_a_definite_answer(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        first = await orch.cancel(job.id, by=ALICE)
        second = await orch.cancel(job.id, by=CAROL_ADMIN)
    assert first.cancelled
    assert (second.cancelled, second.state, second.reason) == (False, JobState.CANCELLED, "already cancelled")
