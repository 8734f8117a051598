"""A trace started in the producer continues into the handler on a daemon
(`orchestrator run`, another process, whichever node claims the job)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from orchestrator import JobContext, Orchestrator, Principal
from tests.acceptance.test_cli import background_worker, stop_with
from tests.tracing import one, parent_id, recording_provider

APP = "tests.acceptance.tracing_app:orch"
WHO = Principal(user_id="tracer", org_id="tracing-org")


async def test_the_daemons_attempt_span_is_a_child_of_the_producers_submit_span(
    database_url: str, tmp_path: Path
) -> None:
    spans_file = tmp_path / "daemon-spans.jsonl"
    provider, exporter = recording_provider()
    producer = Orchestrator(database_url, tracer_provider=provider, prune_interval=None)

    @producer.job("ship")
    async def ship(ctx: JobContext, payload: dict[str, Any]) -> None:
        raise AssertionError("the producer runs nothing")

    log = tmp_path / "daemon.log"
    async with background_worker(database_url, log, "--app", APP, TRACING_APP_SPANS=str(spans_file)) as daemon:
        async with producer.running(work=False):
            with provider.get_tracer("web").start_as_current_span("POST /shipments") as request:
                job = await producer.submit("ship", {"parcel": 1}, owner=WHO)
            done = await producer.wait(job.id, by=WHO, timeout=60)
        # The attempt's span ends as the job leaves the daemon; stopping it
        # makes sure every span was written.
        await stop_with(daemon, signal.SIGTERM)
    assert done.state.value == "completed", log.read_text()
    submit = one(exporter.get_finished_spans(), "submit ship")
    assert parent_id(submit) == request.get_span_context().span_id
    daemon_spans = [json.loads(line) for line in spans_file.read_text().splitlines()]
    [run] = [s for s in daemon_spans if s["name"] == "run ship"]
    [inner] = [s for s in daemon_spans if s["name"] == "shipping"]
    assert run["trace_id"] == submit.context.trace_id == request.get_span_context().trace_id
    assert run["parent_id"] == submit.context.span_id
    assert inner["parent_id"] == run["span_id"]
    assert run["attributes"]["orchestrator.job.id"] == str(job.id)
    assert run["attributes"]["orchestrator.job.outcome"] == "completed"
    assert run["attributes"]["orchestrator.node"] != producer.node_id and run["attributes"]["orchestrator.job.attempt"] == 1
