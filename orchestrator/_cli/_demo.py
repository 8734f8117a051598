"""``orchestrator demo``: example jobs running live, then their timestamps.

One process runs a worker (``async with orch.running():``) and plays five
scenarios against it:

1. instant jobs, which finish in microseconds with their timestamps still
   ordered (``created_at <= started_at <= completed_at``);
2. a slow job reporting progress;
3. a job failing its first attempt, then succeeding on the retry;
4. a job its owner cancels while it runs;
5. a job someone else in the organisation tries to cancel (refused), which
   then completes.

A table of the jobs refreshes a few times per second: redrawn in place on a
terminal, one line per observed state change otherwise (CI, pipes). The
display only reads the jobs (``orch.get``); nothing in the lifecycle waits on
it. The sleeps below are the example jobs' own work, not part of the
orchestrator.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, TextIO

import trio
from pydantic import BaseModel, Field

from .._database_url import redact_url
from .._errors import NotAuthorized
from .._jobs import JobContext
from .._lifecycle import JobState
from .._models import CancelOutcome, JobRecord, Principal
from .._orchestrator import Orchestrator
from ._render import RESET, bar_cells, clip, glyphs_for, is_terminal, percent

ALICE = Principal(user_id="alice", org_id="acme")
BOB = Principal(user_id="bob", org_id="acme")

#: Seconds between two refreshes of the display.
REFRESH = 0.1
#: The whole demo gives up after this long (something went wrong).
DEADLINE = 60.0


class Instant(BaseModel):
    n: int


class Steps(BaseModel):
    steps: int = Field(10, ge=1, le=1000)
    step_seconds: float = Field(0.3, ge=0.0, le=5.0)


class Nothing(BaseModel):
    pass


class DemoHooks:
    """Events the demo handlers set, so the script acts once a job runs."""

    def __init__(self) -> None:
        self.victim_started = trio.Event()
        self.victim_progressed = trio.Event()
        self.guarded_started = trio.Event()
        self.release_guarded = trio.Event()


def build_demo(database_url: str | None = None, *, schema: str = "orchestrator") -> tuple[Orchestrator, DemoHooks]:
    """The demo's orchestrator and its job kinds (call inside ``trio.run``)."""
    orch = Orchestrator(
        database_url,
        schema=schema,
        concurrency=4,
        poll_interval=0.1,
        shutdown_grace=0.0,
        node_id=f"demo:{os.getpid()}",
    )
    hooks = DemoHooks()

    @orch.job("instant")
    async def instant(ctx: JobContext, payload: Instant) -> dict[str, int]:
        return {"n": payload.n, "squared": payload.n * payload.n}

    @orch.job("slow")
    async def slow(ctx: JobContext, payload: Steps) -> dict[str, int]:
        for step in range(1, payload.steps + 1):
            await trio.sleep(payload.step_seconds)  # the job's own work
            await ctx.progress(step / payload.steps)
        return {"steps": payload.steps}

    @orch.job("flaky", max_attempts=3, retry_backoff=0.2, retry_backoff_max=0.2)
    async def flaky(ctx: JobContext, payload: Nothing) -> dict[str, int]:
        if ctx.attempt == 1:
            raise ConnectionError("simulated transient failure on attempt 1")
        return {"succeeded_on_attempt": ctx.attempt}

    @orch.job("cancel-me")
    async def cancel_me(ctx: JobContext, payload: Steps) -> dict[str, int]:
        hooks.victim_started.set()
        for step in range(1, payload.steps + 1):
            await trio.sleep(payload.step_seconds)  # the job's own work
            await ctx.progress(step / payload.steps)
            if step / payload.steps >= 0.1:
                hooks.victim_progressed.set()
        return {"steps": payload.steps}

    @orch.job("guarded")
    async def guarded(ctx: JobContext, payload: Nothing) -> dict[str, bool]:
        hooks.guarded_started.set()
        with trio.move_on_after(15):  # never hang the demo
            await hooks.release_guarded.wait()
        return {"released": hooks.release_guarded.is_set()}

    return orch, hooks


# -- display ------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    scenario: str
    record: JobRecord
    note: str = ""
    seen: tuple[JobState, int] | None = None


_COLORS = MappingProxyType(
    {
        JobState.QUEUED: "\x1b[2m",
        JobState.ACTIVE: "\x1b[36m",
        JobState.COMPLETED: "\x1b[32m",
        JobState.FAILED: "\x1b[31m",
        JobState.CANCELLED: "\x1b[33m",
    }
)


