"""The lifecycle's hot statements run with generic plans; the rest do not.

The store sets a connection's ``plan_cache_mode`` before a statement of
``GENERIC_PLAN_STATEMENTS`` (planned once per connection, not on every call)
and back before any other statement, whose plan must fit the filters it was
given. A generic plan is chosen without the parameters' values, so each hot
statement's generic plan is read here, with EXPLAIN ANALYZE, on a large
analyzed table: it must reach job_status by its indexes only and read only
the rows the batch needs, however many rows the table holds.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from orchestrator._queries import query
from orchestrator._store import GENERIC_PLAN_STATEMENTS, Store, TransitionRow, _transition_columns, open_store
from tests.pg import fetch, job_status_reads, job_status_scans, rows_read

NODE = "generic-plan-node"
KINDS = ["noop"]
SLOTS = 10
#: Finished rows of another kind, and a backlog of queued rows of the claimed
#: one. With a backlog this large, a generic plan of the claim's update
#: joined to the claimed rows (`FROM due`) guessed that the claim takes many
#: rows and hashed all of job_status to update ten (a Seq Scan here on
#: PostgreSQL 18; 36 ms instead of 2.5 ms for a batch of ten on PostgreSQL 15
#: at 120,000 rows): the update now finds its rows by primary key.
HISTORY = 20_000
QUEUED = 120_000


async def insert_jobs(url: str, count: int, *, kind: str, status: str) -> None:
    finished = status == "completed"
    await fetch(
        url,
        "INSERT INTO orchestrator.job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id, status,"
        " run_at, created_at, started_at, completed_at)"
        " SELECT gen_random_uuid(), $2, 'default', to_jsonb(i), 'alice', 'acme', $3::orchestrator.job_state,"
        " t, t, CASE WHEN $4 THEN t + interval '1 ms' END, CASE WHEN $4 THEN t + interval '2 ms' END"
        " FROM generate_series(1, $1::int) AS i, LATERAL (SELECT clock_timestamp() - interval '1 h' AS t) AS now_",
        count, kind, status, finished,
    )  # fmt: skip


async def prepared_statement_plans(store: Store, conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """``{statement name: (generic plans, custom plans)}`` of ``conn``'s session, for the named statements it ran."""
    names = {query(name): name for name in ("claim_jobs", "list_jobs", "get_job", "apply_transitions")}
    rows = await store._aio(conn.fetch, "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
    return {names[r["statement"]]: (r["generic_plans"], r["custom_plans"]) for r in rows if r["statement"] in names}


async def test_hot_statements_get_generic_plans_and_the_others_keep_custom_ones(database_url: str) -> None:
    await insert_jobs(database_url, 4, kind="noop", status="queued")
    # One connection: every statement below shares its session, so the mode
    # must be switched both ways.
    async with open_store(database_url, size=1) as store:
        for _ in range(2):
            claimed = await store.claim(kinds=KINDS, slots={"default": 1}, node=NODE, lease_seconds=30)
            assert len(claimed) == 1
            listed = await store.list_jobs("acme", status=None, kind=None, queue=None, owner=None, limit=10)
            assert len(listed) == 4
            assert await store.get_job(claimed[0]["job_id"], "acme") is not None
        async with store.connection() as conn:
            plans = await prepared_statement_plans(store, conn)
            [mode] = await store._aio(conn.fetch, "SELECT current_setting('plan_cache_mode')")
    assert "claim_jobs" in GENERIC_PLAN_STATEMENTS and "list_jobs" not in GENERIC_PLAN_STATEMENTS
    assert plans == {"claim_jobs": (2, 0), "list_jobs": (0, 2), "get_job": (0, 2)}, plans
    assert mode[0] == "auto"  # the last statement was get_job's
    # Two switches per round: to generic plans for the claim, back after it.
    assert store.statements["set_plan_cache_mode"] == 4, store.statements


def literal(value: Any) -> str:
    """``value`` as an SQL literal for EXECUTE's arguments (whose types the prepared statement gives)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        items = ",".join("NULL" if v is None else '"' + str(v).replace('"', '\\"') + '"' for v in value)
        value = "{" + items + "}"
    return "'" + str(value).replace("'", "''") + "'"


async def active_rows(store: Store) -> list[TransitionRow]:
    """Transitions completing every job the node holds."""
    return [
        TransitionRow(
            job_id=r["job_id"], token=r["lease_token"], expected="active", next="completed",
            completed_at=r["started_at"] + timedelta(milliseconds=1),
        )  # fmt: skip
        for r in await held(store)
    ]


async def held(store: Store) -> list[Any]:
    """The jobs the node holds: id, lease token and start."""
    async with store.connection() as conn:
        rows: list[Any] = await store._aio(
            conn.fetch,
            "SELECT job_id, lease_token, started_at FROM job_status WHERE lease_node = $1 AND status = 'active'",
            NODE,
        )
    return rows


async def generic_plan(store: Store, name: str, *args: Any) -> dict[str, Any]:
    """The generic plan of statement ``name`` as it ran (EXPLAIN ANALYZE EXECUTE runs it)."""
    async with store.connection() as conn:
        await store._aio(conn.execute, "SET plan_cache_mode = force_generic_plan")
        await store._aio(conn.execute, f"PREPARE hot AS {query(name)}")
        try:
            arguments = ", ".join(literal(a) for a in args)
            [row] = await store._aio(conn.fetch, f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE hot({arguments})")
        finally:
            await store._aio(conn.execute, "DEALLOCATE hot")
            await store._aio(conn.execute, "RESET plan_cache_mode")
    plan: dict[str, Any] = json.loads(row[0])[0]["Plan"]
    return plan


def assert_reads_by_index(name: str, plan: dict[str, Any], *, rows: int) -> None:
    reads = job_status_reads(plan)
    assert reads and "Seq Scan" not in reads, (name, reads)
    removed = [n.get("Rows Removed by Filter", 0) for n in job_status_scans(plan)]
    assert sum(removed) == 0, (name, removed)
    assert rows_read(plan) <= rows, (name, rows_read(plan))


async def test_generic_plans_of_the_hot_statements_use_indexes_on_a_large_table(database_url: str) -> None:
    await insert_jobs(database_url, HISTORY, kind="history", status="completed")
    await insert_jobs(database_url, QUEUED, kind="noop", status="queued")
    await fetch(database_url, "ANALYZE orchestrator.job_status")
    claim = (KINDS, ["default"], [SLOTS], NODE, 30.0)
    # Each row read is one of the batch's, three times: found (the claim
    # index's range, or a primary-key probe to lock it), probed by the
    # update's join, written; nothing grows with the table.
    async with open_store(database_url, size=1) as store:
        plan = await generic_plan(store, "claim_jobs", *claim)
        assert_reads_by_index("claim_jobs", plan, rows=3 * SLOTS)
        first = await active_rows(store)
        assert len(first) == SLOTS

        plan = await generic_plan(store, "apply_transitions_and_claim", *_transition_columns(first), *claim)
        assert_reads_by_index("apply_transitions_and_claim", plan, rows=6 * SLOTS)
        second = await active_rows(store)
        assert len(second) == SLOTS and not {r.job_id for r in first} & {r.job_id for r in second}

        plan = await generic_plan(store, "apply_transitions", *_transition_columns(second))
        assert_reads_by_index("apply_transitions", plan, rows=3 * SLOTS)
        assert await held(store) == []
    finished = await fetch(
        database_url, "SELECT count(*) FROM orchestrator.job_status WHERE kind = 'noop' AND status = 'completed'"
    )
    assert finished[0][0] == 2 * SLOTS
    # A statement added to the set needs its generic plan read here first.
    assert GENERIC_PLAN_STATEMENTS == {"claim_jobs", "apply_transitions_and_claim", "apply_transitions"}
