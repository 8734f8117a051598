"""Several nodes on one database: leases, rescue, fencing, cross-node cancel."""

from __future__ import annotations

import urllib.parse
import uuid

import trio

from orchestrator import JobContext, JobRecord, JobState, Orchestrator
from tests.integration.helpers import ALICE, BOB, Size, make_orchestrator, one_row
from tests.pg import fetch


async def claim_as_dead_node(orch: Orchestrator, *, release: bool = False) -> tuple[dict, int]:
    """Claim (and so start) the one queued job as a node that then dies
    (never heartbeats); with ``release``, it first gives the claim back unstarted."""
    store = orch.store
    [row] = await store.claim(kinds=["double", "gated"], slots={"default": 1}, node="dead-node", lease_seconds=0.2)
    token = row["lease_token"]
    assert row["started_at"] > row["created_at"] and row["previous_started_at"] is None
    if release:
        job = (row["job_id"], token, row["previous_started_at"])
        assert await store.release_unstarted([job]) == {row["job_id"]}
        # Only once: the job is no longer active under that token.
        assert await store.release_unstarted([job]) == set()
    return row, token


async def submit_to_dead_node(url: str, *, max_attempts: int, release: bool = False) -> uuid.UUID:
    """One job, claimed (made active by the claim) by a node that dies."""
    producer = make_orchestrator(url)
    async with producer.running(work=False):
        job = await producer.submit("double", {"w": 5}, owner=ALICE, max_attempts=max_attempts)
        await claim_as_dead_node(producer, release=release)
    return job.id


async def rescue(url: str, job_id: uuid.UUID) -> tuple[JobRecord, int]:
    """Run a live node until the job ends; the job and how many it rescued."""
    rescuer = make_orchestrator(url, lease_seconds=0.3, poll_interval=0.05)
    async with rescuer.running():
        final = await rescuer.wait(job_id, by=ALICE, timeout=30)
        return final, rescuer.dispatcher.rescued if rescuer.dispatcher else 0


async def test_a_job_whose_node_died_is_rescued_and_run_again(database_url: str) -> None:
    job_id = await submit_to_dead_node(database_url, max_attempts=2)
    final, rescued = await rescue(database_url, job_id)
    assert (final.state, final.attempt, final.result) == (JobState.COMPLETED, 2, {"w": 10})
    assert final.error["type"] == "LeaseExpired" and "dead-node" in final.error["message"]
    assert rescued == 1
    row = await one_row(database_url, job_id)
    assert row["created_at"] < row["started_at"] < row["completed_at"]


async def test_a_rescued_job_with_no_attempts_left_fails_with_the_reason(database_url: str) -> None:
    job_id = await submit_to_dead_node(database_url, max_attempts=1)
    final, _ = await rescue(database_url, job_id)
    assert (final.state, final.attempt) == (JobState.FAILED, 1)
    assert final.error == {"type": "LeaseExpired", "message": "node dead-node stopped renewing its lease"}
    assert final.started_at < final.completed_at


async def test_a_claim_released_unstarted_goes_back_as_it_was_without_using_an_attempt(database_url: str) -> None:
    job_id = await submit_to_dead_node(database_url, max_attempts=1, release=True)
    [row] = await fetch(
        database_url, "SELECT status::text, attempt, started_at, lease_token FROM orchestrator.job_status"
    )
    assert (row["status"], row["attempt"], row["started_at"], row["lease_token"]) == ("queued", 1, None, None)
    final, rescued = await rescue(database_url, job_id)
    assert (final.state, final.attempt, rescued) == (JobState.COMPLETED, 1, 0)


async def test_a_cancel_made_while_the_node_is_down_applies_when_the_job_is_rescued(database_url: str) -> None:
    job_id = await submit_to_dead_node(database_url, max_attempts=3)
    canceller = make_orchestrator(database_url, poll_interval=0.05)
    rescuer = make_orchestrator(database_url, lease_seconds=0.3, poll_interval=0.05)
    async with canceller.running(work=False):
        async with trio.open_nursery() as nursery:
            outcome = {}

            async def cancel() -> None:
                outcome["it"] = await canceller.cancel(job_id, by=ALICE)

            nursery.start_soon(cancel)
            # The request is durable before any live node could act on it.
            with trio.fail_after(10):
                while not (await one_row(database_url, job_id))["cancel_requested_at"]:
                    await trio.sleep(0.01)
            async with rescuer.running():
                with trio.fail_after(30):
                    while "it" not in outcome:
                        await trio.sleep(0.01)
    assert outcome["it"].cancelled and outcome["it"].state is JobState.CANCELLED
    row = await one_row(database_url, job_id)
    assert (row["status"], row["attempt"]) == ("cancelled", 1)


async def test_a_node_that_lost_its_lease_stops_the_handler_and_writes_nothing(database_url: str) -> None:
    node = make_orchestrator(database_url, lease_seconds=0.3, poll_interval=0.05)
    async with node.running():
        job = await node.submit("gated", {"w": 1}, owner=ALICE)
        await node.gate.started.wait()
        # Another node took the job over (as a rescuer and a new claim would).
        await fetch(
            database_url,
            "UPDATE orchestrator.job_status SET lease_node = 'other', lease_token = lease_token + 1000"
            " WHERE job_id = $1",
            job.id,
        )
        before = await one_row(database_url, job.id)
        with trio.fail_after(10):
            while node.dispatcher and node.dispatcher.running:
                await trio.sleep(0.01)
    assert node.gate.cancelled
    after = await one_row(database_url, job.id)
    assert after == before and after["status"] == "active"


