"""``orchestrator.submit_job(...)``: enqueue from plain SQL, run by a trio worker.

Any language that speaks SQL can hand work to the daemons with one
statement; the worker validates the payload when it runs the job. Every
statement here runs on a fresh connection with the server's default
search_path (without the orchestrator's schema), as a foreign client's would.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import trio

from orchestrator import JobState, Orchestrator
from tests.integration.helpers import ALICE, job_rows, make_orchestrator, one_row
from tests.pg import fetch

#: Positional form: every argument, as a client library would bind them.
SUBMIT = "SELECT orchestrator.submit_job($1, $2::jsonb, $3, $4, $5, $6, $7, $8, $9) AS job_id"


async def submit(
    url: str,
    kind: str,
    payload: Any,
    *,
    owner_user_id: str = "alice",
    owner_org_id: str = "acme",
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 1,
    delay_seconds: float = 0.0,
    unique_key: str | None = None,
) -> uuid.UUID:
    [row] = await fetch(
        url, SUBMIT, kind, json.dumps(payload), owner_user_id, owner_org_id,
        queue, priority, max_attempts, delay_seconds, unique_key,
    )  # fmt: skip
    job_id: uuid.UUID = row["job_id"]
    return job_id


async def claimed_once(orch: Orchestrator) -> None:
    """Return once the worker's dispatcher finished a claim: it then sleeps until woken."""
    with trio.fail_after(20):
        while orch.dispatcher is None or orch.dispatcher.claims < 1:
            await trio.sleep(0.01)


async def test_one_statement_enqueues_and_notifies_a_running_worker(database_url: str) -> None:
    # The worker polls rarely: only the insert notification wakes it in time.
    orch = make_orchestrator(database_url, poll_interval=600)
    async with orch.running():
        await claimed_once(orch)
        job_id = await submit(database_url, "double", {"w": 21}, priority=3)
        final = await orch.wait(job_id, by=ALICE, timeout=20)
    assert isinstance(job_id, uuid.UUID)
    assert (final.kind, final.state, final.result, final.payload) == (
        "double",
        JobState.COMPLETED,
        {"w": 42},
        {"w": 21},
    )
    assert (final.owner.user_id, final.owner.org_id, final.priority, final.attempt) == ("alice", "acme", 3, 1)
    assert final.created_at < final.started_at < final.completed_at


async def test_the_function_sends_the_insert_notification(database_url: str) -> None:
    import trio_asyncio

    received: list[tuple[str, str]] = []

    async def listen_and_submit() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.add_listener(
                "orchestrator_jobs", lambda _c, _p, channel, payload: received.append((channel, payload))
            )
            await conn.fetchval("SELECT orchestrator.submit_job('double', '{\"w\": 1}', 'alice', 'acme')")
            # The notification is sent at commit; asyncpg reads it before
            # the reply to the next statement, which follows it on the wire.
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(listen_and_submit)()
    assert received == [("orchestrator_jobs", "")]


async def test_a_unique_key_returns_the_existing_job(database_url: str) -> None:
    first = await submit(database_url, "double", {"w": 1}, unique_key="nightly")
    again = await submit(database_url, "double", {"w": 2}, unique_key="nightly")
    other_kind = await submit(database_url, "gated", {"w": 1}, unique_key="nightly")
    other_org = await submit(database_url, "double", {"w": 1}, owner_org_id="evil-corp", unique_key="nightly")
    without_key = [await submit(database_url, "double", {"w": 1}) for _ in range(2)]
    assert again == first
    assert len({first, other_kind, other_org, *without_key}) == 5
    rows = await job_rows(database_url)
    assert len(rows) == 5
    assert (await one_row(database_url, first))["status"] == "queued"

    orch = make_orchestrator(database_url)
    async with orch.running():
        await orch.wait(first, by=ALICE, timeout=20)
    after_end = await submit(database_url, "double", {"w": 3}, unique_key="nightly")
    assert after_end != first, "a unique key is free again once its job ended"


async def test_named_arguments_with_defaults(database_url: str) -> None:
    [row] = await fetch(
        database_url,
        "SELECT orchestrator.submit_job(kind => 'double', payload => '{\"w\": 2}',"
        " owner_user_id => 'a', owner_org_id => 'o') AS job_id",
    )
    [delayed] = await fetch(
        database_url,
        "SELECT orchestrator.submit_job(kind => 'double', payload => '{}', owner_user_id => 'a',"
        " owner_org_id => 'o', delay_seconds => 3600, max_attempts => 4, queue => 'slow', priority => -2)"
        " AS job_id",
    )
    [job] = await fetch(database_url, "SELECT * FROM orchestrator.job_status WHERE job_id = $1", row["job_id"])
    assert (job["kind"], job["queue"], job["priority"], job["max_attempts"], job["attempt"]) == (
        "double", "default", 0, 1, 1,
    )  # fmt: skip
    assert (job["status"], job["owner_user_id"], job["owner_org_id"], job["unique_key"]) == ("queued", "a", "o", None)
    assert json.loads(job["payload"]) == {"w": 2}
    assert job["run_at"] == job["created_at"] and job["started_at"] is None
    [later] = await fetch(database_url, "SELECT * FROM orchestrator.job_status WHERE job_id = $1", delayed["job_id"])
    assert (later["queue"], later["priority"], later["max_attempts"]) == ("slow", -2, 4)
    assert later["run_at"] - later["created_at"] == timedelta(hours=1)


async def test_a_bad_payload_fails_the_job_without_crashing_the_worker(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        bad = await submit(database_url, "double", {"w": "wide"}, max_attempts=3)
        failed = await orch.wait(bad, by=ALICE, timeout=20)
        good = await submit(database_url, "double", {"w": 4})
        completed = await orch.wait(good, by=ALICE, timeout=20)
    assert failed.state is JobState.FAILED
    assert failed.attempt == 1, "a payload that cannot validate must not be retried"
    assert failed.error["type"] == "ValidationError" and "w" in failed.error["message"]
    assert failed.created_at < failed.started_at < failed.completed_at
    assert (completed.state, completed.result) == (JobState.COMPLETED, {"w": 8})


async def test_a_delayed_job_waits_for_its_time(database_url: str) -> None:
    orch = make_orchestrator(database_url, poll_interval=0.05)
    async with orch.running():
        later = await submit(database_url, "double", {"w": 1}, delay_seconds=3600)
        now = await submit(database_url, "double", {"w": 1})
        await orch.wait(now, by=ALICE, timeout=20)
        # Several claim rounds pass after the due job ran; the delayed one stays.
        with trio.fail_after(20):
            claims = orch.dispatcher.claims if orch.dispatcher else 0
            while orch.dispatcher is not None and orch.dispatcher.claims < claims + 3:
                await trio.sleep(0.05)
    assert (await one_row(database_url, later))["status"] == "queued"
