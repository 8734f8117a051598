"""An application module for the CLI tests: ``--app tests.acceptance.cli_app:orch``."""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import JobContext, Orchestrator

# No URL: the CLI's --database-url or ORCHESTRATOR_DATABASE_URL decides.
orch = Orchestrator(poll_interval=0.2)


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


#: Not an orchestrator, for the error message test.
not_an_orchestrator = 42

#: An orchestrator without jobs: nothing for a worker to run.
empty = Orchestrator()
