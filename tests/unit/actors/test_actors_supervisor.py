"""Supervision: restarts, intensity, escalation, shutdown, memory."""

from __future__ import annotations

import gc
import logging
import weakref
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import (
    Actor,
    ActorDead,
    ActorRef,
    Restart,
    Supervisor,
    SupervisorEscalation,
    open_supervisor,
)


@dataclass(frozen=True)
class Crash:
    label: str = "crash"


@dataclass(frozen=True)
class Hold:
    release: trio.Event = field(default_factory=trio.Event)


class Counted(Actor[object]):
    """Records ``(instance number, message)``; crashes on :class:`Crash`."""

    def __init__(self, log: list[tuple[int, object]], instances: list[Counted]) -> None:
        instances.append(self)
        self.number = len(instances)
        self.log = log

    async def receive(self, message: object) -> object:
        self.log.append((self.number, message))
        if isinstance(message, Hold):
            await message.release.wait()
        if isinstance(message, Crash):
            raise RuntimeError(f"{message.label} in instance {self.number}")
        return self.number


async def spawn_counted(
    sup: Supervisor, restart: Restart = Restart.PERMANENT, name: str = "counted"
) -> tuple[ActorRef[object], list[tuple[int, object]], list[Counted]]:
    log: list[tuple[int, object]] = []
    instances: list[Counted] = []
    ref = await sup.spawn(lambda: Counted(log, instances), name=name, restart=restart)
    return ref, log, instances


