"""The HTTP API of DESIGN.md ("Operations"), the dashboard, /healthz and /metrics.

An ASGI application (FastAPI, on anyio's trio backend) over one running
:class:`~orchestrator.Orchestrator`: requests and answers are the library's
pydantic models, so the OpenAPI document (``/openapi.json``) is generated
from them, and every rule (G6 authority, G7 tenancy, validation) is the
library's own. Served by Hypercorn's trio worker (``server.py``) inside the
trio run that runs the orchestrator.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations,
# and `Caller` is local to create_app.

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from importlib import resources
from typing import Annotated, Any, Literal

import trio
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from .._errors import DatabaseUnavailable
from .._explain import Explanation
from .._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .._models import CancelOutcome, JobRecord, Principal
from .._orchestrator import NotRunning, Orchestrator
from .._paging import PAGE_LIMIT, JobPage, list_jobs_page
from .._schedule_listing import ScheduleInfo
from .._validation import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY_SECONDS,
    MAX_NAME_CHARS,
    MAX_UNIQUE_KEY_CHARS,
    PRIORITY_MAX,
    PRIORITY_MIN,
)
from .auth import caller_dependency
from .errors import ErrorBody, install_error_handlers
from .events import EventHub
from .limits import DEFAULT_BODY_LIMIT, BodyLimit

#: Longest ``wait`` one request may ask for, in seconds.
WAIT_LIMIT = 3600.0
#: How long /healthz gives the database to answer.
HEALTH_TIMEOUT = 2.0


class SubmitRequest(BaseModel):
    """``POST /api/jobs``: a job to queue. Unset options take the kind's defaults."""

    model_config = ConfigDict(extra="forbid")

    # Types are checked strictly here (JSON ``true`` is not the priority 1);
    # the bounds are the shared submission boundary's, so that OpenAPI shows
    # them and every entry point refuses the same values.
    kind: str = Field(min_length=1, max_length=MAX_NAME_CHARS, strict=True)
    payload: Any = None
    delay: float = Field(
        default=0.0, ge=0, le=MAX_DELAY_SECONDS, allow_inf_nan=False, strict=True, description="seconds before it may run"
    )
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX, strict=True)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT, strict=True)
    queue: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS, strict=True)
    unique_key: str | None = Field(default=None, min_length=1, max_length=MAX_UNIQUE_KEY_CHARS, strict=True)


class Me(BaseModel):
    """``GET /api/me``: who the token acts as, and the job kinds this server knows."""

    user_id: str
    org_id: str
    role: Literal["member", "admin"]
    kinds: list[str]


class StateCount(BaseModel):
    queue: str
    state: str
    count: int


class Minute(BaseModel):
    start: datetime
    completed: int
    failed: int
    queued: int


class Stats(BaseModel):
    """``GET /api/stats``: counts by state and queue, and the last minutes."""

    counts: list[StateCount]
    minutes: list[Minute]


class Schedules(BaseModel):
    """``GET /api/schedules``: every periodic schedule of the cluster, by name."""

    schedules: list[ScheduleInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no, unknown, expired or revoked token"},
    422: {"model": ErrorBody, "description": "bad input; `field` names it"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "no such job in your organisation"}}

STATIC = resources.files("orchestrator._http") / "static"


