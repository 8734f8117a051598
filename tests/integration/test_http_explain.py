"""GET /api/jobs/{id}/explain: the library's answer, with GET's authority rules."""

from __future__ import annotations

import uuid

from tests.integration.helpers import ALICE, BOB, MALLORY_ADMIN, make_orchestrator
from tests.integration.http_helpers import serving


async def test_explain_over_http(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served:
        job = await orch.submit("double", {"w": 1}, owner=ALICE, delay=600)
        async with await served.client(BOB) as bob, await served.client(MALLORY_ADMIN) as mallory:
            answer = await bob.get(f"/api/jobs/{job.id}/explain")  # same organisation: visible, as GET is
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["reason"] == "scheduled" and body["job_id"] == str(job.id)
            assert body["message"].startswith("waiting for its run_at") and 590 < body["due_in_seconds"] <= 600
            assert body["run_at"].endswith("Z") or body["run_at"].endswith("+00:00")

            foreign = await mallory.get(f"/api/jobs/{job.id}/explain")
            assert foreign.status_code == 404, foreign.text
            unknown = await bob.get(f"/api/jobs/{uuid.uuid4()}/explain")
            assert unknown.status_code == 404, unknown.text
            bad = await bob.get("/api/jobs/not-a-uuid/explain")
            assert bad.status_code == 422 and bad.json()["field"] == "job_id", bad.text
            # The server keeps serving after refusing.
            again = await bob.get(f"/api/jobs/{job.id}/explain")
            assert again.status_code == 200 and again.json()["reason"] == "scheduled"
        async with await served.client(None) as anonymous:
            assert (await anonymous.get(f"/api/jobs/{job.id}/explain")).status_code == 401
        spec = (await (await served.client(None)).get("/openapi.json")).json()
        assert "/api/jobs/{job_id}/explain" in spec["paths"]