async def test_a_cancel_from_another_process_reaches_the_running_node(database_url: str) -> None:
    worker = make_orchestrator(database_url, poll_interval=0.05)
    web = make_orchestrator(database_url, poll_interval=5.0)
    async with worker.running(), web.running(work=False):
        job = await web.submit("gated", {"w": 1}, owner=ALICE)
        await worker.gate.started.wait()
        with trio.fail_after(10):
            outcome = await web.cancel(job.id, by=ALICE)
    assert outcome.cancelled and worker.gate.cancelled


async def test_stopping_a_worker_puts_its_running_job_back_in_the_queue(database_url: str) -> None:
    first = make_orchestrator(database_url, poll_interval=0.05, shutdown_grace=0.0)
    async with first.running():
        job = await first.submit("gated", {"w": 3}, owner=ALICE, max_attempts=1)
        await first.gate.started.wait()
    assert first.gate.cancelled
    row = await one_row(database_url, job.id)
    assert (row["status"], row["attempt"]) == ("queued", 1)
    second = make_orchestrator(database_url, poll_interval=0.05)
    second.gate.release.set()
    async with second.running():
        final = await second.wait(job.id, by=ALICE, timeout=30)
    assert (final.state, final.attempt, final.result) == (JobState.COMPLETED, 1, {"w": 3})


async def test_a_running_job_may_finish_within_the_shutdown_grace(database_url: str) -> None:
    node = make_orchestrator(database_url, poll_interval=0.05, shutdown_grace=30.0)
    async with node.running():
        job = await node.submit("gated", {"w": 3}, owner=ALICE)
        await node.gate.started.wait()
        # Let the handler through only once the node is draining.
        node.gate.release.set()
    assert (await one_row(database_url, job.id))["status"] == "completed"


async def test_unique_jobs_return_the_queued_or_active_one(database_url: str) -> None:
    orch = make_orchestrator(database_url, poll_interval=0.05)
    async with orch.running(work=False):
        first = await orch.submit("double", {"w": 1}, owner=ALICE, unique_key="report-7")
        again = await orch.submit("double", {"w": 2}, owner=BOB, unique_key="report-7")
        batch = await orch.submit_many(
            "double", [{"w": 3}, {"w": 4}], owner=ALICE, unique_keys=["report-7", "report-8"]
        )
        other_kind = await orch.submit("gated", {"w": 1}, owner=ALICE, unique_key="report-7")
    assert again.id == first.id and again.payload == {"w": 1}
    assert batch[0].id == first.id and batch[1].id != first.id
    assert other_kind.id != first.id
    async with orch.running():
        await orch.wait(first.id, by=ALICE)
        fresh = await orch.submit("double", {"w": 5}, owner=ALICE, unique_key="report-7")
    assert fresh.id != first.id


async def test_each_queue_keeps_to_its_own_concurrency(database_url: str) -> None:
    orch = Orchestrator(database_url, concurrency=10, queues={"a": 1, "b": 2}, poll_interval=0.05)
    running = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    release = trio.Event()

    @orch.job("in_a", queue="a")
    async def in_a(ctx: JobContext, payload: Size) -> None:
        await hold("a")

    @orch.job("in_b", queue="b")
    async def in_b(ctx: JobContext, payload: Size) -> None:
        await hold("b")

    async def hold(queue: str) -> None:
        running[queue] += 1
        peak[queue] = max(peak[queue], running[queue])
        try:
            await release.wait()
        finally:
            running[queue] -= 1

    async with orch.running():
        jobs = await orch.submit_many("in_a", [{"w": i} for i in range(4)], owner=ALICE)
        jobs += await orch.submit_many("in_b", [{"w": i} for i in range(4)], owner=ALICE)
        with trio.fail_after(10):
            while running != {"a": 1, "b": 2}:
                await trio.sleep(0.01)
        release.set()
        finals = await orch.wait_many([j.id for j in jobs], by=ALICE)
    assert peak == {"a": 1, "b": 2}
    assert {f.state for f in finals} == {JobState.COMPLETED}


async def test_jobs_survive_the_database_dropping_every_connection(database_url: str) -> None:
    orch = make_orchestrator(database_url, poll_interval=0.05)
    async with orch.running():
        job = await orch.submit("gated", {"w": 2}, owner=ALICE)
        await orch.gate.started.wait()
        await fetch(
            database_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        orch.gate.release.set()
        final = await orch.wait(job.id, by=ALICE, timeout=30)
        later = await orch.submit("double", {"w": 4}, owner=ALICE)
        again = await orch.wait(later.id, by=ALICE, timeout=30)
    assert final.state is JobState.COMPLETED and final.result == {"w": 2}
    assert again.state is JobState.COMPLETED


async def test_a_result_reached_while_the_database_is_away_is_persisted_when_it_returns(
    database_url: str, pg_server: str
) -> None:
    orch = make_orchestrator(database_url, poll_interval=0.05)
    dbname = urllib.parse.urlsplit(database_url).path.lstrip("/")
    async with orch.running():
        job = await orch.submit("gated", {"w": 6}, owner=ALICE)
        await orch.gate.started.wait()
        # The database goes away: no new connections, every open one closed.
        await fetch(pg_server, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        await fetch(
            pg_server,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            dbname,
        )
        orch.gate.release.set()
        # The handler has finished; its result waits in the writer, retried
        # with backoff until connections are allowed again.
        with trio.fail_after(10):
            while orch.writer is not None and orch.writer.failed_attempts == 0:
                await trio.sleep(0.01)
        await fetch(pg_server, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        final = await orch.wait(job.id, by=ALICE, timeout=60)
    assert (final.state, final.result, final.attempt) == (JobState.COMPLETED, {"w": 6}, 1)
    row = await one_row(database_url, job.id)
    assert row["created_at"] < row["started_at"] < row["completed_at"]
