"""A submit looks up each unique key it was given by the unique index, whatever the statistics say.

``submit_jobs`` returns the queued or active job that a payload's unique key
matched. PostgreSQL's statistics lag behind a table that grows fast: once they
counted one row with a unique key for an organisation and kind that really
held 92,000, a one-row submit read all of them (70 ms instead of 0.3), since
the planner was free to scan the (organisation, kind) range of the index and
join the keys afterwards. The lookup is now one index probe per distinct key.
The plan below is read with EXPLAIN ANALYZE, so the test counts rows.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from orchestrator._queries import query
from tests.pg import fetch, job_status_reads, rows_read, with_settings

#: Queued jobs with unique keys, inserted after the statistics were taken.
UNSEEN = 5_000


async def submit_plan(url: str, unique_keys: list[str | None]) -> dict[str, Any]:
    explain = with_settings(url, search_path="orchestrator")
    [row] = await fetch(
        explain, "EXPLAIN (ANALYZE, FORMAT JSON) " + query("submit_jobs"),
        "double", "default", "alice", "acme", 0, 3, 0.0,
        [uuid.uuid4() for _ in unique_keys], [json.dumps(k) for k in range(len(unique_keys))], unique_keys, None,
    )  # fmt: skip
    plan: dict[str, Any] = json.loads(row[0])[0]["Plan"]
    return plan


async def test_a_submit_probes_the_unique_keys_it_was_given_under_stale_statistics(database_url: str) -> None:
    await fetch(database_url, "ANALYZE orchestrator.job_status")  # an empty table, as far as the planner knows
    await fetch(
        database_url,
        "INSERT INTO orchestrator.job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id,"
        " run_at, created_at, unique_key)"
        " SELECT gen_random_uuid(), 'double', 'default', to_jsonb(i), 'alice', 'acme',"
        " clock_timestamp(), clock_timestamp(), 'key-' || i FROM generate_series(1, $1::int) AS i",
        UNSEEN,
    )
    for keys in ([None], ["fresh"], ["key-7", "fresh", None, "key-7"]):
        plan = await submit_plan(database_url, keys)
        assert "Seq Scan" not in job_status_reads(plan), (keys, job_status_reads(plan))
        # The insert's own row (and its conflict check), and a probe per distinct key.
        assert rows_read(plan) <= 2 * len(keys), (keys, rows_read(plan))
    # The existing job came back for key-7, once, however often the batch named it.
    rows = await fetch(
        with_settings(database_url, search_path="orchestrator"), query("submit_jobs"),
        "double", "default", "alice", "acme", 0, 3, 0.0,
        [uuid.uuid4(), uuid.uuid4()], ["1", "2"], ["key-9", "key-9"], None,
    )  # fmt: skip
    assert [r["unique_key"] for r in rows] == ["key-9"]
