"""Drive an asyncio coroutine from the trio task that awaits it.

``trio_asyncio.aio_as_trio`` wraps each call in an ``asyncio.Task`` on the
trio-asyncio loop: the task's first step, its wake-up when the statement's
reply arrives, and its completion are each a callback queued on that loop,
and each is a pass of trio's scheduler before the caller runs again. For a
statement on an open connection none of that is needed: the coroutine only
sends on the connection's transport and waits for the future its protocol
resolves when the reply is read. :func:`run_inline` steps the coroutine in
the caller's own task, as ``asyncio.Task`` would, and parks the caller on
each future the coroutine waits for, so only the future's own callback
crosses the loop (measured: 5 scheduler passes per ``SELECT 1`` instead of
7, about a fifth less CPU per statement; docs/performance.md).

What runs inline must be asyncio code that waits only on futures of the
loop it was given (asyncpg's ``fetch``/``execute`` family on a connection
with no cancellation pending): there is no ``asyncio.current_task()`` here,
so ``asyncio.timeout`` or ``asyncio.wait_for`` inside it would fail.
Connecting, closing, listeners and migrations keep ``aio_as_trio``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import trio

T = TypeVar("T")


async def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion in the current trio task; its result.

    A caller already cancelled gets ``trio.Cancelled`` before anything is
    sent (the coroutine is closed unstarted). Cancelling the caller later
    cancels the future the coroutine waits on, as
    ``Task.cancel`` would; if the coroutine then ends with
    ``asyncio.CancelledError``, the caller gets ``trio.Cancelled``. A
    coroutine that completes anyway (its reply was already on its way)
    returns its result, and the cancellation lands at the caller's next
    checkpoint.

    Raises:
        RuntimeError: the coroutine waited on something that is not an
            asyncio future (it needs a real ``asyncio.Task``).
    """
    try:
        await trio.lowlevel.checkpoint_if_cancelled()
    except BaseException:
        coro.close()
        raise
    task = trio.lowlevel.current_task()
    raise_cancel: Callable[[], Any] | None = None

    def wake(_future: asyncio.Future[Any]) -> None:
        trio.lowlevel.reschedule(task)

    def abort(raise_cancel_arg: Callable[[], Any]) -> trio.lowlevel.Abort:
        nonlocal raise_cancel
        raise_cancel = raise_cancel_arg
        future.cancel()
        # The future's callback wakes the task once the coroutine has seen it.
        return trio.lowlevel.Abort.FAILED

    try:
        while True:
            future = coro.send(None)
            if future is None:
                # A bare yield (``asyncio.sleep(0)``): let the loop run once.
                await trio.lowlevel.cancel_shielded_checkpoint()
                continue
            if getattr(future, "_asyncio_future_blocking", None) is not True:
                coro.close()
                raise RuntimeError(f"run_inline: the coroutine waited on {future!r}, not an asyncio future")
            future._asyncio_future_blocking = False
            if not future.done():
                future.add_done_callback(wake)
                await trio.lowlevel.wait_task_rescheduled(abort)
    except StopIteration as stop:
        result: T = stop.value
        return result
    except asyncio.CancelledError:
        if raise_cancel is not None:
            raise_cancel()
        raise