@dataclass
class Display:
    """The jobs' table, refreshed from the database while they run."""

    orch: Orchestrator
    out: TextIO
    live: bool
    rows: list[Row] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)
    _drawn: int = 0
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.glyphs = glyphs_for(self.out)
        self.color = self.live and not os.environ.get("NO_COLOR")

    def add(self, label: str, scenario: str, record: JobRecord) -> Row:
        row = Row(label, scenario, record)
        self.rows.append(row)
        self._report_changes([row])
        return row

    def note(self, row: Row, text: str) -> None:
        row.note = text
        if not self.live:
            self._line(f"{row.label:<11} {self.glyphs.arrow} {text}")

    def _elapsed(self) -> str:
        return f"+{time.monotonic() - self.start:.2f}s".rjust(7)

    def _line(self, text: str) -> None:
        print(f"  {self._elapsed()}  {text}", file=self.out, flush=True)

    async def refresh(self) -> None:
        for row in self.rows:
            if not row.record.is_terminal:
                row.record = await self.orch.get(row.record.id, by=ALICE)

    def _report_changes(self, rows: Sequence[Row]) -> None:
        if self.live:
            return
        for row in rows:
            r = row.record
            key = (r.state, r.attempt)
            if key == row.seen:
                continue
            row.seen = key
            extra = ""
            if r.state is JobState.QUEUED and r.attempt > 1 and r.error:
                extra = f"  (retry; attempt {r.attempt - 1} failed: {_error_text(r.error)})"
            self._line(f"{row.label:<11} {_short(r.id)}  {r.state.value:<9}  attempt {r.attempt}/{r.max_attempts}{extra}")

    def _bar(self, progress: float, width: int = 16) -> str:
        return f"{bar_cells(progress, width, self.glyphs)} {percent(progress)}"

    def _state(self, state: JobState) -> str:
        text = f"{state.value:<9}"
        return f"{_COLORS[state]}{text}{RESET}" if self.color else text

    def _table(self) -> list[str]:
        lines = [f"  {'JOB':<11} {'ID':<8}  {'STATE':<9}  {'TRY':<3}  {'PROGRESS':<21}  NOTE"]
        for row in self.rows:
            r = row.record
            note = row.note or row.scenario
            if r.state is JobState.QUEUED and r.attempt > 1 and r.error:
                note = f"retrying: {_error_text(r.error)}"
            lines.append(
                f"  {row.label:<11} {_short(r.id)}  {self._state(r.state)}  "
                f"{r.attempt}/{r.max_attempts}  {self._bar(r.progress)}  {note}"
            )
        lines.append(f"  {self._elapsed()}")
        return lines

    def draw(self) -> None:
        if not self.live:
            self._report_changes(self.rows)
            return
        width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
        parts = []
        if self._drawn:
            parts.append(f"\x1b[{self._drawn}F")  # back to the table's first line
        for line in self._table():
            parts.append("\x1b[2K" + clip(line, width, self.glyphs.ellipsis) + "\n")
        self._drawn = len(parts) - (1 if self._drawn else 0)
        self.out.write("".join(parts))
        self.out.flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.live:
            self.out.write("\x1b[?25l")  # hide the cursor while redrawing
        try:
            task_status.started()
            while not self._stopped:
                await self.refresh()
                self.draw()
                await trio.sleep(REFRESH)
        finally:
            if self.live:
                self.out.write("\x1b[?25h")
                self.out.flush()

    async def finish(self) -> None:
        self._stopped = True
        await self.refresh()
        self.draw()


def _short(job_id: uuid.UUID) -> str:
    return str(job_id)[:8]


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return str(error)


# -- summary ------------------------------------------------------------------------


def _clock(moment: datetime | None) -> str:
    return moment.strftime("%H:%M:%S.%f") if moment is not None else "-"


def _duration(delta: timedelta | None, micro: str = "µs") -> str:
    if delta is None:
        return "-"
    seconds = delta.total_seconds()
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} {micro}"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def ordered(record: JobRecord) -> bool:
    """``created_at <= started_at <= completed_at`` (for the stamps present)."""
    stamps = [t for t in (record.created_at, record.started_at, record.completed_at) if t is not None]
    return all(a <= b for a, b in zip(stamps, stamps[1:]))


def summary(rows: Sequence[Row], display: Display) -> list[str]:
    lines = [
        "",
        f"Summary (timestamps UTC; {display.glyphs.ok} = created_at <= started_at <= completed_at)",
        f"  {'JOB':<11} {'ID':<8}  {'STATE':<9}  {'TRY':<3}  {'CREATED_AT':<15}  {'STARTED_AT':<15}  "
        f"{'COMPLETED_AT':<15}  {'RAN':>9}  ORDER",
    ]
    for row in rows:
        r = row.record
        ran = r.completed_at - r.started_at if r.completed_at and r.started_at else None
        lines.append(
            f"  {row.label:<11} {_short(r.id)}  {r.state.value:<9}  {r.attempt}/{r.max_attempts}  "
            f"{_clock(r.created_at)}  {_clock(r.started_at)}  {_clock(r.completed_at)}  {_duration(ran, display.glyphs.micro):>9}  "
            f"{display.glyphs.ok if ordered(r) else display.glyphs.bad}"
        )
    return lines


@dataclass
class Check:
    description: str
    passed: bool


