"""Job kinds: what a handler is, what it receives, how it is retried."""

from __future__ import annotations

import inspect
import random
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import TypeAdapter

from ._claimed import ClaimedJob
from ._errors import UnknownJobKind, quote_prefix
from ._models import JobRecord


class ProgressReporter(Protocol):
    async def __call__(self, value: float) -> None: ...


class JobContext:
    """What a handler gets besides its payload."""

    __slots__ = ("_claimed", "_record", "_report_progress")

    def __init__(self, claimed: ClaimedJob, report_progress: ProgressReporter) -> None:
        self._claimed = claimed
        self._record: JobRecord | None = None
        self._report_progress = report_progress

    @property
    def job(self) -> JobRecord:
        """The job as it was when this attempt was claimed."""
        # Built on first use: most handlers never look, and a pydantic model
        # per job is a large share of a no-op job's cost.
        if self._record is None:
            self._record = self._claimed.record()
        return self._record

    @property
    def attempt(self) -> int:
        return self._claimed.attempt

    async def progress(self, value: float) -> None:
        """Persist the job's progress, a fraction from 0 to 1.

        Raises:
            ValueError: ``value`` is outside [0, 1].
        """
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"progress must be between 0 and 1, got {value}")
        await self._report_progress(value)


Handler = Callable[[JobContext, Any], Awaitable[Any]]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits about base * 2**(n-1).

    The wait is drawn uniformly from [delay/2, delay] ("equal jitter"), so
    jobs that failed together do not all come back together.
    """

    base: float = 1.0
    maximum: float = 300.0

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        # Cap the exponent before raising: 2**1024 does not fit in a float.
        doublings = min(failed_attempt - 1, 64)
        ceiling = min(self.maximum, self.base * 2.0**doublings)
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class JobDefinition:
    """A registered kind of job."""

    kind: str
    handler: Handler
    payload: TypeAdapter[Any]
    queue: str = "default"
    max_attempts: int = 1
    timeout: float | None = None
    priority: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def validate(self, payload: Any) -> Any:
        """The payload as the handler's type.

        Raises:
            pydantic.ValidationError: naming the offending field.
        """
        return self.payload.validate_python(payload)


def payload_type(handler: Handler) -> Any:
    """The annotation of the handler's second parameter (``Any`` if none)."""
    parameters = list(inspect.signature(handler).parameters.values())
    if len(parameters) != 2:
        raise TypeError(f"job handler {handler!r} must take (ctx, payload), got {len(parameters)} parameters")
    annotation = parameters[1].annotation
    if annotation is inspect.Parameter.empty:
        return Any
    if isinstance(annotation, str):
        # Resolve only the payload's annotation: the context's may name a
        # type imported under TYPE_CHECKING alone.
        target = handler if inspect.isfunction(handler) or inspect.ismethod(handler) else type(handler).__call__
        namespace = getattr(inspect.unwrap(target), "__globals__", {})
        annotation = typing.ForwardRef(annotation)._evaluate(namespace, None, recursive_guard=frozenset())
    return annotation


def known_kinds(kinds: list[str], shown: int = 20) -> str:
    """The registered kinds for an error message: the first ``shown`` of them."""
    if not kinds:
        return "none"
    more = f", and {len(kinds) - shown} more" if len(kinds) > shown else ""
    return ", ".join(kinds[:shown]) + more


class Registry:
    """The job kinds one orchestrator knows."""

    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition] = {}

    def add(self, definition: JobDefinition) -> None:
        if definition.kind in self._definitions:
            raise ValueError(f"job kind {definition.kind!r} is already registered")
        self._definitions[definition.kind] = definition

    def get(self, kind: str) -> JobDefinition:
        """The definition of ``kind``.

        Raises:
            UnknownJobKind: naming the kind and the known ones.
        """
        try:
            return self._definitions[kind]
        except (KeyError, TypeError):
            raise UnknownJobKind(f"unknown job kind {quote_prefix(kind)} (registered: {known_kinds(self.kinds)})") from None

    @property
    def kinds(self) -> list[str]:
        return sorted(self._definitions)

    @property
    def queues(self) -> list[str]:
        return sorted({d.queue for d in self._definitions.values()})

    def __contains__(self, kind: object) -> bool:
        return kind in self._definitions
