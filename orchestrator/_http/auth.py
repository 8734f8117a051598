"""Who is calling: the principal of the request's bearer token."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .._models import Principal
from .._orchestrator import Orchestrator
from .._tokens import authenticate
from .errors import Unauthenticated

bearer = HTTPBearer(
    auto_error=False,
    description="A token from `orchestrator token create`; it acts as that token's user, organisation and role.",
)


def caller_dependency(orch: Orchestrator) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's principal, or 401."""

    async def caller(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        if credentials is None:
            raise Unauthenticated("an Authorization: Bearer token is required")
        principal = await authenticate(orch.store, credentials.credentials)
        if principal is None:
            raise Unauthenticated("the bearer token is unknown, expired or revoked")
        return principal

    return caller
