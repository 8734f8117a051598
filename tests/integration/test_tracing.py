"""OpenTelemetry: a submission's span, and each attempt's span on the node
that runs it, linked through the trace context stored with the job."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import trio
from opentelemetry.trace import SpanKind, StatusCode

from orchestrator import JobContext, Orchestrator, Principal
from orchestrator.client import Client
from tests.integration.http_helpers import serving
from tests.integration.test_client import AsyncioThread, aio, opened  # noqa: F401 (fixture)
from tests.pg import fetch
from tests.tracing import attributes, named, one, parent_id, recording_provider

ALICE = Principal(user_id="alice", org_id="acme")


async def stored_context(url: str, job_id: Any) -> Any:
    [row] = await fetch(url, "SELECT trace_context::text AS t FROM orchestrator.job_status WHERE job_id = $1", job_id)
    return None if row["t"] is None else json.loads(row["t"])


def traced_pair(url: str, provider: Any, **worker_options: Any) -> tuple[Orchestrator, Orchestrator]:
    """A producer node and a worker node on one database, tracing to ``provider``.

    The worker's ``step`` handler opens a span of its own; ``flaky`` fails
    its first attempt; ``doomed`` always fails; ``slow`` waits to be cancelled.
    """
    producer = Orchestrator(url, node_id="producer", tracer_provider=provider, prune_interval=None)
    worker = Orchestrator(
        url, node_id="worker", tracer_provider=provider, poll_interval=0.2, prune_interval=None, **worker_options
    )
    app_tracer = provider.get_tracer("the-app")

    async def step(ctx: JobContext, payload: dict[str, Any]) -> str:
        with app_tracer.start_as_current_span("inside the handler"):
            return "done"

    async def flaky(ctx: JobContext, payload: dict[str, Any]) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    async def doomed(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise ValueError("never works")

    async def slow(ctx: JobContext, payload: dict[str, Any]) -> None:
        await ctx.progress(0.1)
        await trio.sleep_forever()

    for orch in (producer, worker):
        orch.job("step")(step)
        orch.job("flaky", max_attempts=2, retry_backoff=0.01, retry_backoff_max=0.01)(flaky)
        orch.job("doomed", max_attempts=1)(doomed)
        orch.job("slow")(slow)
    return producer, worker


async def test_an_attempt_on_another_node_continues_the_trace_that_submitted_it(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, worker = traced_pair(database_url, provider)
    web = provider.get_tracer("web")
    async with worker.running(), producer.running(work=False):
        with web.start_as_current_span("POST /orders") as request:
            job = await producer.submit("step", {"order": 7}, owner=ALICE)
        done = await producer.wait(job.id, by=ALICE, timeout=30)
    assert done.state.value == "completed"
    spans = exporter.get_finished_spans()
    submit, run, inner = one(spans, "submit step"), one(spans, "run step"), one(spans, "inside the handler")
    trace_id = request.get_span_context().trace_id
    assert {submit.context.trace_id, run.context.trace_id, inner.context.trace_id} == {trace_id}
    assert parent_id(submit) == request.get_span_context().span_id
    assert parent_id(run) == submit.context.span_id
    assert parent_id(inner) == run.context.span_id
    assert submit.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert attributes(submit).items() >= {
        "orchestrator.job.kind": "step", "orchestrator.job.queue": "default", "orchestrator.job.id": str(job.id),
        "messaging.system": "trio-orchestrator", "messaging.operation.type": "send",
    }.items()  # fmt: skip
    assert attributes(run).items() >= {
        "orchestrator.job.kind": "step", "orchestrator.job.queue": "default", "orchestrator.job.id": str(job.id),
        "orchestrator.job.attempt": 1, "orchestrator.job.outcome": "completed", "orchestrator.node": "worker",
        "messaging.operation.type": "process",
    }.items()  # fmt: skip
    assert run.status.status_code is StatusCode.UNSET
    # The context stored with the job is the submit span's.
    stored = await stored_context(database_url, job.id)
    assert stored["traceparent"].startswith(f"00-{trace_id:032x}-{submit.context.span_id:016x}-")


async def test_each_attempt_is_a_child_of_the_submission_with_its_outcome(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, worker = traced_pair(database_url, provider)
    async with worker.running(), producer.running(work=False):
        flaky = await producer.submit("flaky", {}, owner=ALICE)
        doomed = await producer.submit("doomed", {}, owner=ALICE)
        assert (await producer.wait(flaky.id, by=ALICE, timeout=30)).state.value == "completed"
        assert (await producer.wait(doomed.id, by=ALICE, timeout=30)).state.value == "failed"
    spans = exporter.get_finished_spans()
    submit = one(spans, "submit flaky")
    # Submitted outside any trace: the submission starts one.
    assert submit.parent is None
    runs = sorted(named(spans, "run flaky"), key=lambda s: attributes(s)["orchestrator.job.attempt"])
    assert [parent_id(r) for r in runs] == [submit.context.span_id] * 2
    assert [attributes(r)["orchestrator.job.outcome"] for r in runs] == ["retried", "completed"]
    assert runs[0].status.status_code is StatusCode.ERROR
    assert runs[0].status.description == "first attempt fails"
    assert attributes(runs[0])["error.type"] == "RuntimeError"
    assert runs[1].status.status_code is StatusCode.UNSET
    failed = one(spans, "run doomed")
    assert attributes(failed)["orchestrator.job.outcome"] == "failed"
    assert attributes(failed)["error.type"] == "ValueError"
    assert parent_id(failed) == one(spans, "submit doomed").context.span_id


async def test_a_cancelled_attempt_ends_its_span_as_cancelled(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, worker = traced_pair(database_url, provider)
    async with worker.running(), producer.running(work=False):
        job = await producer.submit("slow", {}, owner=ALICE)
        with trio.fail_after(30):
            while (await producer.get(job.id, by=ALICE)).progress < 0.1:
                await trio.sleep(0.02)
        await producer.cancel(job.id, by=ALICE)
        assert (await producer.wait(job.id, by=ALICE, timeout=30)).state.value == "cancelled"
    run = one(exporter.get_finished_spans(), "run slow")
    assert attributes(run)["orchestrator.job.outcome"] == "cancelled"


async def test_a_refused_submission_is_an_error_span_and_writes_nothing(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, _ = traced_pair(database_url, provider)
    async with producer.running(work=False):
        try:
            await producer.submit("step", {"bad": float("nan")}, owner=ALICE)
        except Exception as exc:
            refused: Exception = exc
        else:
            raise AssertionError("a NaN payload was accepted")
    submit = one(exporter.get_finished_spans(), "submit step")
    assert submit.status.status_code is StatusCode.ERROR
    assert [e.name for e in submit.events] == ["exception"]
    assert type(refused).__name__ in str(submit.events[0].attributes)
    assert await fetch(database_url, "SELECT job_id FROM orchestrator.job_status") == []


async def test_with_tracing_off_nothing_is_recorded_or_stored(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, worker = traced_pair(database_url, provider, tracing=False)
    producer.tracing = False
    web = provider.get_tracer("web")
    async with worker.running(), producer.running(work=False):
        with web.start_as_current_span("POST /orders"):
            job = await producer.submit("step", {}, owner=ALICE)
        await producer.wait(job.id, by=ALICE, timeout=30)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["POST /orders", "inside the handler"]
    assert await stored_context(database_url, job.id) is None


async def test_an_unusable_stored_trace_context_gives_a_root_span_and_the_job_runs(database_url: str) -> None:
    provider, exporter = recording_provider()
    producer, worker = traced_pair(database_url, provider)
    async with producer.running(work=False):
        jobs = [await producer.submit("step", {"n": n}, owner=ALICE) for n in range(3)]
    # Rows written by hand, or by an older or a foreign producer.
    for job, context in zip(jobs, ['{"traceparent": 5}', '{"traceparent": "not-a-traceparent"}',
                                   json.dumps({"traceparent": "00-" + "a" * 5000})]):  # fmt: skip
        await fetch(database_url, "UPDATE orchestrator.job_status SET trace_context = $2::jsonb WHERE job_id = $1", job.id, context)
    async with worker.running(), producer.running(work=False):
        for job in jobs:
            assert (await producer.wait(job.id, by=ALICE, timeout=30)).state.value == "completed"
    runs = named(exporter.get_finished_spans(), "run step")
    assert len(runs) == 3 and all(r.parent is None for r in runs)


async def test_the_asyncio_client_stores_its_submission_context(database_url: str, aio: AsyncioThread) -> None:
    provider, exporter = recording_provider()
    _, worker = traced_pair(database_url, provider)
    client = Client(database_url, tracer_provider=provider)
    web = provider.get_tracer("web")

    async def submit_in_a_request() -> Any:
        with web.start_as_current_span("GET /checkout"):
            return await client.submit("step", {"from": "asyncio"}, owner=ALICE)

    async with worker.running(), opened(aio, client):
        job = await aio(submit_in_a_request())
        await aio(client.wait(job.id, by=ALICE, timeout=30))
    spans = exporter.get_finished_spans()
    request, submit, run = one(spans, "GET /checkout"), one(spans, "submit step"), one(spans, "run step")
    assert parent_id(submit) == request.context.span_id
    assert parent_id(run) == submit.context.span_id


async def test_an_http_submission_continues_the_callers_traceparent(database_url: str) -> None:
    provider, exporter = recording_provider()
    _, worker = traced_pair(database_url, provider)
    trace_id, caller_span = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    async with serving(worker) as served:
        async with await served.client(ALICE) as http:
            response = await http.post(
                "/api/jobs", json={"kind": "step", "payload": {}},
                headers={"traceparent": f"00-{trace_id:032x}-{caller_span:016x}-01"},
            )  # fmt: skip
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            with trio.fail_after(30):
                while (await http.get(f"/api/jobs/{job_id}")).json()["state"] != "completed":
                    await trio.sleep(0.02)
    spans = exporter.get_finished_spans()
    submit, run = one(spans, "submit step"), one(spans, "run step")
    assert submit.context.trace_id == run.context.trace_id == trace_id
    assert parent_id(submit) == caller_span and parent_id(run) == submit.context.span_id


BLOCKED = """
import sys, trio
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from orchestrator import Orchestrator, Principal
orch = Orchestrator(sys.argv[1], prune_interval=None, poll_interval=0.2)
@orch.job("step")
async def step(ctx, payload):
    return "ran"
async def main():
    async with orch.running():
        job = await orch.submit("step", {}, owner=Principal(user_id="u", org_id="o"))
        done = await orch.wait(job.id, by=Principal(user_id="u", org_id="o"), timeout=30)
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m] is not None)
    print(done.state.value, loaded)
trio.run(main)
"""


async def test_without_opentelemetry_jobs_run_and_nothing_of_it_is_imported(database_url: str) -> None:
    done = await trio.run_process(
        [sys.executable, "-c", BLOCKED, database_url], capture_stdout=True, capture_stderr=True,
        cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert done.stdout.decode().split() == ["completed", "[]"], done.stderr.decode()[-2000:]
