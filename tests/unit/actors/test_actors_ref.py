"""Messaging through an ActorRef: tell, ask, backpressure, stop, death."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import (
    Actor,
    ActorDead,
    ActorRef,
    AskTimeout,
    MailboxFull,
    Restart,
    Supervisor,
    open_supervisor,
)


@dataclass(frozen=True)
class Hold:
    """Block the actor until ``release`` is set."""

    release: trio.Event = field(default_factory=trio.Event)


@dataclass(frozen=True)
class Fail:
    error: Exception


@dataclass(frozen=True)
class Nap:
    seconds: float
    label: Any = None


class Recorder(Actor[Any]):
    """Logs every message it handles; replies with ``("ok", message)``."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    async def on_start(self) -> None:
        self.log.append("on_start")

    async def receive(self, message: Any) -> Any:
        self.log.append(message)
        if isinstance(message, Hold):
            await message.release.wait()
        elif isinstance(message, Fail):
            raise message.error
        elif isinstance(message, Nap):
            await trio.sleep(message.seconds)
        return ("ok", message)

    async def on_stop(self) -> None:
        self.log.append("on_stop")


async def spawn_recorder(
    sup: Supervisor,
    log: list[object],
    *,
    mailbox_size: int = 64,
    restart: Restart = Restart.TEMPORARY,
) -> ActorRef[Any]:
    return await sup.spawn(
        lambda: Recorder(log), name="rec", mailbox_size=mailbox_size, restart=restart
    )


async def test_one_message_at_a_time_even_when_receive_awaits(
    autojump_clock: MockClock, watchdog: None
) -> None:
    active = 0
    peak = 0
    handled: list[int] = []

    class Slow(Actor[int]):
        async def receive(self, message: int) -> None:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await trio.sleep(1)
            active -= 1
            handled.append(message)

    async with open_supervisor() as sup:
        ref = await sup.spawn(Slow, name="slow")
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(ref.tell, i)
        await ref.stop()
    assert peak == 1
    assert sorted(handled) == list(range(5))
    assert trio.current_time() == pytest.approx(5)


async def test_messages_from_one_sender_are_handled_in_order(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []

    async def sender(ref: ActorRef[Any], who: str) -> None:
        for i in range(20):
            await ref.tell(Nap(0.1, (who, i)))

    async with open_supervisor() as sup:
        # A tiny mailbox makes the senders block and interleave.
        ref = await spawn_recorder(sup, log, mailbox_size=2)
        async with trio.open_nursery() as nursery:
            for who in "abc":
                nursery.start_soon(sender, ref, who)
        await ref.stop()
    labels = [m.label for m in log if isinstance(m, Nap)]
    for who in "abc":
        assert [i for w, i in labels if w == who] == list(range(20))
    assert len({w for w, _ in labels[:6]}) > 1, "senders did not interleave"


async def test_ask_returns_what_receive_returned(
    autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, [])
        assert await ref.ask("hello") == ("ok", "hello")
        assert await ref.ask(42, timeout=10) == ("ok", 42)


async def test_ask_reraises_the_exception_from_receive_and_the_actor_crashes(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    error = ValueError("bad message")
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log)
        with pytest.raises(ValueError) as caught:
            await ref.ask(Fail(error))
        assert caught.value is error
        await ref.wait_stopped()
        assert not ref.is_alive
        assert sup.children == []


async def test_ask_timeout_raises_and_drops_the_late_reply(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log)
        with pytest.raises(AskTimeout) as caught:
            await ref.ask(Nap(10, "slow"), timeout=2)
        assert isinstance(caught.value, TimeoutError)
        assert "rec" in str(caught.value)
        assert trio.current_time() == pytest.approx(2)
        # The late reply must not leak into the next ask.
        assert await ref.ask("next") == ("ok", "next")
        assert trio.current_time() == pytest.approx(10)


async def test_ask_timeout_counts_the_wait_for_mailbox_space(
    autojump_clock: MockClock, watchdog: None
) -> None:
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, [], mailbox_size=1)
        hold = Hold()
        await ref.tell(hold)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("fills the mailbox")
        with pytest.raises(AskTimeout):
            await ref.ask("never enqueued", timeout=1)
        hold.release.set()


