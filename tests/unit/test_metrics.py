"""The metrics module alone: names, cached children, gauges read at scrape time."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from orchestrator import Orchestrator
from orchestrator._metrics import INVALID_LABEL, Metrics
from orchestrator._summary import Summary


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and set(labels.items()) <= set(s.labels.items())
    )


def test_a_fresh_orchestrator_exposes_every_metric_at_zero() -> None:
    text = Orchestrator("postgresql://nowhere/db").metrics.scrape().decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "orchestrator_transitions", "orchestrator_run_time_seconds", "orchestrator_queue_wait_seconds",
        "orchestrator_queue_depth", "orchestrator_running_jobs", "orchestrator_running_actors",
        "orchestrator_mailbox_depth", "orchestrator_claims", "orchestrator_rescued_jobs", "orchestrator_retries",
        "orchestrator_lease_losses", "orchestrator_database_errors", "orchestrator_database_reconnects",
        "orchestrator_writer_batch_rows", "orchestrator_statement_seconds",
    } <= names
    assert all(name.startswith("orchestrator_") for name in names)
    assert value(text, "orchestrator_running_jobs") == 0


def test_the_summary_feeds_the_counters_through_cached_children() -> None:
    metrics = Metrics()
    summary = Summary(metrics)
    for event in ("completed", "completed", "failed", "retried", "released", "cancelled"):
        summary.ended(event, 0.02, "resize", "images")
    summary.rescued_jobs([
        {"outcome": "retry", "kind": "resize", "queue": "images"},
        {"outcome": "failed", "kind": "resize", "queue": "images"},
        # Claimed, never started, its node dead: it only loses the lease.
        {"outcome": "queued", "kind": "resize", "queue": "images"},
    ])  # fmt: skip
    summary.lease_lost()
    text = metrics.scrape().decode()
    assert metrics.series("resize", "images") is metrics.series("resize", "images")
    assert value(text, "orchestrator_transitions_total", kind="resize", queue="images", state="completed") == 2
    # The retry and the release through actors, the rescue's retry.
    assert value(text, "orchestrator_transitions_total", state="queued") == 3
    assert value(text, "orchestrator_transitions_total", state="failed") == 2
    assert value(text, "orchestrator_retries_total", kind="resize") == 1
    assert value(text, "orchestrator_run_time_seconds_count", kind="resize", queue="images") == 6
    assert value(text, "orchestrator_rescued_jobs_total", outcome="retry") == 1
    assert value(text, "orchestrator_lease_losses_total") == 1
    assert summary.fields()["rescued"] == 3 and summary.fields()["completed"] == 2


def test_jobs_moved_by_statements_are_counted_and_bad_names_never_reach_a_label() -> None:
    metrics = Metrics()
    metrics.moved([{"kind": "resize", "queue": "images"}] * 2, "cancelled")
    metrics.moved([{"kind": "dou\x01ble", "queue": "default"}, {"kind": "x" * 500, "queue": ""}], "failed")
    metrics.rescued([{"outcome": "invalid", "kind": "ok", "queue": None}])
    text = metrics.scrape().decode()
    assert value(text, "orchestrator_transitions_total", kind="resize", queue="images", state="cancelled") == 2
    assert value(text, "orchestrator_transitions_total", kind=INVALID_LABEL, queue="default", state="failed") == 1
    assert value(text, "orchestrator_transitions_total", kind=INVALID_LABEL, queue=INVALID_LABEL, state="failed") == 1
    assert value(text, "orchestrator_transitions_total", kind="ok", queue=INVALID_LABEL, state="failed") == 1
    assert "x" * 500 not in text and "dou" not in text
