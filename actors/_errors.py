"""Exceptions raised by the actor runtime."""

from __future__ import annotations


class ActorDead(RuntimeError):
    """The actor has stopped or crashed for good and takes no more messages.

    Raised by :meth:`ActorRef.tell`, :meth:`ActorRef.tell_nowait` and
    :meth:`ActorRef.ask` on a dead actor, and delivered to every ask that was
    still waiting when the actor died. When the death was a crash, the crash
    is attached as ``__cause__``.

    Attributes:
        name: The name of the dead actor.
    """

    def __init__(self, name: str, detail: str = "is dead") -> None:
        super().__init__(f"actor {name!r} {detail}")
        self.name = name


class AskTimeout(TimeoutError):
    """No reply to :meth:`ActorRef.ask` arrived within its timeout.

    Attributes:
        name: The name of the actor that was asked.
        timeout: The timeout that expired, in seconds.
    """

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"actor {name!r} did not reply within {timeout}s")
        self.name = name
        self.timeout = timeout


class MailboxFull(RuntimeError):
    """The actor's mailbox is at capacity, so a ``*_nowait`` send failed.

    Attributes:
        name: The name of the actor whose mailbox is full.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"mailbox of actor {name!r} is full")
        self.name = name


class SupervisorEscalation(RuntimeError):
    """A supervisor's children crashed more often than its intensity allows.

    The last crash is attached as ``__cause__``.

    Attributes:
        supervisor: The name of the supervisor that gave up.
        actor: The name of the actor whose crash exceeded the intensity.
    """

    def __init__(self, supervisor: str, actor: str, detail: str) -> None:
        super().__init__(f"supervisor {supervisor!r} gave up on actor {actor!r}: {detail}")
        self.supervisor = supervisor
        self.actor = actor
