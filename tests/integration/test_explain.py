"""``explain``: every answer, from rows a real worker or SQL put there."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from orchestrator import ExplainReason, InvalidJobId, JobNotFound, JobState, Orchestrator
from tests.integration.helpers import ALICE, MALLORY_ADMIN, make_orchestrator
from tests.pg import fetch


async def add_node(
    url: str,
    node_id: str,
    *,
    kinds: list[str],
    queues: dict[str, int],
    concurrency: int = 10,
    heartbeat_age: float = 0.0,
    lease_seconds: float = 30.0,
) -> None:
    await fetch(
        url,
        "INSERT INTO orchestrator.nodes (node_id, hostname, pid, kinds, queue_limits, concurrency, lease_seconds,"
        " heartbeat_at) VALUES ($1, 'elsewhere', 1, $2, $3::jsonb, $4, $5,"
        " clock_timestamp() - make_interval(secs => $6))",
        node_id, kinds, json.dumps(queues), concurrency, lease_seconds, heartbeat_age,
    )  # fmt: skip


async def lease(url: str, job_id: uuid.UUID, node: str, *, active: bool = True, expires_in: float = 30.0) -> None:
    """Give ``node`` the lease of a queued job, as a claim does (and start it, with ``active``)."""
    await fetch(
        url,
        "UPDATE orchestrator.job_status SET lease_node = $2, lease_token = nextval('orchestrator.lease_token_seq'),"
        " lease_expires_at = clock_timestamp() + make_interval(secs => $3),"
        " status = CASE WHEN $4 THEN 'active' ELSE status END,"
        " started_at = CASE WHEN $4 THEN greatest(clock_timestamp(), created_at + interval '1 microsecond') END"
        " WHERE job_id = $1",
        job_id, node, expires_in, active,
    )  # fmt: skip





async def test_a_delayed_job_waits_for_its_run_at(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE, delay=3600)
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.SCHEDULED and answer.state is JobState.QUEUED
    assert answer.due_in_seconds is not None and 3590 < answer.due_in_seconds <= 3600
    assert "waiting for its run_at: due in 60.0 min" in answer.message


async def test_a_job_retrying_after_backoff_names_its_attempt_and_last_error(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE, max_attempts=3)
        # What a failed first attempt with a 90 s backoff leaves behind.
        await fetch(
            database_url,
            "UPDATE orchestrator.job_status SET attempt = 2, run_at = clock_timestamp() + interval '90 seconds',"
            " error = '{\"type\": \"ValueError\", \"message\": \"boom\"}' WHERE job_id = $1",
            job.id,
        )
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.RETRYING
    assert (answer.attempt, answer.max_attempts) == (2, 3)
    assert answer.last_error == {"type": "ValueError", "message": "boom"}
    assert answer.due_in_seconds is not None and 80 < answer.due_in_seconds <= 90
    assert "attempt 2 of 3 is due in" in answer.message and "last error: ValueError: boom" in answer.message


async def test_no_live_node_runs_the_kind(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        await add_node(database_url, "other-kinds", kinds=["resize"], queues={"default": 5})
        # A node that ran the kind but stopped heartbeating an hour ago is not live.
        await add_node(database_url, "dead", kinds=["double"], queues={"default": 5}, heartbeat_age=3600)
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.NO_WORKER
    assert (answer.live_nodes, answer.nodes_running_kind) == (1, 0)
    assert "no live node runs kind 'double' (1 live node(s) in all)" in answer.message


async def test_live_nodes_run_the_kind_but_not_its_queue(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE, queue="reports")
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 5})
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.NO_WORKER
    assert (answer.nodes_running_kind, answer.nodes_serving_queue) == (1, 0)
    assert "claims from queue 'reports'" in answer.message


async def test_every_live_node_at_its_limit_is_queue_full(database_url: str) -> None:
    # A real worker that runs one job at a time, busy with a gated job.
    orch = make_orchestrator(database_url, concurrency=1)
    async with orch.running():
        first = await orch.submit("gated", {"w": 1}, owner=ALICE)
        await orch.gate.started.wait()  # type: ignore[attr-defined]
        second = await orch.submit("gated", {"w": 2}, owner=ALICE)
        answer = await orch.explain(second.id, by=ALICE)
        running = await orch.explain(first.id, by=ALICE)
        orch.gate.release.set()  # type: ignore[attr-defined]
        await orch.wait(second.id, by=ALICE)
    assert answer.reason is ExplainReason.QUEUE_FULL, answer.message
    assert (answer.nodes_serving_queue, answer.nodes_at_limit) == (1, 1)
    assert "queue 'default' is at its concurrency limit on every live node running kind 'gated'" in answer.message
    assert running.reason is ExplainReason.RUNNING and running.lease_node == orch.node_id


async def test_a_per_queue_limit_counts_as_full(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        busy = await orch.submit("double", {"w": 1}, owner=ALICE)
        waiting = await orch.submit("double", {"w": 2}, owner=ALICE)
        # Room for ten jobs in all, but one of queue default, which it runs.
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 1}, concurrency=10)
        await lease(database_url, busy.id, "n1")
        answer = await orch.explain(waiting.id, by=ALICE)
    assert answer.reason is ExplainReason.QUEUE_FULL


async def test_behind_jobs_of_higher_priority(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        low = await orch.submit("double", {"w": 1}, owner=ALICE, priority=0)
        await orch.submit_many("double", [{"w": 2}, {"w": 3}], owner=ALICE, priority=5)
        await orch.submit("double", {"w": 4}, owner=ALICE, priority=5, queue="elsewhere")
        later = await orch.submit("double", {"w": 5}, owner=ALICE, priority=-1)
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 5})
        answer = await orch.explain(low.id, by=ALICE)
        last = await orch.explain(later.id, by=ALICE)
    assert answer.reason is ExplainReason.BEHIND_HIGHER_PRIORITY
    assert (answer.ahead_higher_priority, answer.ahead) == (2, 2)
    assert "behind 2 job(s) of higher priority in queue 'default'" in answer.message
    assert (last.ahead_higher_priority, last.ahead) == (3, 3)


async def test_behind_jobs_of_the_same_priority_due_earlier(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        first = await orch.submit("double", {"w": 1}, owner=ALICE)
        second = await orch.submit("double", {"w": 2}, owner=ALICE)
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 5})
        answer = await orch.explain(second.id, by=ALICE)
        head = await orch.explain(first.id, by=ALICE)
    assert answer.reason is ExplainReason.BEHIND_EARLIER and answer.ahead == 1
    assert head.reason is ExplainReason.READY and head.ahead == 0
    assert "first in line in queue 'default'; 1 live node(s)" in head.message


async def test_a_claimed_job_not_started_names_its_node(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 5}, heartbeat_age=4)
        await lease(database_url, job.id, "n1", active=False, expires_in=20)
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.CLAIMED and answer.lease_node == "n1"
    assert answer.heartbeat_age_seconds is not None and 4 <= answer.heartbeat_age_seconds < 10
    assert "claimed by node n1 whose last heartbeat was" in answer.message


async def test_a_running_job_names_its_node_heartbeat_and_lease(database_url: str) -> None:
    orch = make_orchestrator(database_url, lease_seconds=30)
    async with orch.running():
        job = await orch.submit("gated", {"w": 1}, owner=ALICE)
        await orch.gate.started.wait()  # type: ignore[attr-defined]
        answer = await orch.explain(job.id, by=ALICE)
        orch.gate.release.set()  # type: ignore[attr-defined]
        await orch.wait(job.id, by=ALICE)
    assert answer.reason is ExplainReason.RUNNING and answer.state is JobState.ACTIVE
    assert answer.lease_node == orch.node_id
    assert answer.heartbeat_age_seconds is not None and 0 <= answer.heartbeat_age_seconds < 30
    assert answer.lease_expires_in_seconds is not None and 0 < answer.lease_expires_in_seconds <= 30
    assert f"on node {orch.node_id} whose last heartbeat was" in answer.message
    assert "the lease expires in" in answer.message and "attempt 1 of 1" in answer.message


async def test_a_worker_records_what_it_runs(database_url: str) -> None:
    orch = make_orchestrator(database_url, concurrency=7, queues={"default": 3}, lease_seconds=12)
    async with orch.running():
        [node] = await fetch(
            database_url,
            "SELECT kinds, queue_limits, concurrency, lease_seconds FROM orchestrator.nodes WHERE node_id = $1",
            orch.node_id,
        )
    assert sorted(node["kinds"]) == ["double", "gated"]
    assert json.loads(node["queue_limits"]) == {"default": 3}
    assert (node["concurrency"], node["lease_seconds"]) == (7, 12)


async def test_a_lease_that_ran_out_waits_for_a_rescuer(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        await add_node(database_url, "gone", kinds=["double"], queues={"default": 5}, heartbeat_age=120)
        await lease(database_url, job.id, "gone", expires_in=-60)
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.LEASE_EXPIRED and answer.lease_node == "gone"
    assert answer.lease_expires_in_seconds is not None and answer.lease_expires_in_seconds < -59
    assert "the lease expired 60 s ago: a live node will rescue it" in answer.message
    assert "last heartbeat was 2.0 min ago" in answer.message


async def test_a_cancel_requested_and_not_yet_delivered(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        await add_node(database_url, "n1", kinds=["double"], queues={"default": 5})
        await lease(database_url, job.id, "n1")
        # The request a cancel stores for the node running the job.
        await orch.store.fetch("request_cancel", job.id, "bob")
        answer = await orch.explain(job.id, by=ALICE)
    assert answer.reason is ExplainReason.CANCEL_REQUESTED
    assert answer.cancel_requested_by == "bob" and answer.lease_node == "n1"
    assert "cancel requested by bob" in answer.message and "not yet delivered" in answer.message


async def test_terminal_jobs_say_how_they_ended(database_url: str) -> None:
    orch = make_orchestrator(database_url)

    @orch.job("broken")
    async def broken(ctx: Any, payload: dict[str, int]) -> None:
        raise RuntimeError("disk on fire")

    async with orch.running():
        done = await orch.submit("double", {"w": 1}, owner=ALICE)
        failed = await orch.submit("broken", {}, owner=ALICE)
        await orch.wait_many([done.id, failed.id], by=ALICE)
    async with orch.running(work=False):
        cancelled = await orch.submit("double", {"w": 1}, owner=ALICE, delay=60)
        await orch.cancel(cancelled.id, by=ALICE)
        answers = {j.id: await orch.explain(j.id, by=ALICE) for j in (done, failed, cancelled)}
    assert {a.reason for a in answers.values()} == {ExplainReason.TERMINAL}
    assert answers[done.id].state is JobState.COMPLETED and "completed at" in answers[done.id].message
    assert answers[failed.id].state is JobState.FAILED
    assert "RuntimeError" in answers[failed.id].message and "disk on fire" in answers[failed.id].message
    assert answers[cancelled.id].state is JobState.CANCELLED
    assert answers[cancelled.id].message.startswith("cancelled at") and "by alice" in answers[cancelled.id].message


async def test_bad_unknown_and_foreign_ids_are_refused(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        with pytest.raises(InvalidJobId) as bad:
            await orch.explain("not-a-uuid", by=ALICE)
        with pytest.raises(JobNotFound):
            await orch.explain(uuid.uuid4(), by=ALICE)
        with pytest.raises(JobNotFound):
            await orch.explain(job.id, by=MALLORY_ADMIN)
    assert bad.value.field == "job_id" and "not-a-uuid" in str(bad.value)
