"""What the caller's own code raises inside ``async with orch.running():`` comes
out as itself; only the store's own statements have their errors translated."""

from __future__ import annotations

import asyncpg
import pytest
import trio

from orchestrator import DatabaseUnavailable, StoreError
from tests.integration.helpers import ALICE, job_rows, make_orchestrator
from tests.pg import fetch


class AppError(Exception):
    pass


@pytest.mark.parametrize("work", [False, True])
async def test_an_error_from_the_block_keeps_its_cause_and_context(database_url: str, work: bool) -> None:
    orch = make_orchestrator(database_url)
    raised: list[AppError] = []
    with pytest.raises(AppError) as caught:
        async with orch.running(work=work):
            try:
                {}["missing"]
            except KeyError as exc:
                error = AppError("the app's own failure")
                raised.append(error)
                raise error from exc
    assert caught.value is raised[0]
    assert isinstance(caught.value.__cause__, KeyError)
    assert caught.value.__context__ is caught.value.__cause__
    assert caught.value.__suppress_context__


async def test_an_error_without_a_cause_keeps_its_context(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    with pytest.raises(AppError) as caught:
        async with orch.running():
            try:
                raise LookupError("first")
            except LookupError:
                raise AppError("while handling it") from None
    assert caught.value.__cause__ is None
    assert isinstance(caught.value.__context__, LookupError)


async def test_the_users_own_asyncpg_error_is_not_translated(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    with pytest.raises(asyncpg.DivisionByZeroError):
        async with orch.running(work=False):
            await fetch(database_url, "SELECT 1 / 0")  # the app's own connection and statement


async def test_the_users_own_connection_error_is_not_translated(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    with pytest.raises(ConnectionRefusedError) as caught:
        async with orch.running():
            raise ConnectionRefusedError("the app's payment service is down")
    assert not isinstance(caught.value, DatabaseUnavailable)


async def test_a_group_the_block_raises_stays_that_group(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    group = ExceptionGroup("the app's own", [ValueError("one")])
    with pytest.raises(ExceptionGroup) as caught:
        async with orch.running():
            raise group
    assert caught.value is group


async def test_the_stores_own_errors_are_still_translated(database_url: str) -> None:
    await fetch(
        database_url,
        "ALTER TABLE orchestrator.job_status ADD CONSTRAINT no_wide_jobs CHECK (payload->>'w' <> '999')",
    )
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        with pytest.raises(StoreError) as caught:
            await orch.submit("double", {"w": 999}, owner=ALICE)
    assert caught.value.constraint == "no_wide_jobs"
    assert isinstance(caught.value.__cause__, asyncpg.CheckViolationError)
    assert await job_rows(database_url) == []


async def test_an_unreachable_database_still_fails_bare() -> None:
    orch = make_orchestrator("postgresql://postgres@127.0.0.1:1/nope")
    with trio.fail_after(30), pytest.raises(DatabaseUnavailable):
        async with orch.running():
            pass
