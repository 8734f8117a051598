"""Migrating from zero, again as a no-op, and from two runners at once."""

from __future__ import annotations

from pathlib import Path

import trio

from orchestrator._migrations import load_migrations
from orchestrator._store import open_store
from tests.pg import fetch

ROOT = Path(__file__).resolve().parents[2]
EXPECTED_COLUMNS = {
    "job_id", "kind", "queue", "payload", "owner_user_id", "owner_org_id", "status", "priority",
    "attempt", "max_attempts", "run_at", "created_at", "started_at", "completed_at", "lease_node",
    "lease_token", "lease_expires_at", "cancel_requested_at", "cancel_requested_by", "progress",
    "result", "error", "unique_key", "rescued_from", "trace_context",
}  # fmt: skip


async def migrate(url: str) -> list[str]:
    async with open_store(url) as store:
        return await store.migrate(load_migrations())


async def test_migrating_from_zero_gives_the_expected_schema(empty_database_url: str) -> None:
    applied = await migrate(empty_database_url)
    assert applied == [m.name for m in load_migrations()]
    columns = await fetch(
        empty_database_url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'orchestrator' AND table_name = 'job_status'",
    )
    assert {c["column_name"] for c in columns} == EXPECTED_COLUMNS
    constraints = {
        r["conname"]: r["def"]
        for r in await fetch(
            empty_database_url,
            "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
            " WHERE conrelid = 'orchestrator.job_status'::regclass",
        )
    }
    check = constraints["job_status_timestamps_check"]
    assert "started_at >= created_at" in check and "completed_at >= started_at" in check
    assert "job_status_terminal_timestamps_check" in constraints
    enum = await fetch(
        empty_database_url,
        "SELECT enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid"
        " WHERE t.typname = 'job_state' ORDER BY enumsortorder",
    )
    assert [r["enumlabel"] for r in enum] == ["queued", "active", "completed", "failed", "cancelled"]
    token_columns = await fetch(
        empty_database_url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'orchestrator' AND table_name = 'api_tokens'",
    )
    assert {c["column_name"] for c in token_columns} == {
        "token_id", "token_hash", "user_id", "org_id", "role", "name", "created_at", "expires_at", "revoked_at",
        "last_used_at",
    }  # fmt: skip
    # Notifications of moved jobs come from the statements (0007): the only
    # triggers left on job_status are the statement-level INSERT ones.
    triggers = await fetch(
        empty_database_url,
        "SELECT tgname, pg_get_triggerdef(oid) AS def FROM pg_trigger"
        " WHERE tgrelid = 'orchestrator.job_status'::regclass AND NOT tgisinternal ORDER BY tgname",
    )
    assert [t["tgname"] for t in triggers] == ["job_status_events_inserted", "job_status_inserted"]
    assert all("AFTER INSERT" in t["def"] and "FOR EACH STATEMENT" in t["def"] for t in triggers)
    functions = await fetch(
        empty_database_url,
        "SELECT proname FROM pg_proc WHERE pronamespace = 'orchestrator'::regnamespace ORDER BY proname",
    )
    names = [f["proname"] for f in functions]
    assert {"announce_jobs", "notify_job_ids", "notify_job_events"} <= set(names)
    assert "notify_jobs_finished" not in names and "notify_job_finished" not in names
    # The queue-depth gauge's one stored row (0011).
    depth = await fetch(empty_database_url, "SELECT depths FROM orchestrator.queue_depth")
    assert len(depth) == 1
    # Migration 0005 is unused on purpose.
    migration_names = [m.name for m in load_migrations()]
    assert "0007_notify_from_statements.sql" in migration_names
    assert not any(n.startswith("0005") for n in migration_names)
    # Nothing leaked into the host application's public schema.
    public = await fetch(empty_database_url, "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'")
    assert public[0]["n"] == 0


async def test_migrating_again_is_a_no_op(empty_database_url: str) -> None:
    first = await migrate(empty_database_url)
    second = await migrate(empty_database_url)
    assert first and second == []
    rows = await fetch(empty_database_url, "SELECT name FROM orchestrator.schema_migrations ORDER BY name")
    assert [r["name"] for r in rows] == first


async def test_two_concurrent_migrations_apply_each_file_once(empty_database_url: str) -> None:
    results: list[list[str]] = []

    async def run() -> None:
        results.append(await migrate(empty_database_url))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(run)
    names = [m.name for m in load_migrations()]
    assert sorted(results, key=len) == [[], names]
    rows = await fetch(empty_database_url, "SELECT name FROM orchestrator.schema_migrations")
    assert sorted(r["name"] for r in rows) == names


