"""The seed's five cancellation scenarios, over HTTP, each checking the row afterwards."""

from __future__ import annotations

from orchestrator import JobState
from tests.integration.helpers import ALICE, BOB, CAROL_ADMIN, MALLORY_ADMIN, job_rows, make_orchestrator, one_row
from tests.integration.http_helpers import serving


async def test_scenario_owner_cancels_a_running_job(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch) as served, await served.client(ALICE) as alice:
        job = (await alice.post("/api/jobs", json={"kind": "gated", "payload": {"w": 1}})).json()
        await orch.gate.started.wait()
        assert (await alice.get(f"/api/jobs/{job['id']}")).json()["state"] == "active"
        answer = await alice.post(f"/api/jobs/{job['id']}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"job_id": job["id"], "cancelled": True, "state": "cancelled", "reason": None}
    assert orch.gate.cancelled, "the running handler was not interrupted"
    row = await one_row(database_url, job["id"])
    assert row["status"] == "cancelled"
    assert row["created_at"] < row["started_at"] < row["completed_at"]


async def test_scenario_owner_cancels_a_queued_job(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, await served.client(ALICE) as alice:
        job = (await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}})).json()
        answer = await alice.post(f"/api/jobs/{job['id']}/cancel")
        final = (await alice.get(f"/api/jobs/{job['id']}")).json()
    assert answer.status_code == 200 and answer.json()["cancelled"] is True
    assert answer.json()["state"] == final["state"] == "cancelled"
    row = await one_row(database_url, job["id"])
    assert row["status"] == "cancelled" and row["started_at"] is None
    assert row["completed_at"] > row["created_at"]


async def test_scenario_non_owner_is_refused_and_nothing_changes(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch) as served, await served.client(ALICE) as alice, await served.client(BOB) as bob:
        running = (await alice.post("/api/jobs", json={"kind": "gated", "payload": {"w": 1}})).json()
        await orch.gate.started.wait()
        queued = (await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}, "delay": 3600})).json()
        before = await job_rows(database_url)
        for job in (running, queued):
            refused = await bob.post(f"/api/jobs/{job['id']}/cancel")
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"] == "not_authorized" and "'bob' may not cancel" in refused.json()["message"]
        assert await job_rows(database_url) == before
        orch.gate.release.set()
        final = (await alice.get(f"/api/jobs/{running['id']}/wait", params={"timeout": 30})).json()
    assert final["state"] == JobState.COMPLETED
    assert not orch.gate.cancelled
    assert (await one_row(database_url, queued["id"]))["status"] == "queued"


async def test_scenario_a_completed_job_cannot_be_cancelled(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch) as served, await served.client(ALICE) as alice:
        job = (await alice.post("/api/jobs", json={"kind": "double", "payload": {"w": 4}})).json()
        done = (await alice.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 30})).json()
        before = await one_row(database_url, job["id"])
        answer = await alice.post(f"/api/jobs/{job['id']}/cancel")
    assert done["state"] == "completed" and done["result"] == {"w": 8}
    assert answer.status_code == 200
    assert answer.json() == {"job_id": job["id"], "cancelled": False, "state": "completed", "reason": "already completed"}
    assert await one_row(database_url, job["id"]) == before


async def test_scenario_an_org_admin_cancels_any_job_of_the_organisation(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with (
        serving(orch) as served,
        await served.client(ALICE) as alice,
        await served.client(BOB) as bob,
        await served.client(CAROL_ADMIN) as carol,
        await served.client(MALLORY_ADMIN) as mallory,
    ):
        running = (await alice.post("/api/jobs", json={"kind": "gated", "payload": {"w": 1}})).json()
        queued = (await bob.post("/api/jobs", json={"kind": "double", "payload": {"w": 1}, "delay": 3600})).json()
        await orch.gate.started.wait()
        before = await job_rows(database_url)
        # An admin of another organisation does not even see the jobs.
        for job in (running, queued):
            assert (await mallory.post(f"/api/jobs/{job['id']}/cancel")).status_code == 404
            assert (await mallory.get(f"/api/jobs/{job['id']}")).status_code == 404
        assert await job_rows(database_url) == before
        answers = [await carol.post(f"/api/jobs/{job['id']}/cancel") for job in (running, queued)]
    assert [a.json()["cancelled"] for a in answers] == [True, True]
    assert orch.gate.cancelled
    rows = {str(r["job_id"]): r for r in await job_rows(database_url)}
    assert rows[running["id"]]["status"] == rows[queued["id"]]["status"] == "cancelled"
