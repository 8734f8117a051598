"""Bad input gets a clear error naming what was wrong, and changes nothing."""

from __future__ import annotations

import uuid

import pytest
import trio
from pydantic import ValidationError

from orchestrator import (
    InvalidInput,
    DatabaseUnavailable,
    InvalidJobId,
    JobNotFound,
    Orchestrator,
    Principal,
    UnknownJobKind,
)
from tests.integration.helpers import ALICE, MALLORY_ADMIN, job_rows, make_orchestrator


async def test_an_unknown_kind_is_refused_and_nothing_is_written(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        with pytest.raises(UnknownJobKind, match="'resize'.*registered: double, gated"):
            await orch.submit("resize", {"w": 1}, owner=ALICE)
    assert await job_rows(database_url) == []


async def test_a_payload_failing_validation_names_the_field(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        with pytest.raises(ValidationError) as caught:
            await orch.submit("double", {"w": "wide"}, owner=ALICE)
        assert caught.value.errors()[0]["loc"] == ("w",)
        # One bad payload in a batch rejects the whole batch.
        with pytest.raises(ValidationError):
            await orch.submit_many("double", [{"w": 1}, {"h": 2}], owner=ALICE)
    assert await job_rows(database_url) == []


async def test_an_unknown_id_is_not_found_everywhere(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    missing = uuid.uuid4()
    async with orch.running(work=False):
        for call in (orch.get, orch.cancel, orch.wait):
            with pytest.raises(JobNotFound, match=str(missing)):
                await call(missing, by=ALICE)


async def test_a_malformed_id_is_named(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        for call in (orch.get, orch.cancel, orch.wait):
            with pytest.raises(InvalidJobId, match="'not-a-uuid'"):
                await call("not-a-uuid", by=ALICE)


async def test_another_organisations_job_is_not_found_and_unchanged(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        job = await orch.submit("double", {"w": 1}, owner=ALICE)
        before = await job_rows(database_url)
        for call in (orch.get, orch.cancel, orch.wait):
            with pytest.raises(JobNotFound):
                await call(job.id, by=MALLORY_ADMIN)
        assert await orch.list(by=MALLORY_ADMIN) == []
        assert [j.id for j in await orch.list(by=ALICE)] == [job.id]
    assert await job_rows(database_url) == before


async def test_bad_submit_options_are_named(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        with pytest.raises(ValueError, match="delay"):
            await orch.submit("double", {"w": 1}, owner=ALICE, delay=-1)
        with pytest.raises(ValueError, match="max_attempts"):
            await orch.submit("double", {"w": 1}, owner=ALICE, max_attempts=0)
        with pytest.raises(InvalidInput, match="owner: must be a Principal"):
            await orch.submit("double", {"w": 1}, owner="alice")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Principal(user_id="", org_id="acme")
    assert await job_rows(database_url) == []


async def test_an_unreachable_database_is_named() -> None:
    orch = Orchestrator("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        with trio.fail_after(30):
            async with orch.running():
                pass
