"""Process-local waiters: hints that a job may have ended (trio, virtual clock)."""

from __future__ import annotations

import uuid

import trio
import trio.testing

from orchestrator._waiters import Watch, trio_waiters

JOB = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)
TIMEOUT = 30.0


async def timed_wait(watch: Watch, timeout: float = TIMEOUT) -> tuple[float, set[uuid.UUID] | None]:
    """How much virtual time ``wait_changed`` took, and what it returned."""
    start = trio.current_time()
    hinted = await watch.wait_changed(timeout)
    return trio.current_time() - start, hinted


async def test_notify_from_another_task_wakes_the_waiter(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    results: list[tuple[float, set[uuid.UUID] | None]] = []
    with waiters.watch(JOB) as watch:
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                results.append(await timed_wait(watch))

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []  # really waiting
            waiters.notify(JOB)
    assert results == [(0.0, {JOB})]


async def test_without_notify_it_returns_none_after_the_timeout(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    with waiters.watch(JOB) as watch:
        assert await timed_wait(watch, 12.5) == (12.5, None)


async def test_notify_between_two_waits_is_not_lost(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    with waiters.watch(JOB) as watch:
        assert await timed_wait(watch, 1.0) == (1.0, None)
        waiters.notify(JOB)  # nobody is waiting right now
        assert await timed_wait(watch) == (0.0, {JOB})
        # The hint was consumed: the next wait sleeps the full timeout.
        assert await timed_wait(watch) == (TIMEOUT, None)


async def test_notify_of_another_job_does_not_wake_it(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    results: list[tuple[float, set[uuid.UUID] | None]] = []
    with waiters.watch(JOB) as watch, waiters.watch(OTHER) as other:
        async with trio.open_nursery() as nursery:

            async def wait() -> None:
                results.append(await timed_wait(watch))

            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            waiters.notify(OTHER)
            waiters.notify(uuid.UUID(int=3))  # nobody watches it: a no-op
        assert await timed_wait(other) == (0.0, {OTHER})  # the other watch did get it
    assert results == [(TIMEOUT, None)]


async def test_one_watch_of_several_jobs_collects_the_hinted_ids(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    third = uuid.UUID(int=3)
    with waiters.watch(JOB, OTHER, third) as watch:
        waiters.notify(OTHER)
        waiters.notify(JOB)
        waiters.notify(OTHER)
        assert await timed_wait(watch) == (0.0, {JOB, OTHER})
        assert await timed_wait(watch) == (TIMEOUT, None)


async def test_notify_wakes_every_watch_of_the_job(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    with waiters.watch(JOB) as a, waiters.watch(JOB) as b, waiters.watch(OTHER) as c:
        waiters.notify(JOB)
        assert [await timed_wait(w) for w in (a, b, c)] == [(0.0, {JOB}), (0.0, {JOB}), (TIMEOUT, None)]


def test_registry_forgets_a_job_when_its_last_watch_ends() -> None:
    waiters = trio_waiters()
    assert len(waiters) == 0
    with waiters.watch(JOB):
        with waiters.watch(JOB, OTHER):
            assert len(waiters) == 2
        assert len(waiters) == 1  # one watch of JOB remains
    assert len(waiters) == 0


def test_registry_forgets_the_jobs_when_the_block_raises() -> None:
    waiters = trio_waiters()
    try:
        with waiters.watch(JOB, OTHER):
            assert len(waiters) == 2
            raise KeyError("boom")
    except KeyError:
        pass
    assert len(waiters) == 0
    waiters.notify(JOB)  # and notifying it afterwards is harmless


async def test_notify_all_asks_every_watch_to_reread_everything(autojump_clock: trio.testing.MockClock) -> None:
    waiters = trio_waiters()
    a, b = uuid.uuid4(), uuid.uuid4()
    with waiters.watch(a, b) as watch:
        waiters.notify(a)
        waiters.notify_all()
        start = trio.current_time()
        assert await watch.wait_changed(60) is None
        assert trio.current_time() == start
        waiters.notify(b)
        assert await watch.wait_changed(60) == {b}
