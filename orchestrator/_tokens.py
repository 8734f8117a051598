"""API bearer tokens: create, authenticate, list, revoke.

A token is ``orch_`` and 43 URL-safe characters (256 random bits). Only its
SHA-256 digest is stored: with that much entropy a fast hash cannot be
brute-forced, and a copy of the table grants nobody anything. A token is
shown once, when it is created.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from ._errors import InvalidInput, OrchestratorError, quote_prefix
from ._models import Principal

if TYPE_CHECKING:
    from ._store import Store

TOKEN_PREFIX = "orch_"
#: Longest accepted token name.
NAME_LIMIT = 200


class TokenNotFound(OrchestratorError, LookupError):
    """No token with this id exists."""


class TokenInfo(BaseModel):
    """A token as listed: who it acts as, and its life; never the secret."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    user_id: str
    org_id: str
    role: Literal["member", "admin"]
    name: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> TokenInfo:
        return cls(id=row["token_id"], **{k: row[k] for k in cls.model_fields if k != "id"})

    @property
    def principal(self) -> Principal:
        return Principal(user_id=self.user_id, org_id=self.org_id, role=self.role)


def hash_token(token: str) -> bytes:
    """The digest stored for ``token``."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_positive_seconds(text: str) -> float:
    """``text`` as a positive, finite number of seconds.

    Raises:
        ValueError: naming the value.
    """
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {quote_prefix(text)}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"must be a positive number of seconds, got {quote_prefix(text)}")
    return value


def check_token_options(name: str | None, expires_in: float | None) -> None:
    """Refuse a bad name or lifetime before anything is written.

    Raises:
        InvalidInput: naming ``name`` or ``expires_in``.
    """
    if name is not None and not 0 < len(name) <= NAME_LIMIT:
        raise InvalidInput("name", f"must be 1 to {NAME_LIMIT} characters, got {quote_prefix(name)}")
    if expires_in is not None and not (math.isfinite(expires_in) and expires_in > 0):
        raise InvalidInput("expires_in", f"must be a positive number of seconds, got {expires_in!r}")


async def create_token(
    store: Store, principal: Principal, *, name: str | None = None, expires_in: float | None = None
) -> tuple[str, TokenInfo]:
    """Store a new token acting as ``principal``; return the secret and its record.

    Args:
        expires_in: seconds until it stops working (default: never).

    Raises:
        InvalidInput: a bad ``name`` or ``expires_in``; nothing is written.
    """
    check_token_options(name, expires_in)
    secret = new_token_secret()
    row = await store.fetchrow(
        "create_token",
        uuid.uuid4(),
        hash_token(secret),
        principal.user_id,
        principal.org_id,
        principal.role,
        name,
        None if expires_in is None else float(expires_in),
    )
    assert row is not None
    return secret, TokenInfo.from_row(row)


async def authenticate(store: Store, token: str) -> Principal | None:
    """The principal ``token`` acts as, or ``None`` if it is unknown, expired or revoked."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = await store.fetchrow("authenticate_token", hash_token(token))
    if row is None:
        return None
    return Principal(user_id=row["user_id"], org_id=row["org_id"], role=row["role"])


async def list_tokens(store: Store, org_id: str) -> list[TokenInfo]:
    """The tokens of an organisation, newest first, revoked and expired ones too."""
    return [TokenInfo.from_row(r) for r in await store.fetch("list_tokens", org_id)]


async def revoke_token(store: Store, token_id: uuid.UUID | str) -> TokenInfo:
    """Revoke a token at once; revoking it again changes nothing.

    Raises:
        InvalidInput: ``token_id`` is not a UUID.
        TokenNotFound: no token has this id.
    """
    try:
        tid = token_id if isinstance(token_id, uuid.UUID) else uuid.UUID(str(token_id))
    except ValueError:
        raise InvalidInput("token_id", f"not a UUID: {quote_prefix(token_id)}") from None
    row = await store.fetchrow("revoke_token", tid)
    if row is None:
        raise TokenNotFound(f"no token {tid}")
    return TokenInfo.from_row(row)
