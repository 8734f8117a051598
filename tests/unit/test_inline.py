"""run_inline: an asyncio coroutine stepped in the calling trio task, on a
trio-asyncio loop, with asyncio's own futures (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
import trio
import trio.testing
import trio_asyncio

from orchestrator._inline import run_inline


@pytest.fixture
async def loop() -> AsyncIterator[Any]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


async def waits_on(future: asyncio.Future[Any]) -> Any:
    first = await future
    return ("got", first)


async def test_returns_what_the_coroutine_returns_after_its_futures_resolve(loop: Any) -> None:
    future = loop.create_future()
    loop.call_soon(future.set_result, 41)
    assert await run_inline(waits_on(future)) == ("got", 41)


async def test_steps_through_several_futures_and_a_bare_yield(loop: Any) -> None:
    async def several() -> list[int]:
        seen = []
        for value in (1, 2, 3):
            future = loop.create_future()
            loop.call_later(0.001, future.set_result, value)
            seen.append(await future)
            await asyncio.sleep(0)
        return seen

    assert await run_inline(several()) == [1, 2, 3]


async def test_an_exception_set_on_the_future_is_raised_to_the_caller(loop: Any) -> None:
    future = loop.create_future()
    loop.call_soon(future.set_exception, ValueError("from asyncio"))
    with pytest.raises(ValueError, match="from asyncio"):
        await run_inline(waits_on(future))


async def test_a_caller_already_cancelled_never_starts_the_coroutine(loop: Any) -> None:
    started = []

    async def would_send() -> None:
        started.append(True)

    with trio.CancelScope() as scope:
        scope.cancel()
        await run_inline(would_send())
    assert scope.cancelled_caught
    assert started == []


async def cancel_while_waiting(
    coro: Coroutine[Any, Any, Any], before_cancel: Callable[[], None] = lambda: None
) -> tuple[trio.CancelScope, list[Any]]:
    """Run ``coro`` inline in a task of its own and cancel that task once it
    waits (after ``before_cancel``); its cancel scope and what it returned."""
    scope = trio.CancelScope()
    results: list[Any] = []

    async def call() -> None:
        with scope:
            results.append(await run_inline(coro))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        before_cancel()
        scope.cancel()
    return scope, results


async def test_cancelling_the_caller_cancels_the_awaited_future(loop: Any) -> None:
    future = loop.create_future()
    scope, _ = await cancel_while_waiting(waits_on(future))
    assert scope.cancelled_caught
    assert future.cancelled()


async def test_cancelled_while_waiting_lets_the_coroutine_clean_up_first(loop: Any) -> None:
    future = loop.create_future()
    cleaned = []

    async def cleans_up() -> None:
        try:
            await future
        finally:
            cleaned.append("done")

    def not_yet_cleaned() -> None:
        assert not cleaned

    scope, _ = await cancel_while_waiting(cleans_up(), not_yet_cleaned)
    assert scope.cancelled_caught
    assert cleaned == ["done"]


async def test_a_coroutine_that_finishes_despite_the_cancel_returns_its_result(loop: Any) -> None:
    future = loop.create_future()

    async def swallows() -> str:
        try:
            await future
        except asyncio.CancelledError:
            return "finished anyway"
        return "not cancelled"

    _, results = await cancel_while_waiting(swallows())
    # The result arrives; the cancellation would land at the caller's next
    # checkpoint (none follows inside the scope).
    assert results == ["finished anyway"]


async def test_an_asyncio_cancelled_error_not_caused_by_the_caller_stays_asyncio(loop: Any) -> None:
    future = loop.create_future()
    loop.call_soon(future.cancel)
    with pytest.raises(asyncio.CancelledError):
        await run_inline(waits_on(future))


async def test_waiting_on_something_else_than_an_asyncio_future_is_refused(loop: Any) -> None:
    class NotAFuture:
        def __await__(self) -> Any:
            yield "a trio trap?"

    async def odd() -> None:
        await NotAFuture()

    with pytest.raises(RuntimeError, match="not an asyncio future"):
        await run_inline(odd())
