"""Retention: pruning deletes exactly the finished jobs past their age, in
batches, one process at a time; a dry run deletes nothing; bad values are
refused and change nothing."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio_asyncio

from orchestrator import InvalidInput, Orchestrator, Retention
from orchestrator._retention import DAY, prune
from tests.integration.helpers import ALICE, make_orchestrator
from tests.pg import fetch

PRUNE_LOCK = "trio-orchestrator prune orchestrator"


async def add_finished(url: str, state: str, count: int, age: float) -> set[uuid.UUID]:
    """``count`` jobs that ended in ``state`` ``age`` seconds ago; their ids."""
    rows = await fetch(
        url,
        "INSERT INTO orchestrator.job_status (job_id, kind, payload, owner_user_id, owner_org_id, status,"
        " run_at, created_at, started_at, completed_at)"
        " SELECT gen_random_uuid(), 'double', '{}', 'alice', 'acme', $1::orchestrator.job_state,"
        "  t - interval '2 seconds', t - interval '2 seconds', t - interval '1 second', t"
        " FROM generate_series(1, $2), LATERAL (SELECT clock_timestamp() - make_interval(secs => $3) AS t) x"
        " RETURNING job_id",
        state, count, age,
    )  # fmt: skip
    return {r["job_id"] for r in rows}


async def all_ids(url: str) -> set[uuid.UUID]:
    return {r["job_id"] for r in await fetch(url, "SELECT job_id FROM orchestrator.job_status")}


async def seeded(url: str, orch: Orchestrator) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Jobs on both sides of every default age, and live ones; (to go, to stay)."""
    go = await add_finished(url, "completed", 5, 8 * DAY)
    go |= await add_finished(url, "failed", 2, 31 * DAY)
    go |= await add_finished(url, "cancelled", 1, 31 * DAY)
    stay = await add_finished(url, "completed", 3, 6 * DAY)
    stay |= await add_finished(url, "failed", 4, 29 * DAY)
    stay |= await add_finished(url, "cancelled", 2, 29 * DAY)
    # Live jobs, however old, are never pruned.
    live = await orch.submit_many("double", [{"w": 1}, {"w": 2}], owner=ALICE)
    await fetch(
        url,
        "UPDATE orchestrator.job_status SET created_at = created_at - interval '90 days',"
        " run_at = run_at - interval '90 days' WHERE job_id = ANY($1)",
        [j.id for j in live],
    )
    stay |= {j.id for j in live}
    return go, stay


async def test_prune_deletes_exactly_the_jobs_past_their_age_in_batches(database_url: str) -> None:
    orch = make_orchestrator(database_url, prune_batch=2)
    async with orch.running(work=False):
        go, stay = await seeded(database_url, orch)
        result = await orch.prune()
        statements = orch.store.statements["prune_jobs"]
    assert result.counts == {"completed": 5, "failed": 2, "cancelled": 1} and not result.skipped
    assert await all_ids(database_url) == stay
    assert go.isdisjoint(stay)
    # Batches of two: completed 2+2+1, failed 2+0, cancelled 1.
    assert statements == 6


