"""The mailbox without memory channels: waiting senders, fairness, bare actors."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from actors import Actor, ActorDead, MailboxFull, Restart, open_supervisor


class Gate(Actor[Any]):
    """Logs messages; blocks on the ``trio.Event`` messages until they are set."""

    def __init__(self, log: list[object]) -> None:
        self.log = log

    async def receive(self, message: Any) -> Any:
        if isinstance(message, trio.Event):
            await message.wait()
        else:
            self.log.append(message)
        return message


async def test_waiting_senders_keep_their_order_and_nobody_jumps_them(
    autojump_clock: MockClock, watchdog: None
) -> None:
    log: list[object] = []
    async with open_supervisor() as sup:
        ref = await sup.spawn(lambda: Gate(log), name="gate", mailbox_size=1)
        gate = trio.Event()
        await ref.tell(gate)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("first")  # fills the mailbox
        async with trio.open_nursery() as senders:
            for label in ("a", "b", "c"):
                senders.start_soon(ref.tell, label)
                await trio.testing.wait_all_tasks_blocked()
            gate.set()
            # The room that "first" frees goes to "a", already waiting: a
            # sender that does not wait cannot take it.
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(MailboxFull):
                for _ in range(10):
                    ref.tell_nowait("jumper")
        assert await ref.ask("last") == "last"
    assert log[:4] == ["first", "a", "b", "c"]
    assert log[-1] == "last"


async def test_senders_waiting_for_room_get_actor_dead_when_it_dies(
    autojump_clock: MockClock, watchdog: None
) -> None:
    class Crashy(Actor[Any]):
        async def receive(self, message: Any) -> None:
            if isinstance(message, trio.Event):
                await message.wait()
                raise RuntimeError("boom")

    outcomes: list[str] = []

    async def send(ref: Any, message: Any) -> None:
        try:
            await ref.ask(message)
            outcomes.append("answered")
        except ActorDead:
            outcomes.append("dead")

    async with open_supervisor() as sup:
        ref = await sup.spawn(Crashy, name="crashy", mailbox_size=1, restart=Restart.TEMPORARY)
        gate = trio.Event()
        await ref.tell(gate)
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell("fills the mailbox")
        async with trio.open_nursery() as senders:
            senders.start_soon(send, ref, "waits for room")
            senders.start_soon(send, ref, "waits too")
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        await ref.wait_stopped()
    # Both the ask moved into the queue and the one still waiting for room.
    assert outcomes == ["dead", "dead"]


async def test_an_actor_telling_itself_lets_other_tasks_run(
    autojump_clock: MockClock, watchdog: None
) -> None:
    others_ran = [0]
    seen_by_spinner: list[int] = []

    class Spinner(Actor[int]):
        async def receive(self, message: int) -> None:
            # Never awaits anything: only the mailbox can let others run.
            if message < 1000:
                self.ref.tell_nowait(message + 1)
            else:
                seen_by_spinner.append(others_ran[0])

    async def other() -> None:
        while not seen_by_spinner:
            others_ran[0] += 1
            await trio.lowlevel.checkpoint()

    async with open_supervisor() as sup:
        ref = await sup.spawn(Spinner, name="spinner")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            ref.tell_nowait(0)
    # 1,000 messages in a row: the other task ran between every batch.
    assert seen_by_spinner[0] >= 1000 // 64


async def test_an_actor_without_a_nursery_serves_and_stops(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[object] = []

    class Bare(Actor[Any]):
        uses_nursery = False

        async def on_start(self) -> None:
            events.append(hasattr(self, "nursery"))

        async def receive(self, message: Any) -> Any:
            return ("ok", message)

        async def on_stop(self) -> None:
            events.append("on_stop")

    async with open_supervisor() as sup:
        ref = sup.spawn_soon(Bare, name="bare")
        ref.tell_nowait("x")
        assert await ref.ask("y") == ("ok", "y")
        await ref.stop()
        assert not ref.is_alive
    assert events == [False, "on_stop"]


async def test_cancelling_an_awaited_spawn_during_on_start_kills_the_actor(
    autojump_clock: MockClock, watchdog: None
) -> None:
    events: list[str] = []

    class Slow(Actor[Any]):
        async def on_start(self) -> None:
            try:
                await trio.sleep(10)
            finally:
                events.append("on_start left")

        async def receive(self, message: Any) -> None:
            events.append("received")

        async def on_stop(self) -> None:
            events.append("on_stop")

    async with open_supervisor() as sup:
        with trio.move_on_after(1) as scope:
            await sup.spawn(Slow, name="slow")
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert sup.children == []
        assert trio.current_time() == 1
    assert events == ["on_start left"]


def _suspended_in(task: trio.lowlevel.Task) -> list[str]:
    """The names of the coroutines ``task`` is suspended in, outermost first."""
    names = []
    frame: Any = task.coro
    while frame is not None and hasattr(frame, "cr_code"):
        names.append(frame.cr_code.co_name)
        frame = frame.cr_await
    return names


@pytest.mark.parametrize("own_nursery", [True, False])
async def test_an_idle_actor_waits_in_few_coroutines_and_still_wakes(
    own_nursery: bool, autojump_clock: MockClock, watchdog: None
) -> None:
    class Idle(Actor[Any]):
        uses_nursery = own_nursery

        async def receive(self, message: Any) -> Any:
            return message

    async with open_supervisor() as sup:
        ref = sup.spawn_soon(Idle, name="idle")
        await trio.testing.wait_all_tasks_blocked()
        [task] = sup._nursery.child_tasks
        # Each coroutine an idle actor sits in is kept 100,000 times over.
        outer = ["_supervise", "_live_in_nursery"] if own_nursery else ["_supervise"]
        assert _suspended_in(task) == [*outer, "_live", "wait_task_rescheduled"]
        assert await ref.ask("wake") == "wake"
        ref.tell_nowait("again")
        assert await ref.ask("and again") == "and again"
        await trio.testing.wait_all_tasks_blocked()
        assert _suspended_in(task) == [*outer, "_live", "wait_task_rescheduled"]


async def test_an_idle_actor_whose_mailbox_closes_is_dead(autojump_clock: MockClock, watchdog: None) -> None:
    class Idle(Actor[Any]):
        async def receive(self, message: Any) -> Any:
            return message

    async with open_supervisor() as sup:
        ref = sup.spawn_soon(Idle, name="idle")
        await trio.testing.wait_all_tasks_blocked()
        ref._mailbox.close()  # as if it died: the parked receiver is woken with ActorDead
        await ref.wait_stopped()
        assert not ref.is_alive and sup.children == []
        with pytest.raises(ActorDead):
            ref._mailbox.park()
        with pytest.raises(ActorDead):
            await ref.ask("anyone?")
