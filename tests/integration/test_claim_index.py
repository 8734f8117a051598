"""The claim and next_due read only the rows they need (migration 0013).

A queue that holds many jobs a node cannot claim (delayed into the future,
or of kinds it does not run) must cost its claims nothing: the plans below
are read with EXPLAIN ANALYZE, so these tests count rows, not milliseconds.
What the claim and next_due answer across kinds and priorities is in the
store contract (tests/store_contract.py), for both adapters.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator._queries import query
from tests.pg import fetch, job_status_reads, job_status_scans, rows_read, with_settings

NODE = "claim-index-node"
#: Rows of each kind of backlog the claim must not read.
BACKLOG = 200


async def insert(url: str, count: int, *, kind: str, priority: int = 0, delay: float = 0.0) -> None:
    """``count`` queued jobs, due ``delay`` seconds from now (already due, for 0)."""
    await fetch(
        url,
        "INSERT INTO orchestrator.job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id, priority,"
        " run_at, created_at)"
        " SELECT gen_random_uuid(), $2, 'default', to_jsonb(i), 'alice', 'acme', $3,"
        " clock_timestamp() + make_interval(secs => $4) - interval '1 s', clock_timestamp() - interval '1 s'"
        " FROM generate_series(1, $1::int) AS i",
        count, kind, priority, delay,
    )  # fmt: skip


async def analyzed(url: str, name: str, *args: Any) -> dict[str, Any]:
    """The plan of statement ``name`` as it ran (EXPLAIN ANALYZE runs it), no sequential scans allowed."""
    await fetch(url, "ANALYZE orchestrator.job_status")
    explain = with_settings(url, search_path="orchestrator", enable_seqscan="off")
    [row] = await fetch(explain, "EXPLAIN (ANALYZE, FORMAT JSON) " + query(name), *args)
    plan: dict[str, Any] = json.loads(row[0])[0]["Plan"]
    return plan


async def test_a_claim_reads_no_row_of_a_backlog_it_cannot_claim(database_url: str) -> None:
    await insert(database_url, BACKLOG, kind="double", delay=3600)  # due in an hour
    await insert(database_url, BACKLOG, kind="elsewhere")  # due, of a kind this node does not run
    await insert(database_url, 3, kind="double")
    await insert(database_url, 2, kind="gated", priority=5)
    plan = await analyzed(database_url, "claim_jobs", ["double", "gated"], ["default"], [4], NODE, 30.0)
    assert set(job_status_reads(plan)) <= {"job_status_claim_idx", "job_status_pkey"}, job_status_reads(plan)
    removed = [n.get("Rows Removed by Filter", 0) for n in job_status_scans(plan)]
    assert sum(removed) == 0, removed
    # Each (queue, kind) range stops at the slots: 4 + 3 candidates, 4 claimed.
    assert rows_read(plan) < 20, rows_read(plan)
    claimed = await fetch(
        database_url,
        "SELECT kind, priority FROM orchestrator.job_status WHERE lease_node = $1 AND status = 'active'"
        " ORDER BY priority DESC, kind",
        NODE,
    )
    assert [(r["kind"], r["priority"]) for r in claimed] == [("gated", 5), ("gated", 5), ("double", 0), ("double", 0)]


async def test_next_due_reads_a_row_per_priority_not_per_job(database_url: str) -> None:
    for priority in (5, 0, -1):
        await insert(database_url, BACKLOG, kind="double", priority=priority, delay=3600)
    await insert(database_url, BACKLOG, kind="elsewhere", delay=10)
    plan = await analyzed(database_url, "next_due", ["double"], ["default"])
    assert set(job_status_reads(plan)) == {"job_status_claim_idx"}, job_status_reads(plan)
    # Four probes for the priorities (the last finds none below -1), three for
    # their first run_at: six rows (EXPLAIN rounds each loop's average up, so
    # a little more), against the 600 delayed ones.
    assert rows_read(plan) < 10, rows_read(plan)