async def test_a_dry_run_counts_and_deletes_nothing(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        go, stay = await seeded(database_url, orch)
        result = await orch.prune(dry_run=True)
    assert result.dry_run and result.counts == {"completed": 5, "failed": 2, "cancelled": 1}
    assert await all_ids(database_url) == go | stay


async def test_older_than_and_states_narrow_the_prune(database_url: str) -> None:
    orch = make_orchestrator(database_url, retention=Retention(completed=None, failed=1 * DAY))
    async with orch.running(work=False):
        recent = await add_finished(database_url, "cancelled", 3, 3600)
        older = await add_finished(database_url, "completed", 2, 400 * DAY)
        failed = await add_finished(database_url, "failed", 2, 2 * DAY)
        only_cancelled = await orch.prune(older_than=60, states=["cancelled"])
        assert await all_ids(database_url) == older | failed
        # completed is kept forever here; failed after a day.
        by_retention = await orch.prune()
    assert only_cancelled.counts == {"cancelled": 3} and recent
    assert by_retention.counts == {"failed": 2, "cancelled": 0}
    assert await all_ids(database_url) == older


async def hold_prune_lock(url: str, locked: trio.Event, release: trio.Event) -> None:
    """Another process pruning: hold the prune lock until ``release``."""
    import asyncpg

    async def hold() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", PRUNE_LOCK)
            locked.set()
            await trio_asyncio.trio_as_aio(release.wait)()
        finally:
            await conn.close()

    await trio_asyncio.aio_as_trio(hold)()


async def test_a_second_pruner_skips_while_one_holds_the_lock(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        go, stay = await seeded(database_url, orch)
        async with trio.open_nursery() as nursery:
            locked, release = trio.Event(), trio.Event()
            nursery.start_soon(hold_prune_lock, database_url, locked, release)
            await locked.wait()
            blocked = await orch.prune()
            assert await all_ids(database_url) == go | stay
            release.set()
        after = await orch.prune()
    assert blocked.skipped and blocked.total == 0
    assert not after.skipped and after.total == len(go)
    assert await all_ids(database_url) == stay


async def test_two_daemons_pruning_at_once_delete_each_row_once(database_url: str) -> None:
    first = make_orchestrator(database_url, prune_batch=7)
    second = make_orchestrator(database_url, prune_batch=7)
    results: list[Any] = []
    async with first.running(work=False), second.running(work=False):
        old = await add_finished(database_url, "completed", 300, 10 * DAY)
        keep = await add_finished(database_url, "completed", 5, DAY)

        async def prune_until_done(orch: Orchestrator) -> None:
            while True:
                result = await orch.prune()
                results.append(result)
                if not result.skipped:
                    return
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(prune_until_done, first)
            nursery.start_soon(prune_until_done, second)
    assert sum(r.counts["completed"] for r in results) == len(old)
    assert await all_ids(database_url) == keep


async def test_a_worker_prunes_periodically(database_url: str) -> None:
    orch = make_orchestrator(database_url, prune_interval=3600)
    async with orch.running(work=False):
        go, stay = await seeded(database_url, orch)
    async with orch.running():
        assert orch.pruner is not None
        result = await orch.pruner.wait_rounds(1)
    assert result is not None and result.counts == {"completed": 5, "failed": 2, "cancelled": 1}
    assert await all_ids(database_url) == stay


async def test_a_worker_without_an_interval_never_prunes(database_url: str) -> None:
    orch = make_orchestrator(database_url, prune_interval=None)
    async with orch.running():
        go = await add_finished(database_url, "completed", 2, 100 * DAY)
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        await orch.wait(job.id, by=ALICE)
        assert orch.pruner is None
    assert go <= await all_ids(database_url)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"prune_interval": 0}, "prune_interval"),
        ({"prune_interval": -5}, "prune_interval"),
        ({"prune_interval": math.inf}, "prune_interval"),
        ({"prune_interval": "hourly"}, "prune_interval"),
        ({"prune_batch": 0}, "prune_batch"),
        ({"prune_batch": 10**9}, "prune_batch"),
        ({"retention": "7d"}, "retention"),
    ],
)
def test_bad_retention_settings_are_refused_naming_them(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        Orchestrator("postgresql://localhost/x", **settings)
    assert refused.value.field == field


@pytest.mark.parametrize("state", ["completed", "failed", "cancelled"])
@pytest.mark.parametrize("age", [-1, math.nan, 10**12, "7d"])
def test_bad_retention_ages_are_refused_naming_the_state(state: str, age: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        Retention(**{state: age})
    assert refused.value.field == f"retention_{state}"


async def test_bad_prune_arguments_delete_nothing(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        go, stay = await seeded(database_url, orch)
        for kwargs, field in (
            ({"states": ["queued"]}, "state"),
            ({"states": ["completed", "active"]}, "state"),
            ({"older_than": -1.0}, "older_than"),
            ({"older_than": math.nan}, "older_than"),
        ):
            with pytest.raises(InvalidInput) as refused:
                await orch.prune(**kwargs)
            assert refused.value.field == field
    assert await all_ids(database_url) == go | stay


class BetweenBatches:
    """A store whose prune round awaits ``between(n)`` after its n-th batch."""

    def __init__(self, store: Any, between: Callable[[int], Awaitable[None]]) -> None:
        self.store, self.between, self.batches = store, between, 0

    async def fetch(self, name: str, *args: Any) -> Any:
        return await self.store.fetch(name, *args)

    async def fetchval(self, name: str, *args: Any) -> Any:
        return await self.store.fetchval(name, *args)

    async def fetchrow(self, name: str, *args: Any) -> Any:
        # (How a prune without a session of its own would run its batches.)
        return await self.after(name, await self.store.fetchrow(name, *args))

    async def after(self, name: str, answer: Any) -> Any:
        if name == "prune_jobs":
            self.batches += 1
            await self.between(self.batches)
        return answer

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[Any]:
        spy = self

        class Session:
            async def fetch(self, name: str, *args: Any) -> Any:
                return await session.fetch(name, *args)

            async def fetchval(self, name: str, *args: Any) -> Any:
                return await spy.after(name, await session.fetchval(name, *args))

        async with self.store.pinned() as session:
            yield Session()


async def prune_lock_holders(url: str) -> list[Any]:
    return await fetch(
        url,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND objid = hashtext($1)::oid AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        PRUNE_LOCK,
    )


async def test_a_round_holds_the_lock_from_its_first_batch_to_its_last(database_url: str) -> None:
    # A pool of one: the round's connection is its own, so claims still run.
    first = make_orchestrator(database_url, prune_batch=10, pool_size=1, prune_interval=None)
    second = make_orchestrator(database_url, prune_batch=10, prune_interval=None)
    seen: list[Any] = []
    async with first.running(), second.running(work=False):
        old = await add_finished(database_url, "completed", 35, 10 * DAY)

        async def between(batch: int) -> None:
            if batch != 2:
                return
            # Between two batches of the first daemon's round: the lock is
            # held, a second daemon skips its round and deletes nothing...
            seen.append(len(await prune_lock_holders(database_url)))
            seen.append(await second.prune())
            # ...and the first daemon (one pooled connection) still claims and runs jobs.
            job = await first.submit("double", {"w": 3}, owner=ALICE)
            seen.append((await first.wait(job.id, by=ALICE, timeout=30)).result)

        spied = BetweenBatches(first.store, between)
        result = await prune(spied, {"completed": 7 * DAY}, batch=10)
        after = await prune_lock_holders(database_url)
    holders, skipped, ran = seen
    assert holders == 1
    assert skipped.skipped and skipped.total == 0
    assert ran == {"w": 6}
    assert not result.skipped and result.counts == {"completed": len(old)} and spied.batches == 4
    assert after == []
    assert old.isdisjoint(await all_ids(database_url))


async def test_a_cancelled_round_lets_go_of_the_lock(database_url: str) -> None:
    orch = make_orchestrator(database_url, prune_batch=5, prune_interval=None)
    async with orch.running(work=False):
        old = await add_finished(database_url, "completed", 12, 10 * DAY)
        stuck = trio.Event()

        async def hang(batch: int) -> None:
            stuck.set()
            await trio.sleep_forever()

        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(prune, BetweenBatches(orch.store, hang), {"completed": DAY}, batch=5))
                await stuck.wait()
                assert len(await prune_lock_holders(database_url)) == 1
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        # Its connection was closed: the server lets go of the lock once it sees that.
        with trio.fail_after(10):
            while await prune_lock_holders(database_url):
                await trio.sleep(0.05)
        rest = await orch.prune()
    assert not rest.skipped and rest.counts["completed"] == len(old) - 5
    assert await all_ids(database_url) == set()