def create_app(
    orch: Orchestrator, *, body_limit: int = DEFAULT_BODY_LIMIT, keep_alive: float = 15.0
) -> FastAPI:
    """The ASGI application serving ``orch``, which must be running when requests arrive.

    Args:
        body_limit: bytes a request body may have (413 beyond).
        keep_alive: quiet seconds after which the event stream sends a comment.
    """
    hub = EventHub()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, orch.store)
            with trio.move_on_after(10):
                await hub.listening.wait()
            yield
            nursery.cancel_scope.cancel()

    app = FastAPI(
        title="trio-orchestrator",
        version="0.1.0",
        description="Jobs on PostgreSQL, run by actors on trio. Every request but /healthz needs "
        "`Authorization: Bearer TOKEN`; the token's principal is the caller.",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.hub = hub
    app.add_middleware(BodyLimit, limit=body_limit)
    install_error_handlers(app)
    Caller = Annotated[Principal, Depends(caller_dependency(orch))]

    @app.post("/api/jobs", status_code=201, response_model=JobRecord, responses=ERRORS, tags=["jobs"])
    async def submit_job(request: SubmitRequest, caller: Caller, http: Request) -> JobRecord:
        """Queue a job; 201 and its record. An unknown kind or a bad payload: 422 naming the field.

        A W3C ``traceparent`` header makes the job's spans part of the caller's trace.
        """
        with orch.continue_trace(http.headers):
            return await orch.submit(
                request.kind,
                request.payload,
                owner=caller,
                delay=request.delay,
                priority=request.priority,
                max_attempts=request.max_attempts,
                queue=request.queue,
                unique_key=request.unique_key,
            )

    @app.get("/api/jobs", response_model=JobPage, responses=ERRORS, tags=["jobs"])
    async def list_jobs(
        caller: Caller,
        state: str | None = None,
        kind: str | None = None,
        queue: str | None = None,
        owner: Annotated[str | None, Query(description="user id of the submitter")] = None,
        limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    ) -> JobPage:
        """Your organisation's jobs, newest first, a page at a time."""
        return await list_jobs_page(
            orch.store, caller, state=state or None, kind=kind or None, queue=queue or None,
            owner=owner or None, limit=limit, cursor=cursor or None,
        )  # fmt: skip

    @app.get("/api/jobs/{job_id}", response_model=JobRecord, responses={**ERRORS, **NOT_FOUND}, tags=["jobs"])
    async def get_job(job_id: str, caller: Caller) -> JobRecord:
        """The job as stored now."""
        return await orch.get(job_id, by=caller)

    @app.get(
        "/api/jobs/{job_id}/explain", response_model=Explanation, responses={**ERRORS, **NOT_FOUND}, tags=["jobs"]
    )
    async def explain_job(job_id: str, caller: Caller) -> Explanation:
        """Why the job is where it is: a `reason` code and a sentence, from the database."""
        return await orch.explain(job_id, by=caller)

    @app.post(
        "/api/jobs/{job_id}/cancel",
        response_model=CancelOutcome,
        responses={**ERRORS, **NOT_FOUND, 403: {"model": ErrorBody, "description": "not your job, and not an admin"}},
        tags=["jobs"],
    )
    async def cancel_job(job_id: str, caller: Caller) -> CancelOutcome:
        """Cancel a queued or running job; answers once it is terminal (or says why not)."""
        return await orch.cancel(job_id, by=caller)

    @app.get("/api/jobs/{job_id}/wait", response_model=JobRecord, responses={**ERRORS, **NOT_FOUND}, tags=["jobs"])
    async def wait_job(
        job_id: str,
        caller: Caller,
        timeout: Annotated[float, Query(ge=0, le=WAIT_LIMIT, allow_inf_nan=False)] = 60.0,
    ) -> JobRecord:
        """The job once terminal, or after ``timeout`` seconds as it then stands."""
        try:
            return await orch.wait(job_id, by=caller, timeout=timeout)
        except TimeoutError:
            return await orch.get(job_id, by=caller)

    @app.get(
        "/api/events",
        response_class=StreamingResponse,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "the event stream"}},
        tags=["jobs"],
    )
    async def events(caller: Caller) -> StreamingResponse:
        """Server-sent events of your organisation's jobs.

        ``event: ready`` once subscribed; ``event: job`` with a job record each
        time a job is submitted or changes state or progress; ``event: resync``
        when events may have been lost (re-read what you show); a comment line
        every quiet ``keep_alive`` seconds.
        """
        return StreamingResponse(
            hub.stream(caller, keep_alive=keep_alive),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get("/api/schedules", response_model=Schedules, responses=ERRORS, tags=["operations"])
    async def schedules(caller: Caller) -> Schedules:
        """The periodic schedules the daemons registered, each with its last period and the next one due.

        Schedules are the cluster's, not an organisation's: any valid token may
        list them all (401 without one). A schedule holds no payload, owner or
        job id, only what its code says (name, kind, cron, time zone, missed
        policy) and the periods reached, as /metrics shows kinds to anyone.
        """
        return Schedules(schedules=await orch.list_schedules())

    @app.get("/api/me", response_model=Me, responses=ERRORS, tags=["dashboard"])
    async def me(caller: Caller) -> Me:
        """Who the token acts as, and the kinds of job this server accepts."""
        return Me(user_id=caller.user_id, org_id=caller.org_id, role=caller.role, kinds=orch.registry.kinds)

    @app.get("/api/stats", response_model=Stats, responses=ERRORS, tags=["dashboard"])
    async def stats(caller: Caller, minutes: Annotated[int, Query(ge=1, le=120)] = 15) -> Stats:
        """Jobs by queue and state, and per minute: finished, and waiting at the minute's end."""
        counts = await orch.store.fetch("job_counts", caller.org_id)
        series = await orch.store.fetch("job_series", caller.org_id, minutes)
        return Stats(
            counts=[StateCount(queue=r["queue"], state=r["status"], count=r["n"]) for r in counts],
            minutes=[Minute(start=r["start"], completed=r["completed"], failed=r["failed"], queued=r["queued"])
                     for r in series],
        )  # fmt: skip

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["operations"])
    async def healthz() -> Response:
        """200 while the database answers, else 503. Needs no token."""
        try:
            with trio.fail_after(HEALTH_TIMEOUT):
                await orch.store.fetchval("ping")
        except (DatabaseUnavailable, NotRunning, trio.TooSlowError) as exc:
            detail = "no answer in time" if isinstance(exc, trio.TooSlowError) else str(exc)
            return JSONResponse(Health(status="unavailable", detail=detail).model_dump(), status_code=503)
        return JSONResponse(Health(status="ok").model_dump())

    @app.get("/metrics", response_class=Response, tags=["operations"])
    async def metrics() -> Response:
        """Prometheus metrics of this process's orchestrator. Needs no token:
        no label holds a job id, a user, an organisation or a payload."""
        return Response(orch.metrics.scrape(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        with resources.as_file(STATIC / "index.html") as path:
            return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})

    with resources.as_file(STATIC) as static_dir:
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    return app
