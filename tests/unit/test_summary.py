"""The worker's summary line: counts per interval, p50 run time, nothing when quiet."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from orchestrator._summary import Summary


def test_a_summary_counts_events_and_the_median_run_time(caplog: pytest.LogCaptureFixture) -> None:
    summary = Summary()
    summary.claimed += 4
    summary.rescued += 1
    for event, run_time in [("completed", 0.001), ("completed", 0.003), ("failed", 0.002), ("retried", 0.010)]:
        summary.ended(event, run_time, "thumbnail", "default")
    assert summary.fields() == {
        "claimed": 4, "completed": 2, "failed": 1, "retried": 1, "cancelled": 0, "released": 0, "rescued": 1,
        "p50_run_ms": 2.5,
    }  # fmt: skip
    with caplog.at_level(logging.INFO, logger="orchestrator.summary"):
        summary.log(10.0)
        # Counting starts afresh; a quiet interval writes nothing.
        summary.log(10.0)
    [record] = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "last 10s: 4 claimed, 2 completed, 1 failed, 1 retried, 0 cancelled, 0 released, 1 rescued;"
        " p50 run time 2.5 ms"
    )
    assert record.__dict__["event"] == "worker.summary" and record.__dict__["completed"] == 2


async def test_the_summary_writes_a_line_per_interval_and_the_last_partial_one(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    summary = Summary()
    caplog.set_level(logging.INFO, logger="orchestrator.summary")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(summary.run, 5.0)
        summary.ended("completed", 0.5, "thumbnail", "default")
        await trio.sleep(5.5)
        summary.ended("cancelled", 0.25, "thumbnail", "default")
        await trio.sleep(1.0)
        nursery.cancel_scope.cancel()
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["last 5s", "last 1.5s"]
    assert [r.__dict__["completed"] for r in caplog.records] == [1, 0]
    assert [r.__dict__["cancelled"] for r in caplog.records] == [0, 1]
