"""Jobs through their whole life on a real PostgreSQL."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import JobState, Orchestrator, Principal
from tests.pg import fetch

ALICE = Principal(user_id="alice", org_id="acme")


class Size(BaseModel):
    w: int


def make_orchestrator(url: str, **kwargs: object) -> Orchestrator:
    orch = Orchestrator(url, poll_interval=0.2, **kwargs)  # type: ignore[arg-type]

    @orch.job("double")
    async def double(ctx, payload: Size) -> dict:
        return {"w": payload.w * 2}

    return orch


async def test_a_job_completes_with_its_result_and_ordered_timestamps(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        job = await orch.submit("double", {"w": 21}, owner=ALICE)
        assert job.state is JobState.QUEUED
        final = await orch.wait(job.id, by=ALICE)
    assert final.state is JobState.COMPLETED
    assert final.result == {"w": 42}
    assert final.created_at < final.started_at < final.completed_at
    [row] = await fetch(database_url, "SELECT status::text, attempt FROM orchestrator.job_status")
    assert (row["status"], row["attempt"]) == ("completed", 1)
