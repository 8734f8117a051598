"""The application of the scale-out acceptance test.

Daemons run it with ``orchestrator --database-url URL run --app
tests.acceptance.scale_app:orch``; the test's producer builds its own copy
with :func:`build` (same kinds, its own URL) to submit, cancel and read.

Job kinds:

- ``instant``: returns at once.
- ``slow``: a few hundred milliseconds of its own work (``trio.sleep``),
  reporting progress half way.
- ``flaky``: raises on its first attempt, succeeds on the next.
- ``blocker``: runs until it is cancelled.
"""

from __future__ import annotations

import trio
from pydantic import BaseModel, Field

from orchestrator import JobContext, Orchestrator

#: Short leases: a killed daemon's jobs are rescued within seconds.
LEASE_SECONDS = 2.0
POLL_INTERVAL = 0.2

INSTANT_ATTEMPTS = 2
SLOW_ATTEMPTS = 3
FLAKY_ATTEMPTS = 3
BLOCKER_ATTEMPTS = 1
#: A blocker's timeout: far beyond the test's own deadlines, so a blocker
#: only ever ends by being cancelled.
BLOCKER_TIMEOUT = 900.0


class Item(BaseModel):
    n: int = Field(ge=0)


class SlowItem(BaseModel):
    n: int = Field(ge=0)
    ms: int = Field(ge=0, le=10_000)


class FlakyError(RuntimeError):
    """The planned failure of a flaky job's first attempt."""


def build(database_url: str | None = None, **options: object) -> Orchestrator:
    """An orchestrator with this module's job kinds."""
    settings: dict[str, object] = {"lease_seconds": LEASE_SECONDS, "poll_interval": POLL_INTERVAL}
    settings.update(options)
    orch = Orchestrator(database_url, **settings)  # type: ignore[arg-type]

    @orch.job("instant", max_attempts=INSTANT_ATTEMPTS)
    async def instant(ctx: JobContext, payload: Item) -> dict[str, int]:
        return {"n": payload.n}

    @orch.job("slow", max_attempts=SLOW_ATTEMPTS, retry_backoff=0.05)
    async def slow(ctx: JobContext, payload: SlowItem) -> dict[str, int]:
        await trio.sleep(payload.ms / 2000)
        await ctx.progress(0.5)
        await trio.sleep(payload.ms / 2000)
        return {"n": payload.n, "attempt": ctx.attempt}

    @orch.job("flaky", max_attempts=FLAKY_ATTEMPTS, retry_backoff=0.05, retry_backoff_max=0.2)
    async def flaky(ctx: JobContext, payload: Item) -> dict[str, int]:
        if ctx.attempt == 1:
            raise FlakyError(f"flaky job {payload.n} fails its first attempt")
        return {"n": payload.n, "attempt": ctx.attempt}

    @orch.job("blocker", max_attempts=BLOCKER_ATTEMPTS, timeout=BLOCKER_TIMEOUT)
    async def blocker(ctx: JobContext, payload: Item) -> None:
        await trio.sleep_forever()

    return orch


# No URL: the daemons get --database-url.
orch = build()
