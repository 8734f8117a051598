"""Supervisor.spawn_soon: the ref at once, on_start later, crashes to the policy."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import Actor, ActorDead, Restart, SupervisorEscalation, open_supervisor


class SlowStart(Actor[Any]):
    """Logs ``on_start`` after ``delay`` virtual seconds, then every message.

    The instances whose number is in ``failing`` raise in ``on_start``.
    """

    def __init__(
        self, log: list[object], *, delay: float = 3.0, failing: frozenset[int] = frozenset()
    ) -> None:
        self.log = log
        self.delay = delay
        self.failing = failing
        log.append("made")
        self.number = log.count("made")

    async def on_start(self) -> None:
        await trio.sleep(self.delay)
        if self.number in self.failing:
            raise OSError(f"start {self.number} failed")
        self.log.append(("on_start", self.number))

    async def receive(self, message: Any) -> Any:
        self.log.append((self.number, message))
        return (self.number, message)

    async def on_stop(self) -> None:
        self.log.append(("on_stop", self.number))


async def test_returns_the_ref_at_once_before_on_start_runs(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = sup.spawn_soon(lambda: SlowStart(log), name="soon")
        # No checkpoint has happened: the actor's task has not run at all.
        assert log == ["made"]
        assert ref.is_alive
        assert ref.name == "soon"
        assert sup.children == [ref]
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["made"]  # still inside on_start's sleep
        assert await ref.ask("hello") == (1, "hello")
        assert trio.current_time() == 3
    assert log == ["made", ("on_start", 1), (1, "hello"), ("on_stop", 1)]


async def test_messages_told_before_on_start_are_handled_after_it_in_order(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = sup.spawn_soon(lambda: SlowStart(log), name="soon", mailbox_size=4)
        ref.tell_nowait("a")
        await ref.tell("b")
        ref.tell_nowait("c")
        assert await ref.ask("d") == (1, "d")
    assert log == [
        "made",
        ("on_start", 1),
        (1, "a"),
        (1, "b"),
        (1, "c"),
        (1, "d"),
        ("on_stop", 1),
    ]


async def test_a_crash_in_on_start_is_restarted_by_the_policy(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor(intensity=1) as sup:
        ref = sup.spawn_soon(
            lambda: SlowStart(log, failing=frozenset({1})), name="flaky", restart=Restart.PERMANENT
        )
        ref.tell_nowait("queued before the crash")
        # Handled by the second instance: the crash lost nothing.
        assert await ref.ask("who") == (2, "who")
        assert sup.children == [ref]
    assert log == [
        "made",
        "made",
        ("on_start", 2),
        (2, "queued before the crash"),
        (2, "who"),
        ("on_stop", 2),
    ]
    crashes = [r for r in caplog.records if r.name == "actors" and r.levelno == logging.ERROR]
    assert len(crashes) == 1
    assert "restarting" in crashes[0].getMessage()
    assert crashes[0].exc_info is not None
    assert isinstance(crashes[0].exc_info[1], OSError)


async def test_a_temporary_actor_crashing_in_on_start_dies_and_fails_its_asks(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = sup.spawn_soon(
            lambda: SlowStart(log, failing=frozenset({1})), name="once", restart=Restart.TEMPORARY
        )
        with pytest.raises(ActorDead) as caught:
            await ref.ask("never handled")
        assert isinstance(caught.value.__cause__, OSError)
        await ref.wait_stopped()
        assert not ref.is_alive
        assert sup.children == []
        with pytest.raises(ActorDead):
            ref.tell_nowait("late")
        # The supervisor itself carries on.
        other = sup.spawn_soon(lambda: SlowStart(log, delay=0), name="other")
        assert await other.ask("x") == (2, "x")
    assert log.count("made") == 2
    assert ("on_start", 1) not in log


async def test_on_start_crashes_count_towards_the_intensity(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    with pytest.raises(SupervisorEscalation) as caught:
        async with open_supervisor("sup", intensity=2, period=60) as sup:
            sup.spawn_soon(
                lambda: SlowStart(log, failing=frozenset(range(1, 100))), name="doomed"
            )
            await trio.sleep_forever()
    assert caught.value.actor == "doomed"
    assert isinstance(caught.value.__cause__, OSError)
    # The first instance plus the two restarts the intensity allows.
    assert log.count("made") == 3


async def test_a_factory_that_raises_raises_at_once_and_spawns_nothing(
    autojump_clock: MockClock, watchdog: None
) -> None:
    def factory() -> SlowStart:
        raise LookupError("no such resource")

    async with open_supervisor() as sup:
        with pytest.raises(LookupError, match="no such resource"):
            sup.spawn_soon(factory, name="bad")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.children == []


async def test_rejects_a_mailbox_size_below_one(autojump_clock: MockClock, watchdog: None) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        with pytest.raises(ValueError, match="mailbox_size"):
            sup.spawn_soon(lambda: SlowStart(log), name="bad", mailbox_size=0)
        assert sup.children == []
    assert log == []


async def test_leaving_the_block_right_after_spawn_soon_stops_it_after_queued_messages(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = sup.spawn_soon(lambda: SlowStart(log), name="soon")
        ref.tell_nowait("queued")
    assert not ref.is_alive
    assert log == ["made", ("on_start", 1), (1, "queued"), ("on_stop", 1)]


async def test_cancelling_the_block_during_on_start_leaves_the_ref_dead(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    with trio.move_on_after(1):
        async with open_supervisor() as sup:
            ref = sup.spawn_soon(lambda: SlowStart(log), name="soon")
            await ref.ask("never answered")
    assert trio.current_time() == 1
    assert not ref.is_alive
    await ref.wait_stopped()
    with pytest.raises(ActorDead):
        await ref.tell("late")
    assert log == ["made"]
