"""One-for-one supervision: running, restarting and stopping actors."""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import trio

from ._actor import Actor, Starting, run_actor
from ._burst import SpawnBurst
from ._errors import ActorDead, MailboxFull, SupervisorEscalation
from ._mailbox import STOP, Mailbox
from ._ref import ActorRef

M = TypeVar("M")

logger = logging.getLogger("actors")


class Restart(enum.Enum):
    """When a supervisor restarts a crashed actor (OTP's restart types).

    A graceful stop never causes a restart, so ``PERMANENT`` and
    ``TRANSIENT`` behave alike here.
    """

    PERMANENT = "permanent"
    """Restarted whenever it crashes."""
    TRANSIENT = "transient"
    """Restarted only after a crash, not after a normal stop."""
    TEMPORARY = "temporary"
    """Never restarted; its crashes do not count towards the intensity."""


@final
class Supervisor:
    """Runs actors in its nursery and restarts them when they crash.

    Obtain one with :func:`open_supervisor`.

    Attributes:
        name: Used in log records and in :class:`SupervisorEscalation`.
    """

    def __init__(self, name: str, nursery: trio.Nursery, intensity: int, period: float) -> None:
        self.name = name
        self._nursery = nursery
        self._intensity = intensity
        self._period = period
        self._restarts: deque[float] = deque()
        # A dict as an ordered set: only live children, so that thousands of
        # short-lived actors do not pile up here.
        self._children: dict[ActorRef[Any], None] = {}
        self._closing = False
        self._burst = SpawnBurst()

    @property
    def children(self) -> list[ActorRef[Any]]:
        """Refs of the children that have not stopped or died for good yet."""
        return list(self._children)

    async def spawn(
        self,
        factory: Callable[[], Actor[M]],
        *,
        name: str,
        mailbox_size: int = 64,
        restart: Restart = Restart.PERMANENT,
    ) -> ActorRef[M]:
        """Start an actor and return its ref once its ``on_start`` completed.

        Args:
            factory: Builds a fresh instance; called again for every restart.
            name: The actor's name, for errors and logs (need not be unique).
            mailbox_size: Capacity of the mailbox, at least 1.
            restart: When to restart the actor after a crash.

        Returns:
            The actor's ref, valid across restarts.

        Raises:
            ValueError: ``mailbox_size`` is below 1.
            Exception: Whatever ``factory`` or the first ``on_start`` raised;
                the actor is then dead and not restarted.
        """
        starting = Starting()
        ref = self._start(factory, name, mailbox_size, restart, starting)
        await starting.wait()
        return ref

    def spawn_soon(
        self,
        factory: Callable[[], Actor[M]],
        *,
        name: str,
        mailbox_size: int = 64,
        restart: Restart = Restart.PERMANENT,
    ) -> ActorRef[M]:
        """Start an actor and return its ref at once, without waiting for ``on_start``.

        The non-blocking twin of :meth:`spawn`: messages told before
        ``on_start`` completes wait in the mailbox and are handled after it,
        in order. As no caller waits for it, a crash in the first
        ``on_start`` is handled by the restart policy like any later crash
        (logged; restarted unless ``TEMPORARY``; counted towards the
        intensity).

        Args:
            factory: Builds a fresh instance; called once here for the first
                instance and again for every restart.
            name: The actor's name, for errors and logs (need not be unique).
            mailbox_size: Capacity of the mailbox, at least 1.
            restart: When to restart the actor after a crash.

        Returns:
            The actor's ref, valid across restarts.

        Raises:
            ValueError: ``mailbox_size`` is below 1.
            RuntimeError: The supervisor has closed (its block was left).
            Exception: Whatever ``factory`` raised; nothing was spawned.
        """
        return self._start(factory, name, mailbox_size, restart, None)

    def _start(
        self,
        factory: Callable[[], Actor[M]],
        name: str,
        mailbox_size: int,
        restart: Restart,
        starting: Starting | None,
    ) -> ActorRef[M]:
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be at least 1, got {mailbox_size}")
        # Built here so that a factory that cannot build says so to the caller.
        first = factory()
        mailbox = Mailbox(name, mailbox_size)
        ref: ActorRef[M] = ActorRef(mailbox)
        # One plain task per actor, straight in the supervisor's nursery: no
        # `nursery.start` and its temporary nursery, no wrapper task.
        self._nursery.start_soon(self._supervise, factory, first, ref, mailbox, restart, starting)
        self._burst.spawned()
        # Registered now, so that it is among `children` (and gets a stop at
        # shutdown) even before its task first runs.
        self._children[ref] = None
        if self._closing:
            self._send_stop(ref)
        return ref

    async def _supervise(
        self,
        factory: Callable[[], Actor[M]],
        instance: Actor[M] | None,
        ref: ActorRef[M],
        mailbox: Mailbox,
        restart: Restart,
        starting: Starting | None,
    ) -> None:
        self._burst.started()
        crash: Exception | None = None
        try:
            while True:
                try:
                    if instance is None:
                        instance = factory()
                    await run_actor(instance, ref, mailbox, starting)
                    return
                except Exception as exc:
                    crash = _unwrap(exc)
                instance = None  # a crashed instance is garbage from here on
                if starting is not None:
                    if not starting.done:
                        # The caller of spawn gets the crash of the first
                        # on_start; the actor is dead and not restarted.
                        starting.failed(crash)
                        return
                    starting = None  # nobody waits for a restarted instance
                if not self._should_restart(ref, restart, mailbox, crash):
                    return
                # Its traceback pins the crashed instance; and if the next
                # instance is torn down, this crash is not why.
                crash = None
        finally:
            # Whatever ended the actor (stop, crash, escalation, teardown),
            # nobody must be left waiting on it.
            mailbox.close(crash)
            del self._children[ref]
            ref._set_stopped()

    def _should_restart(
        self, ref: ActorRef[Any], restart: Restart, mailbox: Mailbox, crash: Exception
    ) -> bool:
        """Log a crash and decide on a restart.

        Raises:
            SupervisorEscalation: The restart would exceed the intensity.
        """
        # A closed mailbox means the actor was already stopping: a new
        # instance would have nothing to receive.
        if restart is Restart.TEMPORARY or mailbox.closed:
            logger.error("%s: actor %r crashed", self.name, ref.name, exc_info=crash)
            return False
        now = trio.current_time()
        restarts = self._restarts
        restarts.append(now)
        while restarts[0] <= now - self._period:
            restarts.popleft()
        if len(restarts) > self._intensity:
            logger.error(
                "%s: actor %r crashed; more than %d restarts within %ss, escalating",
                self.name,
                ref.name,
                self._intensity,
                self._period,
                exc_info=crash,
            )
            raise SupervisorEscalation(
                self.name,
                ref.name,
                f"more than {self._intensity} restarts within {self._period}s",
            ) from crash
        logger.error("%s: actor %r crashed; restarting", self.name, ref.name, exc_info=crash)
        return True

    def _shutdown(self) -> None:
        """Send every child a stop message; children spawned later get one too."""
        self._closing = True
        for ref in self._children:
            self._send_stop(ref)

    def _send_stop(self, ref: ActorRef[Any]) -> None:
        # A task only for the rare child whose mailbox is full: one per child
        # would double the cost of stopping thousands of them.
        try:
            ref.stop_nowait()
        except MailboxFull:
            self._nursery.start_soon(_put_stop, ref._mailbox)

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} children={len(self._children)}>"


