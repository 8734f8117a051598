"""The store contract on PostgreSQL: the scenarios the in-memory adapter
passes in tests/unit/test_store_contract.py, on a fresh database per test."""

from __future__ import annotations

import pytest

from orchestrator._store import open_store
from tests.store_contract import SCENARIOS, Scenario


@pytest.mark.parametrize("scenario", list(SCENARIOS.values()), ids=list(SCENARIOS))
async def test_postgresql_store_keeps_the_contract(scenario: Scenario, database_url: str) -> None:
    async with open_store(database_url) as store:
        await scenario(store)
