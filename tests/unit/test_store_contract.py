"""The store contract on the in-memory adapter, and its injected faults.

The same scenarios run on PostgreSQL in tests/integration/test_store_contract.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator._errors import DatabaseUnavailable
from orchestrator._memory_store import MemoryStore
from orchestrator._store import TransitionRow
from tests.store_contract import SCENARIOS, Scenario, claim, row_of, submit


def ticking_clock(step: timedelta = timedelta(microseconds=50)) -> Callable[[], datetime]:
    """A database clock that moves forward a little at every reading, as
    ``clock_timestamp()`` does, and is the same on every run."""
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def clock() -> datetime:
        nonlocal now
        now += step
        return now

    return clock


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
async def test_memory_store_keeps_the_contract(scenario: Scenario) -> None:
    await scenario(MemoryStore(ticking_clock()))


async def test_a_store_that_went_away_raises_and_changes_nothing() -> None:
    store = MemoryStore(ticking_clock())
    [job] = await submit(store)
    store.go_away()
    with pytest.raises(DatabaseUnavailable):
        await claim(store)
    with pytest.raises(DatabaseUnavailable):
        await store.get_job_any(job["job_id"])
    assert store.jobs[job["job_id"]].status == "queued"
    store.come_back()
    assert len(await claim(store)) == 1


async def test_a_lost_acknowledgement_leaves_the_write_committed() -> None:
    store = MemoryStore(ticking_clock())
    await submit(store)
    [c] = await claim(store)
    current = await row_of(store, c["job_id"])
    done = TransitionRow(
        job_id=c["job_id"], token=c["lease_token"], expected="active", next="completed",
        completed_at=current["started_at"] + timedelta(milliseconds=1),
    )  # fmt: skip
    store.lose_ack("apply_transitions")
    with pytest.raises(DatabaseUnavailable):
        await store.apply_transitions([done])
    assert (await row_of(store, c["job_id"]))["status"] == "completed"
    # Sent again (as the writer does), the guard no longer matches.
    assert await store.apply_transitions([done]) == set()


async def test_lease_expiry_is_judged_by_the_injected_clock() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    store = MemoryStore(lambda: now)
    await submit(store)
    [c] = await claim(store, lease=30)
    now += timedelta(seconds=29)
    assert await store.rescue_expired() == []
    now += timedelta(seconds=2)
    assert [r["outcome"] for r in await store.rescue_expired()] == ["failed"]
    assert store.jobs[c["job_id"]].completed_at == now


async def test_the_history_records_moves_and_who_asked_for_a_cancel() -> None:
    store = MemoryStore(ticking_clock())
    await submit(store)
    [c] = await claim(store)
    assert await store.request_cancel(c["job_id"], by="carol")
    assert [(h.statement, h.before, h.after, h.by) for h in store.history] == [
        ("submit_jobs", "", "queued", None),
        ("claim_jobs", "queued", "active", None),
        ("request_cancel", "active", "active", "carol"),
    ]
