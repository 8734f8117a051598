"""The bounded mailbox an actor's ref and its successive instances share."""

from __future__ import annotations

from typing import Any, Final, final

import trio

from ._errors import ActorDead, MailboxFull


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

    __slots__ = ("message", "_done", "_value", "_error")

    def __init__(self, message: Any) -> None:
        self.message = message
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    def done(self) -> bool:
        """Whether a reply or a failure has been delivered."""
        return self._done.is_set()

    def reply(self, value: Any) -> None:
        """Deliver ``value`` as the answer, unless already answered."""
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        """Deliver ``error`` to be raised in the asker, unless already answered."""
        if not self._done.is_set():
            self._error = error
            self._done.set()

    def result(self) -> Any:
        """Return the reply or raise the failure; only valid once :attr:`done`."""
        if self._error is not None:
            raise self._error
        return self._value

    async def wait(self) -> Any:
        """Wait for the outcome, then return the reply or raise the failure."""
        await self._done.wait()
        return self.result()


@final
class Mailbox:
    """A bounded FIFO of messages, :class:`Request` objects and :data:`STOP`.

    It outlives any single actor instance, so that messages queued behind a
    crash are handled by the restarted instance. Closing it is what makes an
    actor dead: senders then get :class:`ActorDead`.

    Args:
        name: Name of the owning actor, used in error messages.
        capacity: Maximum number of queued items; senders wait beyond that.
    """

    __slots__ = ("name", "_send", "_receive", "_closed")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self._send, self._receive = trio.open_memory_channel[object](capacity)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the mailbox was closed, i.e. the actor is dead."""
        return self._closed

    @property
    def depth(self) -> int:
        """Items queued and not yet taken."""
        return self._send.statistics().current_buffer_used

    async def put(self, item: object) -> None:
        """Enqueue ``item``, waiting for space if the mailbox is full.

        Raises:
            ActorDead: The mailbox is closed, or got closed while waiting.
        """
        try:
            await self._send.send(item)
        except trio.BrokenResourceError:
            raise ActorDead(self.name) from None

    def put_nowait(self, item: object) -> None:
        """Enqueue ``item`` without waiting.

        Raises:
            MailboxFull: There is no space left.
            ActorDead: The mailbox is closed.
        """
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            raise MailboxFull(self.name) from None
        except trio.BrokenResourceError:
            raise ActorDead(self.name) from None

    async def get(self) -> object:
        """Wait for and remove the oldest item."""
        return await self._receive.receive()

    def close(self, cause: BaseException | None = None) -> None:
        """Reject everything still queued and every later send.

        Pending asks fail with :class:`ActorDead` (chained to ``cause``, the
        crash that killed the actor, if any); pending tells are dropped.
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        detail = "stopped before replying" if cause is None else "died before replying"
        # Draining before closing matters: closing a trio channel discards its
        # buffer, and would leave the askers in it waiting forever. No
        # checkpoint happens in between, so nothing can sneak in.
        while True:
            try:
                item = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if type(item) is Request:
                error = ActorDead(self.name, detail)
                error.__cause__ = cause
                item.fail(error)
        self._receive.close()
