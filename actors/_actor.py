"""The actor base class and the loop that runs one instance of it."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

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


async def run_actor(
    actor: Actor[M], ref: ActorRef[M], mailbox: Mailbox, started: Callable[[], None]
) -> None:
    """Run one instance of an actor until it stops or crashes.

    Args:
        actor: A fresh instance.
        ref: The actor's ref, shared by all its instances.
        mailbox: The actor's mailbox, shared by all its instances.
        started: Called once ``on_start`` has completed.

    Raises:
        Exception: The crash: what ``on_start`` or ``receive`` raised, or the
            group trio raised for a failed child task in ``actor.nursery``.
            Returning normally means the stop message was handled and the
            mailbox is closed.
    """
    actor.ref = ref
    crash: Exception | None = None
    serving = False
    try:
        async with trio.open_nursery() as nursery:
            actor.nursery = nursery
            await actor.on_start()
            started()
            serving = True
            try:
                await _serve(actor, mailbox)
            except Exception as exc:
                crash = exc
            serving = False
            if crash is None:
                # Close before on_stop: what arrives after the stop message,
                # or during on_stop, is refused rather than silently lost.
                mailbox.close()
                await actor.on_stop()
            else:
                await _on_stop_after_crash(actor)
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        _, not_cancelled = group.split(trio.Cancelled)
        if serving and not_cancelled is not None:
            await _on_stop_after_crash(actor)
        raise
    if crash is not None:
        raise crash


async def _serve(actor: Actor[M], mailbox: Mailbox) -> None:
    """Handle messages one by one until the stop message."""
    receive = actor.receive
    get = mailbox.get
    while True:
        item = await get()
        if type(item) is Request:
            try:
                result = await receive(item.message)
            except BaseException as exc:
                # Cancellation here means the actor is going down mid-message
                # (a child task crashed, or teardown): the asker must not
                # hang, but must not see a Cancelled from another task either.
                if isinstance(exc, Exception):
                    item.fail(exc)
                else:
                    item.fail(ActorDead(mailbox.name, "died before replying"))
                raise
            item.reply(result)
        elif item is STOP:
            return
        else:
            await receive(item)  # type: ignore[arg-type]


async def _on_stop_after_crash(actor: Actor[Any]) -> None:
    # A failing on_stop must not hide the crash that is being reported.
    try:
        await actor.on_stop()
    except Exception:
        logger.exception("on_stop of crashed actor %r failed", actor.ref.name)