async def test_a_custom_schema_holds_every_object(empty_database_url: str) -> None:
    async with open_store(empty_database_url, schema="jobs_here") as store:
        await store.migrate(load_migrations())
    tables = await fetch(
        empty_database_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'jobs_here' ORDER BY tablename"
    )
    assert [t["tablename"] for t in tables] == [
        "api_tokens", "job_status", "nodes", "periodic_schedules", "queue_depth", "schema_migrations",
    ]  # fmt: skip


async def announced(url: str, channel: str, *statements: str) -> list[str]:
    """The payloads of the notifications on ``channel`` that ``statements`` sent."""
    import asyncpg
    import trio_asyncio

    async def scenario() -> list[str]:
        received: list[str] = []
        listener = await asyncpg.connect(url)
        writer = await asyncpg.connect(url)
        try:
            await listener.add_listener(channel, lambda *args: received.append(args[3]))
            for statement in statements:
                await writer.execute(statement)
            await listener.execute("SELECT 1")  # delivers what is pending
            return received
        finally:
            await listener.close()
            await writer.close()

    async with trio_asyncio.open_loop():
        payloads: list[str] = await trio_asyncio.aio_as_trio(scenario)()
        return payloads


async def test_inserted_jobs_are_announced_as_events_and_updates_by_hand_announce_nothing(database_url: str) -> None:
    payloads = await announced(
        database_url,
        "orchestrator_events",
        "INSERT INTO orchestrator.job_status (job_id, kind, payload, owner_user_id, owner_org_id, run_at, created_at)"
        " SELECT gen_random_uuid(), 'k', '{}', 'alice', 'acme', now(), now() FROM generate_series(1, 250)",
        # Since 0007 the statements that move jobs announce them
        # (tests/integration/test_notifications.py); no trigger runs on UPDATE.
        "UPDATE orchestrator.job_status SET lease_expires_at = now()",
        "UPDATE orchestrator.job_status SET progress = 0.5",
        "UPDATE orchestrator.job_status SET status = 'cancelled', completed_at = created_at + interval '1 s'",
    )
    rows = await fetch(database_url, "SELECT job_id::text AS id FROM orchestrator.job_status")
    assert sorted(len(p.split(",")) for p in payloads) == [50, 200]
    assert sorted(i for p in payloads for i in p.split(",")) == sorted(r["id"] for r in rows)


async def run_script(url: str, text: str) -> None:
    """Each statement of ``text`` on its own, outside a transaction (as psql runs a file)."""
    import asyncpg
    import trio_asyncio

    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in body.split(";") if s.strip()]

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(run)()


async def test_the_documented_concurrent_build_of_the_retention_index_replaces_migration_0009(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    migrations = load_migrations()
    before = [m for m in migrations if m.name < "0009"]
    async with open_store(url) as store:
        await store.migrate(before)
    await fetch(
        url,
        "INSERT INTO orchestrator.job_status (job_id, kind, payload, owner_user_id, owner_org_id, status,"
        " run_at, created_at, started_at, completed_at)"
        " SELECT gen_random_uuid(), 'double', '{}', 'alice', 'acme', 'completed',"
        "  now() - interval '2 days', now() - interval '2 days', now() - interval '1 day', now()"
        " FROM generate_series(1, 500)",
    )
    script = (ROOT / "docs" / "retention-index-concurrently.sql").read_text()
    assert "CREATE INDEX CONCURRENTLY" in script
    await run_script(url, script)
    # Again, as after an interruption: nothing doubled, nothing refused.
    await run_script(url, script)
    applied = await migrate(url)
    assert applied == [m.name for m in migrations if m.name >= "0010"]
    [index] = await fetch(
        url,
        "SELECT pg_get_indexdef(indexrelid) AS def, indisvalid FROM pg_index"
        " WHERE indexrelid = 'orchestrator.job_status_retention_idx'::regclass",
    )
    assert index["indisvalid"]
    # The index migration 0009 itself would have built.
    migration = next(m for m in migrations if m.name.startswith("0009")).sql
    assert "(status, completed_at)" in migration and "(status, completed_at)" in index["def"]
    assert "WHERE (status = ANY" in index["def"]
