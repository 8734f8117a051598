"""Property: concurrent senders, crashes and a stop compose predictably.

Several senders tell and ask concurrently while a stopper stops the actor at
an arbitrary point; some messages crash the (permanent) actor. Whatever the
interleaving: each sender's handled messages are a prefix of what it sent,
in order, each handled once; asks get their reply, their crash, or, if never
handled, ActorDead; every instance started is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

from actors import Actor, ActorDead, open_supervisor


@dataclass(frozen=True)
class Msg:
    sender: int
    index: int
    crash: bool
    naps: int


class Boom(Exception):
    pass


class Echo(Actor[Msg]):
    def __init__(self, handled: list[Msg], lifecycle: list[str]) -> None:
        self.handled = handled
        self.lifecycle = lifecycle

    async def on_start(self) -> None:
        self.lifecycle.append("start")

    async def receive(self, message: Msg) -> tuple[int, int]:
        self.handled.append(message)
        for _ in range(message.naps):
            await trio.lowlevel.checkpoint()
        if message.crash:
            raise Boom(message)
        return (message.sender, message.index)

    async def on_stop(self) -> None:
        self.lifecycle.append("stop")


ops = st.tuples(
    st.sampled_from(["tell", "ask"]),
    st.integers(0, 4).map(lambda n: n == 0),  # crash, one time in five
    st.integers(0, 2),
)
plans = st.lists(st.lists(ops, max_size=12), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(plan=plans, stop_after=st.integers(0, 80), mailbox_size=st.integers(1, 6))
def test_senders_crashes_and_stop_compose(
    plan: list[list[tuple[str, bool, int]]], stop_after: int, mailbox_size: int
) -> None:
    handled: list[Msg] = []
    lifecycle: list[str] = []
    outcomes: dict[Msg, object] = {}
    messages = [
        [Msg(sender, index, crash, naps) for index, (_, crash, naps) in enumerate(sender_ops)]
        for sender, sender_ops in enumerate(plan)
    ]

    async def scenario() -> None:
        with trio.fail_after(10_000):  # virtual seconds: fail rather than hang
            async with open_supervisor(intensity=10_000) as sup:
                ref = await sup.spawn(
                    lambda: Echo(handled, lifecycle), name="echo", mailbox_size=mailbox_size
                )

                async def send_all(sender: int) -> None:
                    for (kind, _, _), msg in zip(plan[sender], messages[sender], strict=True):
                        try:
                            if kind == "tell":
                                await ref.tell(msg)
                                outcomes[msg] = "told"
                            else:
                                outcomes[msg] = await ref.ask(msg)
                        except (ActorDead, Boom) as exc:
                            outcomes[msg] = exc

                async def stopper() -> None:
                    for _ in range(stop_after):
                        await trio.lowlevel.checkpoint()
                    await ref.stop()

                async with trio.open_nursery() as nursery:
                    for sender in range(len(plan)):
                        nursery.start_soon(send_all, sender)
                    nursery.start_soon(stopper)
                assert not ref.is_alive
                assert sup.children == []

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))

    assert len(handled) == len(set(handled)), "a message was handled twice"
    for sender, sent in enumerate(messages):
        mine = [m for m in handled if m.sender == sender]
        assert mine == sent[: len(mine)], "not a prefix in send order"
        for (kind, _, _), msg in zip(plan[sender], sent, strict=True):
            outcome = outcomes[msg]
            if msg in mine:
                if kind == "tell":
                    assert outcome == "told"
                elif msg.crash:
                    assert isinstance(outcome, Boom) and outcome.args == (msg,)
                else:
                    assert outcome == (msg.sender, msg.index)
            elif kind == "ask":
                assert isinstance(outcome, ActorDead)
            else:
                assert outcome == "told" or isinstance(outcome, ActorDead)
    instances = 1 + sum(m.crash for m in handled)
    # Shown by --hypothesis-show-statistics: the interesting cases do occur.
    event(f"restarts: {instances - 1 if instances < 4 else '3+'}")
    event("some messages not handled" if len(handled) < sum(map(len, messages)) else "all handled")
    assert lifecycle == ["start", "stop"] * instances
