"""``orchestrator run --metrics``: a real daemon scraped after known work."""

from __future__ import annotations

import re
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Principal
from tests.acceptance.metrics_app import make
from tests.acceptance.test_cli import background_worker, cli, count_jobs, one_error_line, stop_with
from tests.pg import fetch

APP = "tests.acceptance.metrics_app:orch"
METRICS_AT = re.compile(r"metrics=(http://[^\s,]+)")
WHO = Principal(user_id="metrics-user-7f3a", org_id="metrics-org-c91e")
#: In every payload; must never reach a label.
SECRET = "payload-text-5be2"


async def metrics_address(log: Path) -> str:
    with trio.fail_after(60):
        while not (found := METRICS_AT.search(log.read_text(errors="replace"))):
            await trio.sleep(0.05)
    return found.group(1)


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Sample name -> sorted labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def total(values: dict[tuple[tuple[str, str], ...], float], **labels: str) -> float:
    """The sum of the samples whose labels include ``labels``."""
    return sum(v for key, v in values.items() if set(labels.items()) <= set(key))


async def submit_and_wait(url: str) -> list[Any]:
    producer = make(url)
    async with producer.running(work=False):
        jobs = [await producer.submit("ok", {"text": f"{SECRET}-{i}"}, owner=WHO) for i in range(4)]
        jobs += [await producer.submit("boom", {"text": f"{SECRET}-b{i}"}, owner=WHO) for i in range(2)]
        jobs.append(await producer.submit("flaky", {"text": SECRET}, owner=WHO))
        for job in jobs:
            await producer.wait(job.id, by=WHO, timeout=60)
        # Not due for an hour: stays queued, for the queue-depth gauge.
        later = await producer.submit("ok", {"text": SECRET}, owner=WHO, delay=3600)
    return [job.id for job in (*jobs, later)]


async def scrape_until(url: str, ready: Any) -> str:
    """Scrape until ``ready(samples)`` holds (the queue depth is read on an interval)."""
    async with httpx.AsyncClient(timeout=30) as client:
        with trio.fail_after(60):
            while True:
                text = (await client.get(f"{url}/metrics")).text
                if ready(samples(text)):
                    return text
                await trio.sleep(0.1)


async def claimed_by_a_dead_node(url: str) -> Any:
    """A job claimed (made active) by a node that then died, its one attempt used."""
    producer = make(url)
    async with producer.running(work=False):
        job = await producer.submit("ok", {"text": SECRET}, owner=WHO, max_attempts=1)
        [row] = await producer.store.claim(kinds=["ok"], slots={"default": 1}, node="dead-node", lease_seconds=0.1)
        assert row["job_id"] == job.id
    return job.id


async def wait_ended(url: str, job_id: Any) -> None:
    producer = make(url)
    async with producer.running(work=False):
        await producer.wait(job_id, by=WHO, timeout=60)


async def test_a_daemon_scraped_after_known_work_matches_the_rows(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    dead = await claimed_by_a_dead_node(database_url)
    async with background_worker(
        database_url, log, "--app", APP, "--metrics", "127.0.0.1:0", ORCHESTRATOR_METRICS_INTERVAL="0.2s",
        # A heartbeat a second: the dead node's job is rescued soon.
        ORCHESTRATOR_LEASE_SECONDS="3s",
    ) as worker:  # fmt: skip
        url = await metrics_address(log)
        ids = await submit_and_wait(database_url)
        await wait_ended(database_url, dead)
        text = await scrape_until(
            url,
            lambda s: total(s["orchestrator_queue_depth"], queue="default", state="queued") == 1
            and total(s["orchestrator_rescued_jobs_total"]) == 1,
        )
        async with httpx.AsyncClient(timeout=30) as client:
            elsewhere = await client.get(f"{url}/api/jobs")
        await stop_with(worker, signal.SIGTERM)
    assert worker.returncode == 0, log.read_text(errors="replace")
    rows = await fetch(
        database_url,
        "SELECT kind, status::text AS status, attempt, rescued_from, error->>'type' AS error"
        " FROM orchestrator.job_status WHERE run_at < now()",
    )
    by_status = defaultdict(int)
    attempts: dict[str, int] = defaultdict(int)
    for row in rows:
        by_status[row["status"]] += 1
        if row["rescued_from"] is None:
            # Attempts this daemon claimed (the dead node claimed the other).
            attempts[row["kind"]] += row["attempt"]
    # The dead node's job was failed by the daemon's rescue, outside its writer.
    assert dict(by_status) == {"completed": 5, "failed": 3}
    rescued = [r for r in rows if r["rescued_from"] is not None]
    assert [(r["rescued_from"], r["status"], r["error"]) for r in rescued] == [("dead-node", "failed", "LeaseExpired")]
    s = samples(text)
    assert total(s["orchestrator_rescued_jobs_total"], outcome="failed") == len(rescued)
    assert total(s["orchestrator_transitions_total"], kind="ok", state="failed") == len(rescued)
    transitions = s["orchestrator_transitions_total"]
    for state in ("completed", "failed"):
        assert total(transitions, state=state) == by_status[state]
    retried = sum(row["attempt"] - 1 for row in rows)
    assert retried == 1
    assert total(transitions, state="queued") == retried
    assert total(s["orchestrator_retries_total"], kind="flaky", queue="default") == retried
    for kind, n in attempts.items():
        # Every attempt was claimed (-> active), waited in the queue, and ran.
        assert total(transitions, kind=kind, state="active") == n
        assert total(s["orchestrator_claimed_jobs_total"], kind=kind) == n
        assert total(s["orchestrator_queue_wait_seconds_count"], kind=kind) == n
        assert total(s["orchestrator_run_time_seconds_count"], kind=kind) == n
    # Each attempt's end went through the writer: 5 + 2 + 1 rows.
    assert total(s["orchestrator_writer_batch_rows_sum"]) == 8
    assert total(s["orchestrator_statement_seconds_count"], statement="claim_jobs") >= 1
    assert total(s["orchestrator_claims_total"]) >= 1
    assert total(s["orchestrator_running_jobs"]) == 0
    assert total(s["orchestrator_queue_depth"], queue="default", state="queued") == 1
    assert total(s["orchestrator_database_errors_total"]) == 0
    # Only /metrics is served on this address.
    assert elsewhere.status_code == 404
    for private in (*map(str, ids), WHO.user_id, WHO.org_id, SECRET):
        assert private not in text


async def test_a_bad_metrics_address_exits_2_naming_it(database_url: str) -> None:
    flag = await cli(database_url, "run", "--app", APP, "--metrics", "localhost")
    env = await cli(database_url, "run", "--app", APP, ORCHESTRATOR_METRICS="9090")
    assert flag.code == 2 and "metrics" in one_error_line(flag) and "'localhost'" in one_error_line(flag)
    assert env.code == 2 and "ORCHESTRATOR_METRICS" in one_error_line(env) and "9090" in one_error_line(env)
    assert await count_jobs(database_url) == 0
