"""Many jobs at once: ordering, races between cancel and completion, skewed clocks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import trio

from orchestrator import CancelOutcome, JobContext, JobState, Orchestrator
from tests.integration.helpers import ALICE, CAROL_ADMIN, Size, job_rows
from tests.pg import fetch


async def constraint_violations(url: str) -> int:
    """Rows that break G2 (the database CHECK would have refused them)."""
    [row] = await fetch(
        url,
        "SELECT count(*) AS n FROM orchestrator.job_status"
        " WHERE NOT (created_at <= coalesce(started_at, created_at)"
        " AND coalesce(started_at, created_at) <= coalesce(completed_at, 'infinity'))",
    )
    return int(row["n"])


async def test_ten_thousand_instant_jobs_at_concurrency_fifty(database_url: str) -> None:
    orch = Orchestrator(database_url, concurrency=50, poll_interval=0.5)
    ran = 0

    @orch.job("instant")
    async def instant(ctx: JobContext, payload: Size) -> None:
        nonlocal ran
        ran += 1

    async with orch.running():
        jobs = await orch.submit_many("instant", [{"w": i} for i in range(10_000)], owner=ALICE)
        finals = await orch.wait_many([j.id for j in jobs], by=ALICE)
        statements = orch.writer.statements if orch.writer else 0
    assert ran == 10_000
    assert {f.state for f in finals} == {JobState.COMPLETED}
    [row] = await fetch(
        database_url,
        "SELECT count(*) FILTER (WHERE status = 'completed') AS completed,"
        " count(*) FILTER (WHERE created_at <= started_at AND started_at <= completed_at) AS ordered,"
        " count(*) AS total FROM orchestrator.job_status",
    )
    assert (row["completed"], row["ordered"], row["total"]) == (10_000, 10_000, 10_000)
    # The writer coalesced the 20,000 lifecycle writes into far fewer statements.
    assert 0 < statements < 20_000


async def test_cancel_racing_completion_over_a_thousand_jobs(database_url: str) -> None:
    orch = Orchestrator(database_url, concurrency=50, poll_interval=0.2)

    @orch.job("quick")
    async def quick(ctx: JobContext, payload: Size) -> int:
        # One checkpoint: the handler can be interrupted, but barely.
        await trio.sleep(0)
        return payload.w

    outcomes: dict[uuid.UUID, CancelOutcome] = {}
    async with orch.running():
        jobs = await orch.submit_many("quick", [{"w": i} for i in range(1_000)], owner=ALICE)
        ids = [j.id for j in jobs]
        # Cancel every other job, in the order the dispatcher claims them,
        # so cancels meet queued, active and completed jobs alike.
        limiter = trio.CapacityLimiter(20)

        async def cancel(job_id: uuid.UUID) -> None:
            async with limiter:
                by = CAROL_ADMIN if job_id.int % 3 == 0 else ALICE
                outcomes[job_id] = await orch.cancel(job_id, by=by)

        async with trio.open_nursery() as nursery:
            for job_id in ids[::2]:
                nursery.start_soon(cancel, job_id)
        finals = {f.id: f for f in await orch.wait_many(ids, by=ALICE)}

    rows = {r["job_id"]: r for r in await job_rows(database_url)}
    assert len(rows) == 1_000
    for job_id in ids:
        row = rows[job_id]
        assert row["status"] in ("completed", "cancelled"), row
        assert finals[job_id].state.value == row["status"]
        if job_id in outcomes:
            outcome = outcomes[job_id]
            assert outcome.state.value == row["status"]
            assert outcome.cancelled == (row["status"] == "cancelled")
            if not outcome.cancelled:
                assert outcome.reason == "already completed"
        else:
            assert row["status"] == "completed"
    cancelled = sum(o.cancelled for o in outcomes.values())
    assert 0 < cancelled <= 500
    assert await constraint_violations(database_url) == 0


class BackwardsClock:
    """A wall clock that jumps an hour back on every other reading."""

    def __init__(self) -> None:
        self.readings = 0

    def __call__(self) -> datetime:
        self.readings += 1
        now = datetime.now(timezone.utc)
        return now - timedelta(hours=1) if self.readings % 2 == 0 else now


async def test_a_clock_jumping_backwards_still_yields_ordered_timestamps(database_url: str) -> None:
    clock = BackwardsClock()
    orch = Orchestrator(database_url, concurrency=20, poll_interval=0.2, clock=clock)

    @orch.job("instant")
    async def instant(ctx: JobContext, payload: Size) -> None:
        return None

    async with orch.running():
        jobs = await orch.submit_many("instant", [{"w": i} for i in range(200)], owner=ALICE)
        queued = await orch.submit("instant", {"w": -1}, owner=ALICE, delay=3600)
        finals = await orch.wait_many([j.id for j in jobs], by=ALICE)
        cancelled = await orch.cancel(queued.id, by=ALICE)
    # The claim stamps started_at by the database's clock; the node's clock
    # stamps every completion, half of them an hour in the past.
    assert clock.readings >= 200
    assert {f.state for f in finals} == {JobState.COMPLETED}
    assert cancelled.cancelled
    for row in await job_rows(database_url):
        assert row["created_at"] < row["completed_at"]
        if row["started_at"] is not None:
            assert row["created_at"] < row["started_at"] < row["completed_at"]
    assert await constraint_violations(database_url) == 0
