"""The actor base class and the loop that runs one instance of it."""

from __future__ import annotations

import abc
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, final

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ._errors import ActorDead
from ._mailbox import STOP, Mailbox, Request

if TYPE_CHECKING:
    from ._ref import ActorRef

M = TypeVar("M")

logger = logging.getLogger("actors")


class Actor(abc.ABC, Generic[M]):
    """Base class for actors: subclass it and override :meth:`receive`.

    An actor handles one message at a time, in mailbox order, even when
    :meth:`receive` awaits. Before :meth:`on_start` runs, the runtime sets:

    Attributes:
        ref: The actor's own ref, e.g. to send itself messages.
        nursery: A nursery that lives as long as this instance. Child tasks
            started in it are cancelled after :meth:`on_stop` returns, and an
            exception escaping one of them crashes the actor. A child task
            that reports back with ``await self.ref.tell(...)`` after the
            actor was asked to stop gets :class:`ActorDead`.
    """

    ref: ActorRef[M]
    nursery: trio.Nursery

    #: Whether each instance gets :attr:`nursery`. An actor class that never
    #: starts child tasks may set this to ``False``: its instances then run
    #: without a nursery of their own, which saves about 2 KB and 40% of the
    #: cost of spawning one (docs/performance.md), and :attr:`nursery` is
    #: not set.
    uses_nursery: ClassVar[bool] = True

    async def on_start(self) -> None:
        """Called before the first message; an exception here is a crash."""

    @abc.abstractmethod
    async def receive(self, message: M) -> Any:
        """Handle one message.

        Args:
            message: The message, as passed to ``tell`` or ``ask``.

        Returns:
            The reply to an ``ask``; ignored for a ``tell``.

        Raises:
            Exception: Any exception crashes the actor; for an ``ask`` it is
                also raised in the asker.
        """

    async def on_stop(self) -> None:
        """Called after the last message, before :attr:`nursery` is cancelled.

        Runs on a graceful stop and after a crash in :meth:`receive` or in a
        child task (in the latter case trio has already cancelled the
        nursery); not when :meth:`on_start` failed nor when the actor is
        cancelled by its supervisor's teardown.
        """


@final
class Starting:
    """The caller of an awaited :meth:`Supervisor.spawn`, waiting for ``on_start``.

    ``on_start`` runs inside :attr:`scope`, which the caller cancels if it is
    cancelled itself, so that an actor nobody holds a ref to does not live on.
    Only awaited spawns pay for this scope; ``spawn_soon`` passes none.
    """

    __slots__ = ("scope", "done", "_waiter")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.done = False
        self._waiter: Task | None = None

    async def wait(self) -> None:
        """Wait until ``on_start`` completed; raise what it raised.

        Raises:
            Exception: What the first ``factory`` call or ``on_start`` raised.
        """
        self._waiter = current_task()

        def abort(_: Any) -> Abort:
            self._waiter = None
            return Abort.SUCCEEDED

        try:
            await wait_task_rescheduled(abort)
        except trio.Cancelled:
            self.scope.cancel()
            raise

    def started(self) -> None:
        """Report that ``on_start`` completed."""
        self._wake(outcome.Value(None))

    def failed(self, error: Exception) -> None:
        """Report that the actor could not start, because of ``error``."""
        self._wake(outcome.Error(error))

    def _wake(self, result: outcome.Outcome[None]) -> None:
        self.done = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            reschedule(waiter, result)


def run_actor(
    actor: Actor[M], ref: ActorRef[M], mailbox: Mailbox, starting: Starting | None
) -> Coroutine[Any, Any, None]:
    """Run one instance of an actor until it stops or crashes.

    Args:
        actor: A fresh instance.
        ref: The actor's ref, shared by all its instances.
        mailbox: The actor's mailbox, shared by all its instances.
        starting: The caller of an awaited spawn, told once ``on_start``
            has completed; ``None`` when nobody waits.

    Raises:
        Exception: The crash: what ``on_start`` or ``receive`` raised, or the
            group trio raised for a failed child task in ``actor.nursery``.
            Returning normally means the stop message was handled and the
            mailbox is closed, or that the caller of spawn gave up on it.
    """
    actor.ref = ref
    if not actor.uses_nursery:
        # The bare coroutine, not one awaiting it: every frame kept per idle
        # actor counts when there are 100,000 of them.
        return _live(actor, mailbox, starting, None)
    return _live_in_nursery(actor, mailbox, starting)


async def _live_in_nursery(actor: Actor[M], mailbox: Mailbox, starting: Starting | None) -> None:
    serving = [False]
    try:
        async with trio.open_nursery() as nursery:
            actor.nursery = nursery
            await _live(actor, mailbox, starting, serving)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _, not_cancelled = group.split(trio.Cancelled)
        if serving[0] and not_cancelled is not None:
            # A child task crashed while the actor was serving.
            await _on_stop_after_crash(actor)
        raise


async def _live(
    actor: Actor[M], mailbox: Mailbox, starting: Starting | None, serving: list[bool] | None
) -> None:
    """Start, serve until the stop message, then stop; see :func:`run_actor`."""
    if starting is None:
        await actor.on_start()
    else:
        with starting.scope:
            await actor.on_start()
        if starting.scope.cancel_called:
            return
        starting.started()
    if serving is not None:
        serving[0] = True
    # The serving loop is here rather than in a coroutine of its own, and an
    # empty mailbox is waited on from here rather than inside Mailbox.get:
    # every coroutine an idle actor is suspended in is one more object the
    # garbage collector traverses, 100,000 times over. No `receive =
    # actor.receive` shortcuts either: bound methods kept in locals are
    # objects per idle actor, and calling through the attribute is as fast.
    try:
        while True:
            if not mailbox.depth:
                await wait_task_rescheduled(mailbox.park())
                continue
            item = await mailbox.get()
            if type(item) is Request:
                try:
                    result = await actor.receive(item.message)
                except BaseException as exc:
                    # Cancellation here means the actor is going down
                    # mid-message (a child task crashed, or teardown): the
                    # asker must not hang, but must not see a Cancelled from
                    # another task either.
                    if isinstance(exc, Exception):
                        item.fail(exc)
                    else:
                        item.fail(ActorDead(mailbox.name, "died before replying"))
                    raise
                item.reply(result)
            elif item is STOP:
                break
            else:
                await actor.receive(item)  # type: ignore[arg-type]
    except Exception:
        if serving is not None:
            serving[0] = False
        await _on_stop_after_crash(actor)
        raise
    if serving is not None:
        serving[0] = False
    # Close before on_stop: what arrives after the stop message, or during
    # on_stop, is refused rather than silently lost.
    mailbox.close()
    await actor.on_stop()


async def _on_stop_after_crash(actor: Actor[Any]) -> None:
    # A failing on_stop must not hide the crash that is being reported.
    try:
        await actor.on_stop()
    except Exception:
        logger.exception("on_stop of crashed actor %r failed", actor.ref.name)
