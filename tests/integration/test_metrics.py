"""Prometheus metrics in process: /metrics of the HTTP app, the queue-depth
statement, database errors and reconnects, one registry per orchestrator."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from orchestrator._metrics import INVALID_LABEL, Metrics
from orchestrator._queries import query
from orchestrator._store import open_store
from tests.integration.helpers import ALICE, job_rows, make_orchestrator
from tests.integration.http_helpers import serving
from tests.integration.test_poison_rows import insert, migrate, nested
from tests.pg import connections_refused, fetch, job_status_reads, with_settings
from tests.unit.test_metrics import value

#: The partial indexes of live jobs only (migrations 0001 and 0002).
LIVE_INDEXES = {"job_status_claim_idx", "job_status_lease_node_idx", "job_status_lease_expiry_idx"}




async def test_the_http_app_serves_metrics_without_a_token(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with serving(orch) as served, httpx.AsyncClient(base_url=served.url, timeout=30) as anon:
        job = await orch.submit("double", {"w": 21}, owner=ALICE)
        await orch.wait(job.id, by=ALICE, timeout=30)
        scraped = await anon.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    assert value(text, "orchestrator_statement_seconds_count", statement="submit_jobs") == 1
    assert str(job.id) not in text and ALICE.user_id not in text and ALICE.org_id not in text
    # ``wait`` answers once the completion is durable, which can be before
    # the worker's actor has exited and counted it; after the drain it has.
    drained = orch.metrics.scrape().decode()
    assert value(drained, "orchestrator_transitions_total", kind="double", queue="default", state="completed") == 1
    assert value(drained, "orchestrator_transitions_total", kind="double", state="active") == 1
    assert value(drained, "orchestrator_run_time_seconds_count", kind="double") == 1


async def test_two_orchestrators_in_one_process_keep_their_own_figures(database_url: str) -> None:
    first, second = make_orchestrator(database_url), make_orchestrator(database_url, metrics_interval=None)
    async with first.running(), second.running(work=False):
        job = await second.submit("double", {"w": 1}, owner=ALICE)
        await second.wait(job.id, by=ALICE, timeout=30)
    one, two = first.metrics.scrape().decode(), second.metrics.scrape().decode()
    assert value(one, "orchestrator_transitions_total", state="completed") == 1
    assert value(two, "orchestrator_transitions_total", state="completed") == 0
    assert value(two, "orchestrator_statement_seconds_count", statement="submit_jobs") == 1
    assert value(one, "orchestrator_statement_seconds_count", statement="submit_jobs") == 0


async def test_the_queue_depth_is_counted_once_per_interval_and_read_by_everyone(database_url: str) -> None:
    producer = make_orchestrator(database_url, metrics_interval=None)
    async with producer.running(work=False):
        for queue, n in (("default", 3), ("slow", 2)):
            for _ in range(n):
                await producer.submit("double", {"w": 1}, owner=ALICE, queue=queue, delay=3600)
    node_a, node_b = Metrics(), Metrics()
    async with open_store(database_url, metrics=node_a) as a, open_store(database_url, metrics=node_b) as b:
        counted = await node_a.refresh_queue_depth(a, 3600)
        # Another node, inside the interval: reads what the first stored.
        await fetch(database_url, "UPDATE orchestrator.job_status SET queue = 'moved' WHERE queue = 'slow'")
        read = await node_b.refresh_queue_depth(b, 3600)
        stale = node_b.scrape().decode()
        # Past the interval (0 s), the next one counts again.
        recounted = await node_b.refresh_queue_depth(b, 0.000001)
        fresh = node_b.scrape().decode()
    assert (counted, read, recounted) == (True, False, True)
    assert value(stale, "orchestrator_queue_depth", queue="default", state="queued") == 3
    assert value(stale, "orchestrator_queue_depth", queue="slow", state="queued") == 2
    assert value(fresh, "orchestrator_queue_depth", queue="moved", state="queued") == 2
    # A queue and state seen before and now empty reads 0.
    assert 'orchestrator_queue_depth{queue="slow",state="queued"} 0.0' in fresh
    [row] = await fetch(database_url, "SELECT jsonb_array_length(depths) AS n FROM orchestrator.queue_depth")
    assert row["n"] == 2


async def test_database_errors_and_reconnects_are_counted(database_url: str, pg_server: str) -> None:
    orch = make_orchestrator(database_url, pool_size=1, metrics_interval=None)
    async with serving(orch, work=False) as served, httpx.AsyncClient(base_url=served.url) as anon:
        assert (await anon.get("/healthz")).status_code == 200
        async with connections_refused(pg_server, database_url):
            down = await anon.get("/healthz")
        with trio.fail_after(20):
            while (await anon.get("/healthz")).status_code != 200:
                await trio.sleep(0.05)
            while not value((text := (await anon.get("/metrics")).text), "orchestrator_database_reconnects_total", connection="listener"):
                await trio.sleep(0.05)
    assert down.status_code == 503
    assert value(text, "orchestrator_database_errors_total", statement="ping", error="unavailable") >= 1
    assert value(text, "orchestrator_database_reconnects_total", connection="pool") >= 1



async def test_the_queue_depth_counts_every_live_job_through_the_live_rows_indexes(database_url: str) -> None:
    producer = make_orchestrator(database_url, metrics_interval=None)
    async with producer.running(work=False):
        jobs = [await producer.submit("double", {"w": 1}, owner=ALICE, delay=3600) for _ in range(5)]
    ids = [j.id for j in jobs]
    lease = "lease_token = nextval('orchestrator.lease_token_seq'), lease_node = 'n', lease_expires_at = now() + interval '1 hour'"
    await fetch(database_url, f"UPDATE orchestrator.job_status SET status = 'active', started_at = created_at, {lease} "
                "WHERE job_id = ANY($1::uuid[])", ids[:2])  # fmt: skip
    await fetch(database_url, f"UPDATE orchestrator.job_status SET queue = 'slow', {lease} WHERE job_id = $1", ids[2])
    await fetch(database_url, "UPDATE orchestrator.job_status SET status = 'completed', started_at = created_at, "
                "completed_at = created_at WHERE job_id = $1", ids[3])  # fmt: skip
    metrics = Metrics()
    async with open_store(database_url, metrics=metrics) as store:
        assert await metrics.refresh_queue_depth(store, 0.000001)
    text = metrics.scrape().decode()
    assert value(text, "orchestrator_queue_depth", queue="default", state="active") == 2
    assert value(text, "orchestrator_queue_depth", queue="default", state="queued") == 1
    assert value(text, "orchestrator_queue_depth", queue="slow", state="queued") == 1
    assert value(text, "orchestrator_queue_depth", state="completed") == 0
    # Where it can, the planner reads the table only through indexes that hold
    # live rows alone: never the whole table, nor an index of every row.
    explain = with_settings(database_url, search_path="orchestrator", enable_seqscan="off")
    [row] = await fetch(explain, "EXPLAIN (FORMAT JSON) " + query("queue_depth"), 0.0)
    plan = json.loads(row[0])[0]["Plan"]
    reads = job_status_reads(plan)
    assert reads and set(reads) <= LIVE_INDEXES, reads


async def wait_for_rows(url: str, sql: str, *args: Any, count: int) -> None:
    """Until ``sql`` returns ``count`` rows (what the node does is driven by its own tasks)."""
    with trio.fail_after(30):
        while len(await fetch(url, sql, *args)) != count:
            await trio.sleep(0.05)


async def test_transitions_made_outside_the_writer_are_counted_with_their_state(empty_database_url: str) -> None:
    """Rescues, cancels of queued jobs over HTTP, unusable and malformed rows
    failed, an unstarted claim given back: each transition the node made is
    counted, by the state it led to, and the figures match the rows."""
    url = empty_database_url
    # Rows an older version could write (before migration 0004): quarantined.
    await migrate(url, 3)
    malformed_kind = await insert(url, kind="dou\x01ble")
    malformed_owner = await insert(url, user="", org="")
    undecodable = await insert(url, payload=nested(3000))
    await migrate(url)

    # Jobs claimed (made active) by a node that then died: a retry, one with
    # no attempt left, one whose cancel was requested meanwhile.
    producer = make_orchestrator(url, metrics_interval=None)
    async with producer.running(work=False):
        retried = await producer.submit("gated", {"w": 1}, owner=ALICE, max_attempts=2)
        exhausted = await producer.submit("gated", {"w": 2}, owner=ALICE, max_attempts=1)
        cancelled_dead = await producer.submit("gated", {"w": 3}, owner=ALICE, max_attempts=2)
        later = await producer.submit("double", {"w": 4}, owner=ALICE, delay=3600)
        dead = await producer.store.claim(kinds=["gated"], slots={"default": 3}, node="dead-node", lease_seconds=0.2)
        assert len(dead) == 3
    await fetch(
        url, "UPDATE orchestrator.job_status SET cancel_requested_at = now(), cancel_requested_by = 'alice'"
        " WHERE job_id = $1", cancelled_dead.id,
    )  # fmt: skip

    # A lease long enough that the rows this node fails are never rescued first.
    orch = make_orchestrator(url, lease_seconds=3, poll_interval=0.05, metrics_interval=None)
    orch.gate.release.set()  # type: ignore[attr-defined]
    async with serving(orch) as served:
        for job in (retried, exhausted, cancelled_dead):
            await orch.wait(job.id, by=ALICE, timeout=30)
        await orch.wait(undecodable, by=ALICE, timeout=30)
        async with await served.client(ALICE) as alice:
            answer = await alice.post(f"/api/jobs/{later.id}/cancel")
        assert answer.status_code == 200 and answer.json()["cancelled"], answer.text
        # A claim whose answer comes once the node has begun to stop is given back.
        dispatcher, claim = orch.dispatcher, orch.store.claim
        assert dispatcher is not None

        async def claim_then_stop(**kwargs: Any) -> list[Any]:
            rows = await claim(**kwargs)
            if rows:
                dispatcher.hurry()
            return rows

        orch.store.claim = claim_then_stop  # type: ignore[method-assign]
        given_back = await orch.submit("double", {"w": 5}, owner=ALICE)
        await wait_for_rows(
            url, "SELECT 1 FROM orchestrator.job_status WHERE job_id = $1 AND status = 'queued'"
            " AND lease_token IS NULL AND started_at IS NULL AND rescued_from IS NULL", given_back.id, count=1,
        )  # fmt: skip
    text = orch.metrics.scrape().decode()

    rows = {r["job_id"]: r for r in await job_rows(url)}
    assert rows[malformed_kind]["status"] == rows[malformed_owner]["status"] == "failed"
    assert (rows[undecodable]["status"], json.loads(rows[undecodable]["error"])["type"]) == ("failed", "InvalidJob")
    assert (rows[retried.id]["status"], rows[retried.id]["attempt"]) == ("completed", 2)
    assert (rows[exhausted.id]["status"], rows[cancelled_dead.id]["status"]) == ("failed", "cancelled")
    assert (rows[later.id]["status"], rows[given_back.id]["status"]) == ("cancelled", "queued")

    def label(kind: str) -> str:
        return kind if kind.isprintable() else INVALID_LABEL

    # Every terminal row was ended by this node: the counts by state and kind are the rows'.
    for state in ("completed", "failed", "cancelled"):
        for kind in {label(r["kind"]) for r in rows.values()}:
            expected = sum(1 for r in rows.values() if r["status"] == state and label(r["kind"]) == kind)
            got = value(text, "orchestrator_transitions_total", kind=kind, state=state)
            assert got == expected, (state, kind, got, expected)
    # Back to the queue: the rescue's retry (attempt 2) and the claim given back.
    queued = sum(r["attempt"] - 1 for r in rows.values()) + sum(1 for r in rows.values() if r["status"] == "queued")
    assert queued == 2 and value(text, "orchestrator_transitions_total", state="queued") == queued
    assert value(text, "orchestrator_transitions_total", kind="gated", state="queued") == 1
    # Made active by this node's claims: the retry's second attempt, the
    # undecodable row and the claim given back.
    assert value(text, "orchestrator_transitions_total", kind="gated", state="active") == 1
    assert value(text, "orchestrator_transitions_total", kind="double", state="active") == 2
    assert value(text, "orchestrator_rescued_jobs_total") == 3
    for outcome in ("retry", "failed", "cancelled"):
        assert value(text, "orchestrator_rescued_jobs_total", outcome=outcome) == 1
    # The malformed kind's text never reaches a label.
    assert "dou\x01ble" not in text and "dou\\x01ble" not in text
