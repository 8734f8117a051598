"""An application for the metrics scrape: ``--app tests.acceptance.metrics_app:orch``.

``ok`` completes, ``boom`` fails for good, ``flaky`` fails its first
attempt and completes its second (one retry).
"""

from __future__ import annotations

from pydantic import BaseModel

from orchestrator import JobContext, Orchestrator


class Note(BaseModel):
    text: str


async def ok(ctx: JobContext, payload: Note) -> dict[str, int]:
    return {"length": len(payload.text)}


async def boom(ctx: JobContext, payload: Note) -> None:
    raise RuntimeError(payload.text)


async def flaky(ctx: JobContext, payload: Note) -> dict[str, int]:
    if ctx.attempt == 1:
        raise RuntimeError(payload.text)
    return {"attempt": ctx.attempt}


def make(database_url: str | None = None) -> Orchestrator:
    """The app (the daemon's), or a producer of the same kinds (the test's)."""
    app = Orchestrator(database_url, poll_interval=0.2, concurrency=5)
    app.job("ok")(ok)
    app.job("boom")(boom)
    app.job("flaky", max_attempts=2, retry_backoff=0.01, retry_backoff_max=0.01)(flaky)
    return app


orch = make()
