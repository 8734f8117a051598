"""Helpers shared by the integration tests."""

from __future__ import annotations

from typing import Any

import trio
from pydantic import BaseModel

from orchestrator import JobContext, Orchestrator, Principal
from tests.pg import fetch

ALICE = Principal(user_id="alice", org_id="acme")
BOB = Principal(user_id="bob", org_id="acme")
CAROL_ADMIN = Principal(user_id="carol", org_id="acme", role="admin")
MALLORY_ADMIN = Principal(user_id="mallory", org_id="evil-corp", role="admin")


class Size(BaseModel):
    w: int


class Gate:
    """A handler that reports it started, then waits to be let through."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()
        self.cancelled = False

    async def __call__(self, ctx: JobContext, payload: Size) -> dict[str, int]:
        self.started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        return {"w": payload.w}


def make_orchestrator(url: str, **kwargs: Any) -> Orchestrator:
    """An orchestrator with an instant job kind ``double`` and a gated ``gated``."""
    kwargs.setdefault("poll_interval", 0.2)
    orch = Orchestrator(url, **kwargs)

    @orch.job("double")
    async def double(ctx: JobContext, payload: Size) -> dict[str, int]:
        return {"w": payload.w * 2}

    orch.gate = Gate()  # type: ignore[attr-defined]
    orch.job("gated")(orch.gate)  # type: ignore[attr-defined]
    return orch


async def job_rows(url: str, where: str = "TRUE", *args: Any) -> list[Any]:
    return await fetch(
        url,
        "SELECT job_id, kind, status::text AS status, attempt, created_at, started_at, completed_at,"
        " cancel_requested_at, progress, result, error, owner_user_id"
        f" FROM orchestrator.job_status WHERE {where} ORDER BY created_at",
        *args,
    )


async def one_row(url: str, job_id: Any) -> Any:
    [row] = await job_rows(url, "job_id = $1", job_id)
    return row