def checks(
    instants: Sequence[Row],
    slow: Row,
    flaky: Row,
    victim: Row,
    victim_outcome: CancelOutcome | None,
    guarded: Row,
    refused: NotAuthorized | None,
) -> list[Check]:
    every = [*instants, slow, flaky, victim, guarded]
    return [
        Check(
            "instant jobs completed; their timestamps are ordered however fast they ran",
            all(r.record.state is JobState.COMPLETED and ordered(r.record) for r in instants),
        ),
        Check(
            "slow job completed and reported its progress up to 100%",
            slow.record.state is JobState.COMPLETED and slow.record.progress == 1.0,
        ),
        Check(
            "flaky job failed attempt 1, then completed on attempt 2",
            flaky.record.state is JobState.COMPLETED and flaky.record.attempt == 2,
        ),
        Check(
            "cancel-me was cancelled by its owner while it ran",
            victim.record.state is JobState.CANCELLED
            and victim.record.started_at is not None
            and victim_outcome is not None
            and victim_outcome.cancelled,
        ),
        Check(
            "bob (a member, not the owner) was refused (NotAuthorized); the job then completed",
            refused is not None and guarded.record.state is JobState.COMPLETED,
        ),
        Check("every job's timestamps are ordered", all(ordered(r.record) for r in every)),
    ]


# -- the demo ---------------------------------------------------------------------


async def run_demo(
    database_url: str | None = None,
    *,
    schema: str = "orchestrator",
    live: bool | None = None,
    out: TextIO | None = None,
) -> int:
    """Play the scenarios; return 0 when every job ended as expected, else 1."""
    out = out or sys.stdout
    if live is None:
        live = is_terminal(out)
    orch, hooks = build_demo(database_url, schema=schema)
    url = await orch.resolve_database_url()
    print(f"trio-orchestrator demo: database {redact_url(url)}, schema {schema!r}", file=out)
    print(f"alice and bob are members of 'acme'; a worker in this process runs {orch.concurrency} jobs at once.", file=out)
    print("", file=out, flush=True)

    display = Display(orch, out, live)
    victim_outcome: CancelOutcome | None = None
    refused: NotAuthorized | None = None
    started = time.monotonic()
    async with orch.running():
        async with trio.open_nursery() as nursery:
            instants = [
                display.add(f"instant #{i}", "returns at once", record)
                for i, record in enumerate(
                    await orch.submit_many("instant", [{"n": n} for n in (1, 2, 3)], owner=ALICE), start=1
                )
            ]
            slow = display.add(
                "slow", "10 steps, reports progress", await orch.submit("slow", {"steps": 10, "step_seconds": 0.3}, owner=ALICE)
            )
            flaky = display.add("flaky", "fails attempt 1, then retried", await orch.submit("flaky", {}, owner=ALICE))
            victim = display.add(
                "cancel-me",
                "alice cancels it while it runs",
                await orch.submit("cancel-me", {"steps": 100, "step_seconds": 0.1}, owner=ALICE),
            )
            guarded = display.add("guarded", "bob tries to cancel alice's job", await orch.submit("guarded", {}, owner=ALICE))
            await nursery.start(display.run)

            try:
                with trio.fail_after(DEADLINE):
                    # 4. The owner cancels a running job.
                    # It is active once its handler runs; let it show some
                    # progress first, so the cancel visibly stops a running job.
                    await hooks.victim_started.wait()
                    await hooks.victim_progressed.wait()
                    display.note(victim, "running; alice (its owner) cancels it")
                    victim_outcome = await orch.cancel(victim.record.id, by=ALICE)
                    display.note(
                        victim,
                        "cancelled by its owner alice while running"
                        if victim_outcome.cancelled
                        else f"cancel did not apply: {victim_outcome.reason}",
                    )
                    # 5. Someone else may not.
                    await hooks.guarded_started.wait()
                    try:
                        await orch.cancel(guarded.record.id, by=BOB)
                        display.note(guarded, "bob's cancel was NOT refused (unexpected)")
                    except NotAuthorized as exc:
                        refused = exc
                        display.note(guarded, "bob's cancel refused: NotAuthorized; then it completes")
                    hooks.release_guarded.set()
                    every = [*instants, slow, flaky, victim, guarded]
                    await orch.wait_many([row.record.id for row in every], by=ALICE)
            except trio.TooSlowError:
                display.note(guarded, f"gave up after {DEADLINE:.0f} s")
            finally:
                with trio.CancelScope(shield=True):
                    await display.finish()
                nursery.cancel_scope.cancel()

    every = [*instants, slow, flaky, victim, guarded]
    for line in summary(every, display):
        print(line, file=out)
    results = checks(instants, slow, flaky, victim, victim_outcome, guarded, refused)
    print("", file=out)
    print("Checks", file=out)
    for check in results:
        print(f"  {display.glyphs.ok if check.passed else display.glyphs.bad} {check.description}", file=out)
    elapsed = time.monotonic() - started
    failed = [c for c in results if not c.passed]
    print("", file=out)
    if failed:
        print(f"demo finished in {elapsed:.1f} s: {len(failed)} check(s) FAILED", file=out, flush=True)
        return 1
    print(f"demo finished in {elapsed:.1f} s: every job ended as expected", file=out, flush=True)
    return 0
