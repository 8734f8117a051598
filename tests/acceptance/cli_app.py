"""An application module for the CLI tests: ``--app tests.acceptance.cli_app:orch``."""

from __future__ import annotations

import trio
from pydantic import BaseModel

from orchestrator import JobContext, Orchestrator

# No URL: the CLI's --database-url or ORCHESTRATOR_DATABASE_URL decides.
# The other settings are the app's own, which ORCHESTRATOR_* variables and
# then the command line's flags override.
orch = Orchestrator(poll_interval=0.2, concurrency=5, shutdown_grace=0.0)


class Resize(BaseModel):
    width: int
    height: int


class Boom(BaseModel):
    reason: str


@orch.job("resize", max_attempts=2)
async def resize(ctx: JobContext, payload: Resize) -> dict[str, int]:
    await ctx.progress(0.5)
    return {"pixels": payload.width * payload.height}


@orch.job("explode")
async def explode(ctx: JobContext, payload: Boom) -> None:
    raise RuntimeError(payload.reason)


class Nap(BaseModel):
    seconds: float


@orch.job("nap")
async def nap(ctx: JobContext, payload: Nap) -> dict[str, float]:
    """Sleep ``seconds`` in four steps, reporting progress after each."""
    for step in range(1, 5):
        await trio.sleep(payload.seconds / 4)
        if step < 4:
            await ctx.progress(step / 4)
    return {"slept": payload.seconds}


#: Not an orchestrator, for the error message test.
not_an_orchestrator = 42

#: An orchestrator without jobs: nothing for a worker to run.
empty = Orchestrator()
