"""Statements run inline in the calling trio task (orchestrator._inline), on
a real server: results, errors, a statement cancelled while PostgreSQL is
still running it; and what the store's asyncio loop does with a failed
future that nobody waits for."""

from __future__ import annotations

import gc

import pytest
import trio
import trio.testing

from orchestrator._errors import StoreError
from orchestrator._store import open_store


async def test_a_statement_cancelled_in_flight_drops_its_connection_and_the_pool_goes_on(database_url: str) -> None:
    async with open_store(database_url, size=1) as store:
        started = trio.Event()
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def sleeps() -> None:
                with scope:
                    async with store.connection() as conn:
                        started.set()
                        await store._execute(conn, "fetchval", "SELECT pg_sleep(3600)")

            nursery.start_soon(sleeps)
            await started.wait()
            await trio.testing.wait_all_tasks_blocked()
            held = list(store._all)
            scope.cancel()
        assert scope.cancelled_caught
        # Cancelled mid-statement: that connection is never reused ...
        assert held and not set(held) & set(store._all)
        # ... and the pool of one serves the next statement on a new one.
        assert await store.fetchval("ping") is not None
        assert len(store._all) == 1


async def test_a_refused_statement_is_translated_and_keeps_its_connection(database_url: str) -> None:
    async with open_store(database_url, size=1) as store:
        async with store.connection() as conn:
            with pytest.raises(StoreError, match="division by zero"):
                await store._execute(conn, "fetchval", "SELECT 1 / 0")
        assert store._all == [conn]
        assert await store.fetchval("ping") is not None
        assert store._all == [conn]


async def test_a_task_started_outside_the_stores_loop_runs_statements_on_it(database_url: str) -> None:
    # The host's nursery predates the store: its tasks do not carry the
    # trio-asyncio loop in their context, and must not need it.
    async with trio.open_nursery() as host:
        async with open_store(database_url, size=2) as store:
            answered = trio.Event()
            answers: list[object] = []

            async def from_the_host() -> None:
                answers.append(await store.fetchval("ping"))
                answered.set()

            host.start_soon(from_the_host)
            await answered.wait()
    assert answers == [1]


async def test_a_failed_future_nobody_waits_for_is_logged_and_the_store_goes_on(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What a connect cancelled mid-handshake leaves behind: a future that
    # fails after its waiter left. trio-asyncio's default handler raised it
    # into the loop's nursery, which ended the store.
    async with open_store(database_url, size=1) as store:
        orphan = store._loop.create_future()
        orphan.set_exception(ConnectionError("unexpected connection_lost() call"))
        del orphan
        gc.collect()
        await trio.testing.wait_all_tasks_blocked()
        assert await store.fetchval("ping") == 1
    assert "exception was never retrieved" in caplog.text