async def test_permanent_actor_is_restarted_behind_the_same_ref(
    caplog: pytest.LogCaptureFixture, autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor("sup") as sup:
        ref, log, instances = await spawn_counted(sup)
        hold = Hold()
        await ref.tell(hold)
        await trio.testing.wait_all_tasks_blocked()
        # Queued behind the crash: must reach the new instance, not be lost.
        await ref.tell(Crash())
        await ref.tell("after")
        hold.release.set()
        assert await ref.ask("who") == 2
        assert ref.is_alive
        assert sup.children == [ref]
        assert instances[1].ref is ref
    assert log == [(1, hold), (1, Crash()), (2, "after"), (2, "who")]
    crash_records = [r for r in caplog.records if r.name == "actors" and r.exc_info]
    assert len(crash_records) == 1
    assert crash_records[0].levelno == logging.ERROR
    assert "counted" in crash_records[0].getMessage()


async def test_transient_actor_is_restarted_after_a_crash(
    autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor() as sup:
        ref, _, instances = await spawn_counted(sup, Restart.TRANSIENT)
        with pytest.raises(RuntimeError):
            await ref.ask(Crash())
        assert await ref.ask("who") == 2
        await ref.stop()
        assert len(instances) == 2


async def test_temporary_actor_is_not_restarted_and_never_escalates(
    autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor(intensity=0) as sup:
        ref, log, instances = await spawn_counted(sup, Restart.TEMPORARY)
        await ref.tell(Crash())
        await ref.wait_stopped()
        assert not ref.is_alive
        with pytest.raises(ActorDead):
            await ref.tell("after")
        assert sup.children == []
        # A restart budget of zero is untouched by temporary crashes.
        other, _, _ = await spawn_counted(sup, Restart.TEMPORARY, name="other")
        await other.tell(Crash())
        await other.wait_stopped()
    assert len(instances) == 1
    assert log == [(1, Crash())]


async def test_escalates_when_restarts_exceed_intensity_within_period(
    autojump_clock: MockClock, watchdog: None
) -> None:
    bystander_events: list[str] = []

    class Bystander(Actor[object]):
        async def on_start(self) -> None:
            self.nursery.start_soon(self._linger)

        async def _linger(self) -> None:
            try:
                await trio.sleep_forever()
            finally:
                bystander_events.append("cancelled")

        async def receive(self, message: object) -> None:
            await trio.sleep_forever()

    pending: list[BaseException] = []

    async def ask_bystander(ref: ActorRef[object]) -> None:
        try:
            await ref.ask("never answered")
        except ActorDead as exc:
            pending.append(exc)

    async with trio.open_nursery() as outside:
        with pytest.raises(SupervisorEscalation) as caught:
            async with open_supervisor("top", intensity=2, period=5) as sup:
                bystander = await sup.spawn(Bystander, name="bystander")
                outside.start_soon(ask_bystander, bystander)
                ref, _, _ = await spawn_counted(sup)
                for i in range(3):
                    await ref.tell(Crash(f"crash {i}"))
                    await trio.sleep(1)
                pytest.fail("the supervisor did not escalate")
    escalation = caught.value
    assert type(escalation) is SupervisorEscalation  # bare, not in a group
    assert isinstance(escalation.__cause__, RuntimeError)
    assert str(escalation.__cause__) == "crash 2 in instance 3"
    assert "top" in str(escalation) and "counted" in str(escalation)
    assert not ref.is_alive and not bystander.is_alive
    assert bystander_events == ["cancelled"]
    assert len(pending) == 1


async def test_does_not_escalate_when_restarts_are_spread_beyond_period(
    autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor(intensity=1, period=5) as sup:
        ref, _, instances = await spawn_counted(sup)
        for _ in range(4):
            await ref.tell(Crash())
            await trio.sleep(6)
        assert await ref.ask("who") == 5
    assert len(instances) == 5


async def test_two_restarts_within_period_exceed_intensity_one(
    autojump_clock: MockClock, watchdog: None
) -> None:
    with pytest.raises(SupervisorEscalation):
        async with open_supervisor(intensity=1, period=5) as sup:
            ref, _, _ = await spawn_counted(sup)
            await ref.tell(Crash())
            await trio.sleep(4)
            await ref.tell(Crash())
            await trio.sleep(1)


async def test_leaving_the_block_stops_children_gracefully(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[object] = []

    class Polite(Actor[int]):
        async def receive(self, message: int) -> None:
            await trio.lowlevel.checkpoint()
            events.append(message)

        async def on_stop(self) -> None:
            events.append("on_stop")

    async with open_supervisor() as sup:
        ref = await sup.spawn(Polite, name="polite")
        for i in range(5):
            ref.tell_nowait(i)
    assert events == [0, 1, 2, 3, 4, "on_stop"]
    assert not ref.is_alive
    assert sup.children == []


async def test_leaving_the_block_with_an_error_cancels_children(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[str] = []

    class Busy(Actor[object]):
        async def receive(self, message: object) -> None:
            try:
                await trio.sleep_forever()
            finally:
                events.append("cancelled")

        async def on_stop(self) -> None:
            events.append("on_stop")

    with pytest.raises(LookupError, match="leaving"):  # bare, not in a group
        async with open_supervisor() as sup:
            ref = await sup.spawn(Busy, name="busy")
            await ref.tell("work")
            await ref.tell("queued")
            await trio.testing.wait_all_tasks_blocked()
            raise LookupError("leaving")
    assert events == ["cancelled"]
    assert not ref.is_alive


async def test_cancelling_the_block_cancels_children(
    autojump_clock: MockClock, watchdog: None
) -> None:
    with trio.move_on_after(10) as scope:
        async with open_supervisor() as sup:
            ref = await sup.spawn(lambda: Counted([], []), name="c")
            await ref.tell(Hold())
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert trio.current_time() == 10
    assert not ref.is_alive


async def test_stopped_actors_are_released(autojump_clock: MockClock, watchdog: None) -> None:
    instances: weakref.WeakSet[Actor[object]] = weakref.WeakSet()

    class ShortLived(Actor[object]):
        def __init__(self) -> None:
            instances.add(self)

        async def on_start(self) -> None:
            self.nursery.start_soon(trio.sleep_forever)

        async def receive(self, message: object) -> object:
            return message

    async with open_supervisor() as sup:
        refs = []
        for i in range(200):
            ref = await sup.spawn(ShortLived, name=f"short-{i}")
            assert await ref.ask(i) == i
            refs.append(ref)
        assert len(sup.children) == 200
        for ref in refs:
            await ref.stop()
        assert sup.children == []
        gc.collect()
        # The refs are still held, yet the instances are gone.
        assert len(instances) == 0


async def test_a_restarted_actor_releases_the_crashed_instance(
    autojump_clock: MockClock, watchdog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's log capture would keep the crash's traceback, and through it
    # the crashed instance.
    monkeypatch.setattr(logging.getLogger("actors"), "disabled", True)
    instances: weakref.WeakSet[Actor[object]] = weakref.WeakSet()

    class Fragile(Actor[object]):
        def __init__(self) -> None:
            instances.add(self)

        async def receive(self, message: object) -> None:
            if message == "crash":
                raise RuntimeError("crash")

    async with open_supervisor() as sup:
        ref = await sup.spawn(Fragile, name="fragile")
        await ref.tell("crash")
        await ref.ask("handled by the new instance")
        gc.collect()
        assert len(instances) == 1
