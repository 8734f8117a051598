"""The bounded mailbox an actor's ref and its successive instances share.

Built on a deque and trio's low-level parking rather than a memory channel:
an actor costs only its queued items, a tell costs an append (no envelope;
only an ask carries a :class:`Request`), and neither side yields to the
scheduler unless it has to wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, final

import outcome
from trio.lowlevel import (
    Abort,
    Task,
    checkpoint,
    checkpoint_if_cancelled,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from ._errors import ActorDead, MailboxFull

#: An actor that finds its mailbox non-empty takes this many items in a row
#: before it lets other tasks run. Without such a bound, an actor that keeps
#: telling itself would never yield and would freeze the whole program.
YIELD_EVERY: Final = 64


@final
class _Stop:
    __slots__ = ()

    def __repr__(self) -> str:
        return "STOP"


#: Enqueued by :meth:`ActorRef.stop`; it travels behind earlier messages so
#: that they are handled before the actor stops.
STOP: Final = _Stop()


@final
class Request:
    """An ask in flight: the message plus a one-shot reply slot.

    Only the first outcome counts, so a reply racing a failure is harmless; a
    reply nobody waits for any more (the asker timed out) is simply dropped
    with this object.
    """

    __slots__ = ("message", "_done", "_value", "_error", "_waiter")

    def __init__(self, message: Any) -> None:
        self.message = message
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._waiter: Task | None = None

    @property
    def done(self) -> bool:
        """Whether a reply or a failure has been delivered."""
        return self._done

    def reply(self, value: Any) -> None:
        """Deliver ``value`` as the answer, unless already answered."""
        if not self._done:
            self._value = value
            self._settle()

    def fail(self, error: BaseException) -> None:
        """Deliver ``error`` to be raised in the asker, unless already answered."""
        if not self._done:
            self._error = error
            self._settle()

    def _settle(self) -> None:
        self._done = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            reschedule(waiter)

    def result(self) -> Any:
        """Return the reply or raise the failure; only valid once :attr:`done`."""
        if self._error is not None:
            raise self._error
        return self._value

    async def wait(self) -> Any:
        """Wait for the outcome, then return the reply or raise the failure."""
        if not self._done:
            self._waiter = current_task()

            def abort(_: Any) -> Abort:
                self._waiter = None
                return Abort.SUCCEEDED

            await wait_task_rescheduled(abort)
        else:
            await checkpoint_if_cancelled()
        return self.result()


@final
class Mailbox:
    """A bounded FIFO of messages, :class:`Request` objects and :data:`STOP`.

    It outlives any single actor instance, so that messages queued behind a
    crash are handled by the restarted instance. Closing it is what makes an
    actor dead: senders then get :class:`ActorDead`.

    One task receives (the actor's); any number send. A sender that finds it
    full parks with its item, and the receiver moves parked items into the
    queue in arrival order as it frees room, so waiting senders keep their
    order and nobody can take their place.

    Args:
        name: Name of the owning actor, used in error messages.
        capacity: Maximum number of queued items; senders wait beyond that.
    """

    __slots__ = ("name", "_items", "_capacity", "_closed", "_getter", "_putters", "_streak")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self._items: deque[object] = deque()
        self._capacity = capacity
        self._closed = False
        self._getter: Task | None = None
        # Created on the first sender that has to wait: most mailboxes never
        # fill up, and an empty dict per actor adds up over 100,000 actors.
        self._putters: dict[Task, object] | None = None
        self._streak = 0

    @property
    def closed(self) -> bool:
        """Whether the mailbox was closed, i.e. the actor is dead."""
        return self._closed

    @property
    def depth(self) -> int:
        """Items queued and not yet taken."""
        return len(self._items)

    async def put(self, item: object) -> None:
        """Enqueue ``item``, waiting for space if the mailbox is full.

        Yields to the scheduler only when it has to wait (it does honour a
        pending cancellation either way).

        Raises:
            ActorDead: The mailbox is closed, or got closed while waiting.
        """
        await checkpoint_if_cancelled()
        if self._closed:
            raise ActorDead(self.name)
        if len(self._items) < self._capacity:
            self._push(item)
            return
        putters = self._putters
        if putters is None:
            putters = self._putters = {}
        task = current_task()
        putters[task] = item

        def abort(_: Any) -> Abort:
            del putters[task]
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)

    def put_nowait(self, item: object) -> None:
        """Enqueue ``item`` without waiting.

        Raises:
            MailboxFull: There is no space left.
            ActorDead: The mailbox is closed.
        """
        if self._closed:
            raise ActorDead(self.name)
        if len(self._items) >= self._capacity:
            raise MailboxFull(self.name)
        self._push(item)

    def _push(self, item: object) -> None:
        self._items.append(item)
        getter = self._getter
        if getter is not None:
            self._getter = None
            reschedule(getter)

    def park(self) -> Callable[[Any], Abort]:
        """Register the receiving task to be woken by the next item or by :meth:`close`.

        For a receiver that waits on an empty mailbox itself, without the
        coroutine of :meth:`get`: ``await wait_task_rescheduled(mailbox.park())``,
        then look again. The abort function returned unregisters it.

        Raises:
            ActorDead: The mailbox is closed.
        """
        if self._closed:
            raise ActorDead(self.name)
        # A receiver that had to wait has yielded: its run of items starts over.
        self._streak = 0
        self._getter = current_task()
        return self._abort_get

    async def get(self) -> object:
        """Wait for and remove the oldest item (only the actor's task calls this)."""
        items = self._items
        if items and self._streak < YIELD_EVERY:
            self._streak += 1
            await checkpoint_if_cancelled()
        else:
            self._streak = 0
            if items:
                await checkpoint()
            while not items:
                await wait_task_rescheduled(self.park())
        item = items.popleft()
        putters = self._putters
        if putters:
            # Hand the room just freed to the longest-waiting sender.
            task = next(iter(putters))
            items.append(putters.pop(task))
            reschedule(task)
        return item

    def _abort_get(self, _: Any) -> Abort:
        self._getter = None
        return Abort.SUCCEEDED

    def close(self, cause: BaseException | None = None) -> None:
        """Reject everything still queued and every later send.

        Pending asks fail with :class:`ActorDead` (chained to ``cause``, the
        crash that killed the actor, if any); pending tells are dropped;
        senders waiting for room get :class:`ActorDead`. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        detail = "stopped before replying" if cause is None else "died before replying"
        items = self._items
        putters = self._putters or {}
        for item in (*items, *putters.values()):
            if type(item) is Request:
                error = ActorDead(self.name, detail)
                error.__cause__ = cause
                item.fail(error)
        items.clear()
        for task in putters:
            reschedule(task, outcome.Error(ActorDead(self.name)))
        putters.clear()
        getter = self._getter
        if getter is not None:
            self._getter = None
            reschedule(getter, outcome.Error(ActorDead(self.name)))

