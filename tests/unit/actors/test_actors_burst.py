"""A burst of spawns raises the collector's generation 0 threshold until its actors have started."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import Actor, open_supervisor
from actors._burst import BURST, BURST_GEN0, SpawnBurst

DEFAULT = (700, 10, 10)


@pytest.fixture
def thresholds() -> Iterator[None]:
    """CPython's default thresholds and the collector on; the caller's put back afterwards."""
    saved, enabled = gc.get_threshold(), gc.isenabled()
    gc.set_threshold(*DEFAULT)
    gc.enable()
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        if not enabled:
            gc.disable()


class Seen(Actor[Any]):
    """Notes the generation 0 threshold when it starts and when it handles a message."""

    def __init__(self, log: list[int]) -> None:
        self.log = log

    async def on_start(self) -> None:
        self.log.append(gc.get_threshold()[0])

    async def receive(self, message: Any) -> int:
        return gc.get_threshold()[0]


async def test_a_burst_raises_the_threshold_until_the_last_actor_started(
    thresholds: None, autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[int] = []
    async with open_supervisor() as sup:
        refs = [sup.spawn_soon(lambda: Seen(log), name="seen") for _ in range(BURST - 1)]
        assert gc.get_threshold() == DEFAULT  # one short of a burst
        refs.append(sup.spawn_soon(lambda: Seen(log), name="seen"))
        assert gc.get_threshold() == (BURST_GEN0, 10, 10)
        await trio.testing.wait_all_tasks_blocked()
        # Every actor but the last started while the burst was on; the
        # last one's start ended it.
        assert log == [BURST_GEN0] * (BURST - 1) + [DEFAULT[0]]
        assert gc.get_threshold() == DEFAULT
        assert await refs[0].ask("threshold?") == DEFAULT[0]
    assert gc.get_threshold() == DEFAULT


async def test_a_few_spawns_leave_the_collector_alone(
    thresholds: None, autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[int] = []
    async with open_supervisor() as sup:
        for _ in range(10):
            sup.spawn_soon(lambda: Seen(log), name="seen")
        await trio.testing.wait_all_tasks_blocked()
    assert log == [DEFAULT[0]] * 10


async def test_a_burst_cancelled_before_its_actors_ran_still_restores(
    thresholds: None, autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[int] = []
    with trio.CancelScope() as scope:
        async with open_supervisor() as sup:
            for _ in range(BURST):
                sup.spawn_soon(lambda: Seen(log), name="seen")
            assert gc.get_threshold()[0] == BURST_GEN0
            scope.cancel()  # before any of their tasks first ran
    assert gc.get_threshold() == DEFAULT


def test_a_disabled_collector_or_a_higher_threshold_is_left_alone(thresholds: None) -> None:
    burst = SpawnBurst()
    gc.disable()
    for _ in range(BURST):
        burst.spawned()
    assert not burst.raised and gc.get_threshold() == DEFAULT
    for _ in range(BURST):
        burst.started()
    gc.enable()
    gc.set_threshold(BURST_GEN0 * 2, 5, 5)
    for _ in range(BURST):
        burst.spawned()
    assert not burst.raised and gc.get_threshold() == (BURST_GEN0 * 2, 5, 5)
    for _ in range(BURST):
        burst.started()
    assert gc.get_threshold() == (BURST_GEN0 * 2, 5, 5)


def test_the_saved_thresholds_come_back_exactly(thresholds: None) -> None:
    gc.set_threshold(500, 7, 3)
    burst = SpawnBurst()
    for _ in range(BURST + 5):
        burst.spawned()
    assert burst.raised and gc.get_threshold() == (BURST_GEN0, 7, 3)
    for _ in range(BURST + 4):
        burst.started()
    assert burst.raised  # one has not started yet
    burst.started()
    assert not burst.raised and gc.get_threshold() == (500, 7, 3)
