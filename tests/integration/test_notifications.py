"""Notifications come from the statements that move jobs (migration 0007), not triggers.

Every statement that ends jobs announces them on the schema's ``done``
channel (waiters on every node); every statement that moves a job's state,
attempt or progress announces it on ``events`` (the HTTP event stream).
Statements that move nothing (a lease renewal, a lost lease alone) announce
nothing. 200 ids per notification at most.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from orchestrator._migrations import load_migrations
from orchestrator._store import DONE_CHANNEL, EVENTS_CHANNEL, Store, TransitionRow, open_store
from tests.pg import fetch

Announced = dict[str, list[list[str]]]
END = "end-of-test-step"


async def announced(store: Store, url: str, step: Callable[[], Awaitable[Any]]) -> Announced:
    """The id lists announced on ``done`` and ``events`` while ``step`` ran."""
    got: Announced = {DONE_CHANNEL: [], EVENTS_CHANNEL: []}
    async with store.listen([DONE_CHANNEL, EVENTS_CHANNEL]) as notifications:
        await step()
        # Committed after the step's statements, so delivered after theirs.
        await fetch(url, "SELECT pg_notify('orchestrator_done', $1)", END)
        with trio.fail_after(20):
            async for channel, payload in notifications:
                if payload == END:
                    break
                got[channel].append(payload.split(","))
    return got


def ids(got: Announced, channel: str) -> list[str]:
    return sorted(i for chunk in got[channel] for i in chunk)


def chunk_sizes(got: Announced, channel: str) -> list[int]:
    return sorted(len(chunk) for chunk in got[channel])


async def submit(store: Store, n: int, *, max_attempts: int = 1) -> list[str]:
    job_ids = [uuid.uuid4() for _ in range(n)]
    await store.submit(
        kind="k", queue="default", owner_user_id="alice", owner_org_id="acme", priority=0,
        max_attempts=max_attempts, delay=0.0, job_ids=job_ids, payloads_json=["{}"] * n, unique_keys=[None] * n,
    )  # fmt: skip
    return sorted(str(j) for j in job_ids)


async def test_claiming_renewing_progress_and_finishing_250_jobs(database_url: str) -> None:
    async with open_store(database_url) as store:
        job_ids = await submit(store, 250)
        claimed: list[Any] = []

        async def claim() -> None:
            claimed.extend(await store.claim(kinds=["k"], slots={"default": 250}, node="n1", lease_seconds=30))

        got = await announced(store, database_url, claim)
        assert len(claimed) == 250
        # Started jobs are events; nothing finished.
        assert (ids(got, EVENTS_CHANNEL), got[DONE_CHANNEL]) == (job_ids, [])
        assert chunk_sizes(got, EVENTS_CHANNEL) == [50, 200]

        tokens = [r["lease_token"] for r in claimed]
        got = await announced(store, database_url, lambda: store.renew_leases("n1", 30, tokens))
        assert got == {DONE_CHANNEL: [], EVENTS_CHANNEL: []}

        progress = [TransitionRow(r["job_id"], r["lease_token"], "active", "active", progress=0.5) for r in claimed]
        got = await announced(store, database_url, lambda: store.apply_transitions(progress))
        assert (ids(got, EVENTS_CHANNEL), got[DONE_CHANNEL]) == (job_ids, [])

        complete = [
            TransitionRow(r["job_id"], r["lease_token"], "active", "completed", completed_at=r["started_at"])
            for r in claimed
        ]
        got = await announced(store, database_url, lambda: store.apply_transitions(complete))
        assert ids(got, DONE_CHANNEL) == ids(got, EVENTS_CHANNEL) == job_ids
        # One statement ended them all: two notifications per channel, not 250.
        assert chunk_sizes(got, DONE_CHANNEL) == [50, 200]
        # Writes that apply nothing announce nothing.
        got = await announced(store, database_url, lambda: store.apply_transitions(complete))
        assert got == {DONE_CHANNEL: [], EVENTS_CHANNEL: []}


async def test_cancelling_a_queued_job_announces_it_finished(database_url: str) -> None:
    async with open_store(database_url) as store:
        [job_id] = await submit(store, 1)
        [row] = await fetch(database_url, "SELECT created_at FROM orchestrator.job_status")

        async def cancel() -> None:
            cancelled = await store.cancel_queued(
                uuid.UUID(job_id), started_at=None, completed_at=row["created_at"], by="alice"
            )
            assert cancelled is not None and cancelled["status"] == "cancelled"

        got = await announced(store, database_url, cancel)
        assert got == {DONE_CHANNEL: [[job_id]], EVENTS_CHANNEL: [[job_id]]}


async def test_rescue_announces_what_it_ends_and_what_it_requeues(database_url: str) -> None:
    async with open_store(database_url) as store:
        failed = await submit(store, 1)
        retried = await submit(store, 1, max_attempts=2)
        cancelled = await submit(store, 1)
        await store.claim(kinds=["k"], slots={"default": 3}, node="dead", lease_seconds=30)
        lost_lease_only = await submit(store, 1)
        await fetch(
            database_url,
            "UPDATE orchestrator.job_status SET lease_node = 'dead', lease_token = 0 WHERE job_id = $1",
            uuid.UUID(lost_lease_only[0]),
        )
        await fetch(
            database_url,
            "UPDATE orchestrator.job_status SET cancel_requested_at = clock_timestamp() WHERE job_id = $1",
            uuid.UUID(cancelled[0]),
        )
        await fetch(database_url, "UPDATE orchestrator.job_status SET lease_expires_at = now() - interval '1 hour'")
        rescued: list[Any] = []

        async def rescue() -> None:
            rescued.extend(await store.rescue_expired())

        got = await announced(store, database_url, rescue)
        assert sorted(r["outcome"] for r in rescued) == ["cancelled", "failed", "queued", "retry"]
        assert ids(got, DONE_CHANNEL) == sorted(failed + cancelled)
        assert ids(got, EVENTS_CHANNEL) == sorted(failed + cancelled + retried)


async def test_failing_unusable_and_releasing_unstarted_claims(database_url: str) -> None:
    async with open_store(database_url) as store:
        job_ids = await submit(store, 2)
        rows = await store.claim(kinds=["k"], slots={"default": 2}, node="n1", lease_seconds=30)
        unusable, unstarted = sorted(rows, key=lambda r: str(r["job_id"]))
        got = await announced(
            store, database_url, lambda: store.fail_unusable([(unusable["job_id"], unusable["lease_token"], "no")])
        )
        assert got == {DONE_CHANNEL: [[job_ids[0]]], EVENTS_CHANNEL: [[job_ids[0]]]}
        release = [(unstarted["job_id"], unstarted["lease_token"], unstarted["previous_started_at"])]
        got = await announced(store, database_url, lambda: store.release_unstarted(release))
        # Back in the queue: an event, not an end.
        assert got == {DONE_CHANNEL: [], EVENTS_CHANNEL: [[job_ids[1]]]}


async def test_quarantining_malformed_rows_announces_them_finished(empty_database_url: str) -> None:
    url = empty_database_url
    migrations = load_migrations()
    async with open_store(url) as store:
        # A row only the schema from before migration 0004 allowed.
        await store.migrate(migrations[:3])
        job_id = uuid.uuid4()
        await fetch(
            url,
            "INSERT INTO orchestrator.job_status (job_id, kind, payload, owner_user_id, owner_org_id, run_at, created_at)"
            " VALUES ($1, 'k', '{}', '', '', now(), now())",
            job_id,
        )
        await store.migrate(migrations)
        got = await announced(store, url, lambda: store.quarantine_malformed())
        assert got == {DONE_CHANNEL: [[str(job_id)]], EVENTS_CHANNEL: [[str(job_id)]]}


async def test_a_producer_hears_only_that_jobs_ended_and_a_worker_hears_all(database_url: str) -> None:
    from orchestrator import Orchestrator, Principal

    async def routed_while(work: bool) -> list[str]:
        orch = Orchestrator(database_url, poll_interval=60)

        @orch.job("noop")
        async def noop(ctx: Any, payload: int) -> None:
            return None

        heard: list[str] = []
        ended = trio.Event()
        route = orch._route

        def spy(channel: str, payload: str) -> None:
            heard.append(channel)
            if payload == END:
                ended.set()
            else:
                route(channel, payload)

        orch._route = spy  # type: ignore[method-assign]
        async with orch.running(work=work):
            await orch.submit("noop", 1, owner=Principal(user_id="alice", org_id="acme"))
            await fetch(database_url, "SELECT pg_notify('orchestrator_cancel', $1)", str(uuid.uuid4()))
            # Sent last on a channel both hear, so delivered after the others.
            await fetch(database_url, "SELECT pg_notify('orchestrator_done', $1)", END)
            with trio.fail_after(20):
                await ended.wait()
        return heard

    assert set(await routed_while(work=False)) == {"done"}
    assert {"jobs", "cancel", "done"} <= set(await routed_while(work=True))
