"""Taking off, at a context manager's edge, the exception groups its nurseries added.

``async with orch.running():`` runs its body inside nurseries (the asyncio
loop's, the listener's, the worker's), and each wraps an exception passing
through in a group. The caller must get what its own code raised as it
would without the orchestrator: the same object, with its ``__cause__`` and
``__context__``; and an error of ours that ended the block, bare, when it is
the only one. Several exceptions at once stay a group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

__all__ = ["NurseryEdge", "leaves", "peel", "reraise"]


def reraise(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as it is: raising it inside an ``except`` block would
    otherwise replace its ``__context__`` with the exception being handled."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


def peel(exc: BaseException) -> BaseException:
    """``exc`` without the groups of exactly one exception around it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups; ``[exc]`` if it is none."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def _same_leaves(a: BaseException, b: BaseException) -> bool:
    return [id(leaf) for leaf in leaves(a)] == [id(leaf) for leaf in leaves(b)]


class NurseryEdge:
    """The two ends of a context manager whose nurseries wrap its body's exception.

    Use::

        edge = NurseryEdge()
        with edge.unwrapping():
            async with trio.open_nursery():
                with edge.body():
                    yield
    """

    def __init__(self) -> None:
        self._raised: BaseException | None = None

    @contextmanager
    def body(self) -> Iterator[None]:
        """Around the ``yield``: remembers what the caller's block raised."""
        try:
            yield
        except BaseException as exc:
            self._raised = exc
            raise

    @contextmanager
    def unwrapping(self) -> Iterator[None]:
        """Outside the nurseries: the block's own exception comes out as itself;
        another lone exception comes out bare; several stay a group."""
        try:
            yield
        except BaseExceptionGroup as group:
            raised, self._raised = self._raised, None
            # Nurseries rebuild the groups they pass on (``split``), but keep
            # the leaves: the same leaves mean nothing but the block's own
            # exception escaped.
            if raised is not None and _same_leaves(group, raised):
                reraise(raised)
            inner = peel(group)
            if isinstance(inner, BaseExceptionGroup):
                raise
            reraise(inner)
        finally:
            self._raised = None
