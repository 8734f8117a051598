"""Tracing's parts that need no database: what is imported when, and which
stored trace contexts are used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator._tracing import MAX_CARRIER_TEXT, load_tracing, usable_carrier
from tests.tracing import recording_provider

ROOT = Path(__file__).parents[2]


def test_importing_orchestrator_imports_no_opentelemetry() -> None:
    code = (
        "import sys, orchestrator, orchestrator.client; "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_tracing_is_none_when_turned_off_and_a_tracer_otherwise() -> None:
    provider, exporter = recording_provider()
    assert load_tracing(False, provider) is None
    tracing = load_tracing(True, provider, node="n1")
    assert tracing is not None
    with tracing.submitting("k", "q", 3) as submission:
        assert submission.trace_context is not None and "traceparent" in submission.trace_context
    [span] = exporter.get_finished_spans()
    assert span.name == "submit k" and dict(span.attributes or {})["messaging.batch.message_count"] == 3


@pytest.mark.parametrize(
    ("stored", "kept"),
    [
        ({"traceparent": "00-abc-def-01"}, {"traceparent": "00-abc-def-01"}),
        ({"traceparent": 5, "tracestate": "a=b"}, {"tracestate": "a=b"}),
        ({"traceparent": 5}, None),
        ({"traceparent": "x" * (MAX_CARRIER_TEXT + 1)}, None),
        ([["traceparent", "00-abc-def-01"]], None),
        ("00-abc-def-01", None),
        (None, None),
        ({}, None),
    ],
)
def test_only_bounded_string_entries_of_a_stored_context_are_used(stored: object, kept: object) -> None:
    assert usable_carrier(stored) == kept


def test_a_span_that_records_nothing_stores_no_context_and_costs_no_attempt_span() -> None:
    import datetime
    import uuid

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from orchestrator._claimed import ClaimedJob

    tracing = load_tracing(True, TracerProvider(sampler=ALWAYS_OFF))
    assert tracing is not None
    with tracing.submitting("k", "q", 1) as submission:
        assert submission.trace_context is None and submission.span is None
    now = datetime.datetime.now(datetime.UTC)
    job = ClaimedJob(uuid.uuid4(), "k", "q", {}, "u", "o", 0, 1, 1, now, now, now, 0.0, None, False, 1, None, None)
    assert tracing.start_attempt(job) is None