async def test_tell_nowait_raises_mailbox_full_at_capacity(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log, mailbox_size=2)
        hold = Hold()
        ref.tell_nowait(hold)
        await trio.testing.wait_all_tasks_blocked()  # the actor now holds `hold`
        ref.tell_nowait(1)
        ref.tell_nowait(2)
        with pytest.raises(MailboxFull, match="rec"):
            ref.tell_nowait(3)
        with pytest.raises(MailboxFull):
            ref.stop_nowait()
        hold.release.set()
    assert log == ["on_start", hold, 1, 2, "on_stop"]


async def test_tell_waits_for_space_when_the_mailbox_is_full(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    sent = trio.Event()

    async def send_third(ref: ActorRef[Any]) -> None:
        await ref.tell(3)
        sent.set()

    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log, mailbox_size=2)
        hold = Hold()
        await ref.tell(hold)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(1)
        await ref.tell(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_third, ref)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            hold.release.set()
            await sent.wait()
        await ref.stop()
    assert log == ["on_start", hold, 1, 2, 3, "on_stop"]


async def test_stop_handles_earlier_messages_first_then_runs_on_stop(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []

    class Checked(Recorder):
        async def on_stop(self) -> None:
            # Refused, not silently lost: the actor is past its stop message.
            assert not self.ref.is_alive
            with pytest.raises(ActorDead):
                await self.ref.tell("sent during on_stop")
            await super().on_stop()

    async with open_supervisor() as sup:
        ref = await sup.spawn(lambda: Checked(log), name="rec")
        hold = Hold()
        await ref.tell(hold)
        await ref.tell(1)
        await ref.tell(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.stop)
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["on_start", hold]
            hold.release.set()
        assert log == ["on_start", hold, 1, 2, "on_stop"]
        assert not ref.is_alive
        await ref.stop()  # already stopped: a no-op
        ref.stop_nowait()
        await ref.wait_stopped()
        assert sup.children == []


async def test_a_dead_actor_rejects_messages(autojump_clock: MockClock, watchdog: None) -> None:
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, [])
        await ref.stop()
        with pytest.raises(ActorDead, match="rec"):
            await ref.tell(1)
        with pytest.raises(ActorDead, match="rec"):
            ref.tell_nowait(1)
        with pytest.raises(ActorDead, match="rec"):
            await ref.ask(1)
        with pytest.raises(ActorDead, match="rec"):
            await ref.ask(1, timeout=5)


async def test_messages_behind_the_stop_are_refused(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    outcomes: list[object] = []

    async def ask_late(ref: ActorRef[Any]) -> None:
        try:
            outcomes.append(await ref.ask("late ask"))
        except ActorDead as exc:
            outcomes.append(exc)

    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log)
        hold = Hold()
        await ref.tell(hold)
        await trio.testing.wait_all_tasks_blocked()
        ref.stop_nowait()
        await ref.tell("late tell")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_late, ref)
            await trio.testing.wait_all_tasks_blocked()
            hold.release.set()
    assert log == ["on_start", hold, "on_stop"]
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], ActorDead)


async def test_pending_asks_fail_with_actor_dead_when_the_actor_crashes(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    error = RuntimeError("boom")
    results: dict[str, object] = {}

    async def ask(ref: ActorRef[Any], message: object, key: str) -> None:
        try:
            results[key] = await ref.ask(message)
        except Exception as exc:
            results[key] = exc

    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, log, restart=Restart.TEMPORARY)
        hold = Hold()
        await ref.tell(hold)
        await trio.testing.wait_all_tasks_blocked()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, ref, Fail(error), "crasher")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, ref, "behind", "behind")
            await trio.testing.wait_all_tasks_blocked()
            hold.release.set()
    assert results["crasher"] is error
    behind = results["behind"]
    assert isinstance(behind, ActorDead)
    assert behind.__cause__ is error
    assert "behind" not in log