@asynccontextmanager
async def open_supervisor(
    name: str = "supervisor", *, intensity: int = 3, period: float = 5.0
) -> AsyncIterator[Supervisor]:
    """Open a one-for-one supervisor whose children live inside the block.

    Leaving the block normally stops every child gracefully (a stop message,
    so queued messages are handled first) and waits for them; leaving it with
    an exception or by cancellation cancels them.

    Args:
        name: The supervisor's name, for logs and errors.
        intensity: Most restarts tolerated within ``period``.
        period: Length of the sliding window, in seconds of trio's clock.

    Yields:
        The supervisor.

    Raises:
        SupervisorEscalation: More than ``intensity`` restarts happened within
            ``period`` seconds; all children were cancelled. Raised bare,
            not inside an exception group.
        ValueError: ``intensity`` is negative or ``period`` is not positive.
    """
    if intensity < 0:
        raise ValueError(f"intensity must be >= 0, got {intensity}")
    if period <= 0:
        raise ValueError(f"period must be > 0, got {period}")
    try:
        async with trio.open_nursery() as nursery:
            supervisor = Supervisor(name, nursery, intensity, period)
            yield supervisor
            supervisor._shutdown()
    except BaseExceptionGroup as group:
        # Children raise nothing but SupervisorEscalation (crashes are caught
        # and handled), so a group of one is unambiguous: that escalation or
        # whatever the block raised.
        if len(group.exceptions) != 1:
            raise
        error = group.exceptions[0]
    else:
        return
    raise error


async def _put_stop(mailbox: Mailbox) -> None:
    try:
        await mailbox.put(STOP)
    except ActorDead:
        pass


def _unwrap(exc: Exception) -> Exception:
    # Nurseries wrap even a lone exception; logs and __cause__ read better
    # with the exception that actually happened.
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
