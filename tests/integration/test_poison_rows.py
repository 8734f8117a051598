"""Rows no worker can use must not stop any worker (issue: hostile input).

Rows are written the way an older version (before migration 0004), another
language or a hand-written statement could have written them; the workers
must keep serving everybody else, fail those rows with a reason, and let
their owners read and cancel them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio

from orchestrator import JobState, Orchestrator, StoreError
from orchestrator._migrations import load_migrations
from orchestrator._store import open_store
from tests.integration.helpers import ALICE, job_rows, make_orchestrator, one_row
from tests.pg import fetch

INSERT = (
    "INSERT INTO orchestrator.job_status (job_id, kind, queue, payload, owner_user_id, owner_org_id,"
    " run_at, created_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, {run_at}, now())"
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def insert(url: str, *, kind: str = "double", queue: str = "default", payload: str = '{"w": 1}',
                 user: str = "alice", org: str = "acme", run_at: str = "now()") -> uuid.UUID:  # fmt: skip
    job_id = uuid.uuid4()
    await fetch(url, INSERT.format(run_at=run_at), job_id, kind, queue, payload, user, org)
    return job_id


async def migrate(url: str, count: int | None = None) -> None:
    migrations = load_migrations()
    async with open_store(url) as store:
        await store.migrate(migrations if count is None else migrations[:count])


async def test_poison_rows_from_before_the_boundary_are_failed_and_workers_keep_serving(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    # The schema as it was before migration 0004, with rows it allowed.
    await migrate(url, 3)
    poison = {
        "far future run_at": await insert(url, run_at="'33715-01-01'::timestamptz"),
        "empty owner": await insert(url, user="", org=""),
        "control character in kind": await insert(url, kind="dou\x01ble"),
        "control character in queue": await insert(url, queue="de\x7ffault"),
        "payload too deep for Python": await insert(url, payload=nested(3000)),
        "payload of the wrong type": await insert(url, payload='{"w": "not a number"}'),
    }
    await migrate(url)

    first, second = make_orchestrator(url), make_orchestrator(url)
    with trio.fail_after(60):
        async with first.running(), second.running():
            # Both workers are up; ordinary work still flows through them.
            jobs = [await first.submit("double", {"w": n}, owner=ALICE) for n in range(20)]
            done = await second.wait_many([j.id for j in jobs], by=ALICE)
            assert [d.result for d in done] == [{"w": 2 * n} for n in range(20)]
            assert first.dispatcher is not None and second.dispatcher is not None
            ended = {
                name: await first.wait(job_id, by=ALICE)
                for name, job_id in poison.items()
                if name not in ("empty owner", "far future run_at")
            }
            # Reading and cancelling a poison job works.
            far = await first.get(poison["far future run_at"], by=ALICE)
            assert far.state is JobState.FAILED
            outcome = await first.cancel(poison["far future run_at"], by=ALICE)
            assert (outcome.cancelled, outcome.reason) == (False, "already failed")
            listed = await first.list(by=ALICE, limit=100)
            assert {j.id for j in listed} >= set(poison.values()) - {poison["empty owner"]}
            # Still serving after all of that.
            last = await second.submit("double", {"w": 100}, owner=ALICE)
            assert (await first.wait(last.id, by=ALICE)).result == {"w": 200}

    for name in ("control character in kind", "control character in queue"):
        assert ended[name].state is JobState.FAILED, name
        assert ended[name].error["type"] == "InvalidJob", name
    assert "must not contain control characters" in ended["control character in kind"].error["message"]
    assert ended["payload too deep for Python"].state is JobState.FAILED
    assert "cannot be decoded" in ended["payload too deep for Python"].error["message"]
    assert ended["payload of the wrong type"].state is JobState.FAILED
    assert ended["payload of the wrong type"].error["type"] == "ValidationError"
    assert far.error["type"] == "InvalidJob" and "run_at" in far.error["message"]
    empty = await one_row(url, poison["empty owner"])
    assert empty["status"] == "failed"
    assert "owner_user_id: must not be empty" in json.loads(empty["error"])["message"]
    # Every row is terminal and ordered (G2): nothing is left for a worker to trip on.
    rows = await job_rows(url)
    assert all(r["status"] in ("completed", "failed") for r in rows)
    assert all(r["completed_at"] >= r["created_at"] for r in rows)


async def test_hand_written_rows_that_break_the_rules_are_refused(database_url: str) -> None:
    cases: list[dict[str, Any]] = [
        {"user": ""},
        {"org": "x" * 129},
        {"kind": "a\x01b"},
        {"queue": ""},
        {"run_at": "'33715-01-01'::timestamptz"},
        {"run_at": "'infinity'::timestamptz"},
    ]
    # One loop for all the inserts, so their errors arrive unwrapped.
    async with trio_asyncio.open_loop():
        for case in cases:
            with pytest.raises(asyncpg.CheckViolationError, match="job_status_(well_formed|queue)_check"):
                await insert(database_url, **case)
    assert await job_rows(database_url) == []


async def test_a_far_future_row_does_not_stop_the_next_due_wait(database_url: str) -> None:
    # Allowed by the rules (year 8999), and far beyond any wait.
    far = await insert(database_url, run_at="'8999-01-01'::timestamptz")
    orch = make_orchestrator(database_url)
    with trio.fail_after(30):
        async with orch.running():
            job = await orch.submit("double", {"w": 4}, owner=ALICE)
            assert (await orch.wait(job.id, by=ALICE)).result == {"w": 8}
            still = await orch.get(far, by=ALICE)
            assert still.state is JobState.QUEUED and still.run_at.year == 8999
            assert (await orch.cancel(far, by=ALICE)).cancelled


async def test_a_result_that_cannot_be_stored_fails_only_its_job(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.2, concurrency=10)

    @orch.job("bad_result", max_attempts=3)
    async def bad_result(ctx: Any, payload: Any) -> Any:
        return {"ratio": float("nan"), "text": "a\x00b"}

    @orch.job("good")
    async def good(ctx: Any, payload: int) -> int:
        return payload + 1

    with trio.fail_after(30):
        async with orch.running():
            bad = await orch.submit("bad_result", {}, owner=ALICE)
            goods = await orch.submit_many("good", list(range(10)), owner=ALICE)
            failed = await orch.wait(bad.id, by=ALICE)
            finished = await orch.wait_many([g.id for g in goods], by=ALICE)
    # Not retried: the same result would be refused on every attempt.
    assert (failed.state, failed.attempt) == (JobState.FAILED, 1)
    assert failed.error["type"] == "InvalidResult" and failed.error["message"].startswith(("result.ratio", "result.text"))
    assert [f.result for f in finished] == list(range(1, 11))


async def test_a_store_error_on_one_write_fails_that_job_only(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running():
        writer = orch.writer
        assert writer is not None
        # A row the database refuses (progress out of range) batched with a good one.
        from orchestrator._store import TransitionRow

        ok_job = await orch.submit("gated", {"w": 1}, owner=ALICE)
        with trio.fail_after(10):
            await orch.gate.started.wait()  # type: ignore[attr-defined]
        row = await one_row(database_url, ok_job.id)
        [lease] = await fetch(database_url, "SELECT lease_token FROM orchestrator.job_status WHERE job_id = $1", ok_job.id)
        token = lease["lease_token"]
        bad = TransitionRow(job_id=ok_job.id, token=token, expected="active", next="active", progress=2.0)
        good = TransitionRow(job_id=uuid.uuid4(), token=1, expected="active", next="active", progress=0.5)
        results: dict[str, Any] = {}

        async def write(name: str, r: TransitionRow) -> None:
            try:
                results[name] = await writer.write(r)
            except StoreError as exc:
                results[name] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "bad", bad)
            nursery.start_soon(write, "good", good)
        orch.gate.release.set()  # type: ignore[attr-defined]
        await orch.wait(ok_job.id, by=ALICE)
    assert isinstance(results["bad"], StoreError) and results["bad"].constraint == "job_status_progress_check"
    assert results["good"] is False  # applied nowhere (no such job), but not an error
    assert row["status"] == "active"


async def test_an_expired_lease_on_a_malformed_row_fails_it_with_the_rule(empty_database_url: str) -> None:
    url = empty_database_url
    await migrate(url, 3)
    malformed = await insert(url, user="")
    healthy = await insert(url)
    # Both leased by a node that stopped renewing, before migration 0004.
    await fetch(
        url,
        "UPDATE orchestrator.job_status SET status = 'active', started_at = now(), lease_node = 'gone',"
        " lease_token = 1, lease_expires_at = now() - interval '1 minute'",
    )
    await migrate(url)
    async with open_store(url) as store:
        rescued = {r["job_id"]: r["outcome"] for r in await store.rescue_expired()}
    assert rescued == {malformed: "invalid", healthy: "failed"}
    errors = {r["job_id"]: json.loads(r["error"]) for r in await job_rows(url)}
    assert errors[malformed]["type"] == "InvalidJob"
    assert "owner_user_id: must not be empty" in errors[malformed]["message"]
    assert errors[healthy]["type"] == "LeaseExpired"
