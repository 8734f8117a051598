"""API tokens on PostgreSQL: create, authenticate, list, revoke."""

from __future__ import annotations

import uuid

import pytest

from orchestrator import InvalidInput, Principal
from orchestrator._tokens import TokenNotFound, authenticate, create_token, hash_token, list_tokens, revoke_token
from tests.integration.helpers import ALICE, CAROL_ADMIN, MALLORY_ADMIN, make_orchestrator
from tests.pg import fetch


async def test_a_token_acts_as_its_principal_until_revoked(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        secret, info = await create_token(orch.store, CAROL_ADMIN, name="ci")
        other, _ = await create_token(orch.store, MALLORY_ADMIN)
        assert secret.startswith("orch_") and len(secret) > 40
        assert await authenticate(orch.store, secret) == CAROL_ADMIN
        assert await authenticate(orch.store, secret + "x") is None
        assert await authenticate(orch.store, "orch_" + "A" * 43) is None
        listed = await list_tokens(orch.store, "acme")
        revoked = await revoke_token(orch.store, info.id)
        again = await revoke_token(orch.store, str(info.id))
        assert await authenticate(orch.store, secret) is None
        assert await authenticate(orch.store, other) == MALLORY_ADMIN
        with pytest.raises(TokenNotFound):
            await revoke_token(orch.store, uuid.uuid4())
        with pytest.raises(InvalidInput) as bad_id:
            await revoke_token(orch.store, "nope")
    assert [t.id for t in listed] == [info.id]
    assert (listed[0].name, listed[0].role, listed[0].principal) == ("ci", "admin", CAROL_ADMIN)
    assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
    assert bad_id.value.field == "token_id"
    [row] = await fetch(database_url, "SELECT token_hash FROM orchestrator.api_tokens WHERE token_id = $1", info.id)
    assert row["token_hash"] == hash_token(secret)


@pytest.mark.parametrize(("options", "field"), [({"expires_in": 0}, "expires_in"), ({"expires_in": float("nan")}, "expires_in"), ({"name": ""}, "name"), ({"name": "n" * 201}, "name")])
async def test_bad_token_options_are_refused_and_nothing_is_written(
    database_url: str, options: dict[str, object], field: str
) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        with pytest.raises(InvalidInput) as refused:
            await create_token(orch.store, ALICE, **options)  # type: ignore[arg-type]
    assert refused.value.field == field
    assert await fetch(database_url, "SELECT * FROM orchestrator.api_tokens") == []


async def test_an_expiring_token_records_its_expiry(database_url: str) -> None:
    orch = make_orchestrator(database_url)
    async with orch.running(work=False):
        _secret, info = await create_token(orch.store, Principal(user_id="u", org_id="o"), expires_in=3600)
    assert info.expires_at is not None and (info.expires_at - info.created_at).total_seconds() == 3600