async def test_child_task_delivers_its_outcome_back_to_the_actor(
    autojump_clock: MockClock, watchdog: None
) -> None:
    @dataclass(frozen=True)
    class Start:
        n: int

    @dataclass(frozen=True)
    class Done:
        result: int

    class Worker(Actor[object]):
        result: int | None = None

        async def receive(self, message: object) -> object:
            if isinstance(message, Start):
                self.nursery.start_soon(self._work, message.n)
            elif isinstance(message, Done):
                self.result = message.result
            return self.result

        async def _work(self, n: int) -> None:
            await trio.sleep(5)
            await self.ref.tell(Done(n * n))

    async with open_supervisor() as sup:
        ref = await sup.spawn(Worker, name="worker")
        assert await ref.ask(Start(7)) is None
        # The actor keeps serving while its child task works.
        assert await ref.ask("poll") is None
        assert trio.current_time() == 0
        await trio.sleep(6)
        assert await ref.ask("poll") == 49


async def test_the_actor_nursery_is_cancelled_after_on_stop(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[str] = []

    class WithChild(Actor[object]):
        async def on_start(self) -> None:
            await self.nursery.start(self._child)

        async def _child(self, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                events.append("child cancelled")

        async def receive(self, message: object) -> None:
            pass

        async def on_stop(self) -> None:
            await trio.lowlevel.checkpoint()
            events.append("on_stop")

    async with open_supervisor() as sup:
        ref = await sup.spawn(WithChild, name="parent")
        await trio.testing.wait_all_tasks_blocked()
        assert events == []
        await ref.stop()
        assert events == ["on_stop", "child cancelled"]


async def test_a_crashing_child_task_crashes_the_actor(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[str] = []
    release = trio.Event()
    outcome: list[BaseException] = []

    class Fragile(Actor[object]):
        async def receive(self, message: object) -> None:
            if message == "spawn":
                self.nursery.start_soon(self._explode)
            else:
                await trio.sleep_forever()  # interrupted by the crash

        async def _explode(self) -> None:
            await release.wait()
            raise KeyError("child")

        async def on_stop(self) -> None:
            events.append("on_stop")

    async def ask_stuck(ref: ActorRef[object]) -> None:
        with pytest.raises(ActorDead) as caught:
            await ref.ask("stuck")
        outcome.append(caught.value)

    async with open_supervisor() as sup:
        ref = await sup.spawn(Fragile, name="fragile", restart=Restart.TEMPORARY)
        await ref.tell("spawn")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_stuck, ref)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        await ref.wait_stopped()
        assert not ref.is_alive
    assert events == ["on_stop"]
    assert len(outcome) == 1


async def test_on_start_failure_makes_spawn_raise(
    autojump_clock: MockClock, watchdog: None
) -> None:
    made: list[int] = []

    class BadStart(Actor[object]):
        def __init__(self) -> None:
            made.append(1)

        async def on_start(self) -> None:
            raise OSError("no resource")

        async def receive(self, message: object) -> None:
            pass

    async with open_supervisor() as sup:
        with pytest.raises(OSError, match="no resource"):
            await sup.spawn(BadStart, name="bad", restart=Restart.PERMANENT)
        assert sup.children == []
    assert made == [1]


async def test_spawn_returns_once_on_start_has_completed(
    autojump_clock: MockClock, watchdog: None
) -> None:
    class SlowStart(Actor[object]):
        ready = False

        async def on_start(self) -> None:
            await trio.sleep(3)
            self.ready = True

        async def receive(self, message: object) -> bool:
            return self.ready

    async with open_supervisor() as sup:
        ref = await sup.spawn(SlowStart, name="slow-start")
        assert trio.current_time() == 3
        assert await ref.ask("ready?") is True


async def test_ref_exposes_name_and_liveness(autojump_clock: MockClock, watchdog: None) -> None:
    async with open_supervisor() as sup:
        ref = await spawn_recorder(sup, [])
        assert ref.name == "rec"
        assert ref.is_alive
        assert sup.children == [ref]
        assert "rec" in repr(ref)
    assert not ref.is_alive
