"""The handle through which other code talks to an actor."""

from __future__ import annotations

from typing import Any, Generic, TypeVar, final

import trio

from ._errors import ActorDead, AskTimeout
from ._mailbox import STOP, Mailbox, Request

M = TypeVar("M")


@final
class ActorRef(Generic[M]):
    """The only handle other code holds on an actor.

    A ref stays valid across restarts: a restarted actor keeps its ref and its
    mailbox. It never references the actor instance, so holding a ref to a
    dead actor keeps nothing but the ref itself alive. Refs are created by
    :meth:`Supervisor.spawn`; do not instantiate them directly.
    """

    __slots__ = ("_mailbox", "_stopped", "_stopped_event", "__weakref__")

    def __init__(self, mailbox: Mailbox) -> None:
        self._mailbox = mailbox
        self._stopped = False
        # Made only for someone who waits: most actors are never waited on.
        self._stopped_event: trio.Event | None = None

    def _set_stopped(self) -> None:
        """Mark the actor as stopped for good and wake whoever waits for that."""
        self._stopped = True
        if self._stopped_event is not None:
            self._stopped_event.set()

    @property
    def name(self) -> str:
        """The actor's name, as given to :meth:`Supervisor.spawn`."""
        return self._mailbox.name

    @property
    def is_alive(self) -> bool:
        """Whether the actor still accepts messages.

        Turns false as soon as the actor dequeues its stop message or dies
        for good, possibly before :meth:`wait_stopped` returns.
        """
        return not self._mailbox.closed

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in the actor's mailbox (for monitoring)."""
        return self._mailbox.depth

    async def tell(self, message: M) -> None:
        """Enqueue ``message``, waiting for space while the mailbox is full.

        Raises:
            ActorDead: The actor is dead, or died while we waited for space.
        """
        await self._mailbox.put(message)

    def tell_nowait(self, message: M) -> None:
        """Enqueue ``message`` without waiting.

        Raises:
            MailboxFull: The mailbox is at capacity.
            ActorDead: The actor is dead.
        """
        self._mailbox.put_nowait(message)

    async def ask(self, message: M, *, timeout: float | None = None) -> Any:
        """Enqueue ``message`` and wait for the value ``receive`` returns for it.

        Args:
            message: The message to handle.
            timeout: Seconds (trio clock) to wait, counting any wait for
                mailbox space; ``None`` waits forever.

        Returns:
            Whatever the actor's ``receive`` returned.

        Raises:
            AskTimeout: No reply within ``timeout``. The message may still be
                handled later; its reply is then dropped.
            ActorDead: The actor was dead, or stopped or died before replying.
            Exception: Whatever ``receive`` raised for this message (the actor
                crashed on it).
        """
        request = Request(message)
        if timeout is None:
            await self._mailbox.put(request)
            return await request.wait()
        with trio.move_on_after(timeout):
            await self._mailbox.put(request)
            return await request.wait()
        # The deadline can fire in the very checkpoint that sees the reply
        # arrive; a reply that made it in time is not a timeout.
        if request.done:
            return request.result()
        raise AskTimeout(self.name, timeout)

    async def stop(self) -> None:
        """Ask the actor to stop and wait until it has.

        The stop is a message: everything enqueued before it is handled
        first, then ``on_stop`` runs. Stopping a dead actor is a no-op. Never
        await this from the actor's own ``receive`` (it would wait for
        itself); use :meth:`stop_nowait` there.
        """
        try:
            await self._mailbox.put(STOP)
        except ActorDead:
            pass
        await self.wait_stopped()

    def stop_nowait(self) -> None:
        """Enqueue a stop message without waiting for it to take effect.

        Raises:
            MailboxFull: The mailbox is at capacity.
        """
        try:
            self._mailbox.put_nowait(STOP)
        except ActorDead:
            pass

    async def wait_stopped(self) -> None:
        """Wait until the actor has stopped or died for good."""
        if self._stopped:
            await trio.lowlevel.checkpoint()
            return
        if self._stopped_event is None:
            self._stopped_event = trio.Event()
        await self._stopped_event.wait()

    def __repr__(self) -> str:
        state = "alive" if self.is_alive else "dead"
        return f"<ActorRef {self.name!r} {state}>"
