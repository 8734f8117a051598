"""Periodic jobs: schedules, and the scheduler task that enqueues their periods.

Every daemon that registers a schedule runs the same loop; none of them is
in charge. At each period boundary each one reads the database's clock,
works out the latest period due, and runs one statement
(``periodic_enqueue``) that advances the schedule's ``last_period`` only if
no daemon reached that period yet and inserts the job only if it did. So
each period is enqueued once: not doubled by two daemons, nor by a restart
(``last_period`` is durable), nor skipped by a daemon whose clock runs
behind (the database's clock decides what is due). A daemon that was down
over boundaries enqueues only the latest one it missed, late, once (or
none, with ``missed="skip"``).
"""

from __future__ import annotations

import json
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import trio

from pydantic import TypeAdapter, ValidationError

from ._cron import MissedPolicy, check_cron, check_missed, check_timezone, latest_period, next_period, period_key
from ._errors import DatabaseUnavailable, InvalidInput, StoreError, quote_prefix
from ._models import Principal
from ._store import Store
from ._validation import (
    PayloadLimits,
    check_max_attempts,
    check_name,
    check_priority,
    check_seconds,
    encode_payload,
)

logger = logging.getLogger("orchestrator.periodic")

#: Who owns periodic jobs unless a schedule says otherwise.
PERIODIC_OWNER = Principal(user_id="periodic", org_id="periodic")
#: Default seconds after its instant a period still counts as on time
#: (``missed="skip"`` skips a period reached later than that).
DEFAULT_GRACE_SECONDS = 60.0
#: Longest grace: a day.
MAX_GRACE_SECONDS = 86_400.0

DatabaseClock = Callable[[Store], Awaitable[datetime]]


async def database_now(store: Store) -> datetime:
    """The database's ``clock_timestamp()``."""
    now: datetime = await store.fetchval("periodic_now")
    return now


@dataclass(frozen=True, slots=True)
class Schedule:
    """One registered schedule, every value checked.

    Attributes:
        payload: the payload as stored (JSON data), validated against the
            kind's handler at registration.
        grace: seconds after its instant a period still counts as on time.
    """

    name: str
    kind: str
    cron: str
    timezone: str
    zone: ZoneInfo
    missed: MissedPolicy
    grace: float
    payload: Any
    owner: Principal
    queue: str
    priority: int
    max_attempts: int

    def latest(self, now: datetime) -> datetime:
        return latest_period(self.cron, self.zone, now)

    def after(self, period: datetime) -> datetime:
        return next_period(self.cron, self.zone, period)


@dataclass(frozen=True, slots=True)
class ScheduleOptions:
    """The options of ``orch.periodic(...)`` that do not depend on the kind,
    checked when it is called."""

    name: str | None
    cron: str
    timezone: str
    zone: ZoneInfo
    missed: MissedPolicy
    grace: float
    owner: Principal
    queue: str | None
    priority: int | None
    max_attempts: int | None

    def bind(
        self,
        schedules: PeriodicSchedules,
        *,
        kind: str,
        payload_type: TypeAdapter[Any],
        payload: Any,
        limits: PayloadLimits,
        queue: str,
        priority: int,
        max_attempts: int,
    ) -> Schedule:
        """The schedule of these options for ``kind``; ``queue``,
        ``priority`` and ``max_attempts`` are the kind's, used where these
        options leave them unset.

        Raises:
            InvalidInput: the name is taken, or the payload does not fit the
                kind's handler (naming the field, ``payload.w`` say).
        """
        name = check_name("name", self.name if self.name is not None else kind)
        schedules.check_new(name)
        return Schedule(
            name=name,
            kind=kind,
            cron=self.cron,
            timezone=self.timezone,
            zone=self.zone,
            missed=self.missed,
            grace=self.grace,
            payload=check_payload(payload_type, payload, limits),
            owner=self.owner,
            queue=queue if self.queue is None else self.queue,
            priority=priority if self.priority is None else self.priority,
            max_attempts=max_attempts if self.max_attempts is None else self.max_attempts,
        )


def check_schedule_options(
    *,
    cron: Any,
    name: Any,
    timezone: Any,
    missed: Any,
    grace: Any,
    owner: Any,
    queue: Any,
    priority: Any,
    max_attempts: Any,
) -> ScheduleOptions:
    """Check what ``orch.periodic(...)`` was given, before anything is registered.

    Raises:
        InvalidInput: naming the first bad option (``cron``, ``timezone``,
            ``missed``...).
    """
    expression = check_cron(cron)
    zone = check_timezone(timezone)
    if owner is not None and not isinstance(owner, Principal):
        raise InvalidInput("owner", f"must be a Principal, got {type(owner).__name__}")
    return ScheduleOptions(
        name=None if name is None else check_name("name", name),
        cron=expression,
        timezone=zone.key,
        zone=zone,
        missed=check_missed(missed),
        grace=check_seconds("grace", grace, high=MAX_GRACE_SECONDS),
        owner=PERIODIC_OWNER if owner is None else owner,
        queue=None if queue is None else check_name("queue", queue),
        priority=None if priority is None else check_priority(priority),
        max_attempts=None if max_attempts is None else check_max_attempts(max_attempts),
    )


def check_payload(payload_type: TypeAdapter[Any], payload: Any, limits: PayloadLimits) -> Any:
    """The schedule's payload as stored, checked against the kind's handler.

    Raises:
        InvalidInput: naming the field of the payload that is wrong.
    """
    try:
        return json.loads(encode_payload(payload_type, payload, limits))
    except ValidationError as exc:
        field_name, message = "payload", "does not fit the handler's type"
        for first in exc.errors()[:1]:
            for part in first["loc"]:
                field_name += f"[{part}]" if isinstance(part, int) else f".{part}"
            message = first["msg"]
        raise InvalidInput(field_name, message) from exc


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A job one scheduling step inserted."""

    schedule: str
    period: datetime
    job_id: uuid.UUID


@dataclass(slots=True)
class StepResult:
    """What one scheduling step did.

    Attributes:
        enqueued: the jobs this daemon inserted.
        skipped: ``(schedule, period)`` this daemon recorded as missed and
            did not enqueue (``missed="skip"``).
        wait: seconds (by the database's clock) until the next period of
            any schedule; ``inf`` with no schedules.
    """

    enqueued: list[Enqueued] = field(default_factory=list)
    skipped: list[tuple[str, datetime]] = field(default_factory=list)
    wait: float = math.inf


class PeriodicSchedules:
    """The schedules of one orchestrator, and the loop that enqueues them.

    Args:
        max_sleep: the longest the loop sleeps between looks at the
            database's clock, so that a long sleep (a daily schedule) still
            notices a clock that jumped or a host that was suspended.
        clock: how the loop reads "now"; the database's clock by default.
            Tests inject one to drive time deterministically.
        loop: step on a timer; without it only explicit :meth:`step` calls
            enqueue (tests drive every step themselves).
    """

    def __init__(self, *, max_sleep: float = 60.0, clock: DatabaseClock = database_now, loop: bool = True) -> None:
        self.max_sleep = max_sleep
        self.clock = clock
        self.loop = loop
        self._schedules: dict[str, Schedule] = {}
        # Per schedule, the latest period this daemon knows some daemon has
        # reached; no statement runs for it until a later one is due.
        self._reached: dict[str, datetime] = {}
        self._registered: set[str] = set()
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self._store: Store | None = None
        #: Steps run (tests check the loop sleeps rather than polls).
        self.steps = 0

    def __len__(self) -> int:
        return len(self._schedules)

    def __contains__(self, name: object) -> bool:
        return name in self._schedules

    def get(self, name: str) -> Schedule:
        return self._schedules[name]

    def check_new(self, name: str) -> None:
        """Refuse a schedule name already taken.

        Raises:
            InvalidInput: naming ``name``.
        """
        if name in self._schedules:
            raise InvalidInput("name", f"a schedule named {quote_prefix(name)} already exists; give this one another name")

    def add(self, schedule: Schedule) -> None:
        """Register ``schedule``; a running loop picks it up at once."""
        self.check_new(schedule.name)
        self._schedules[schedule.name] = schedule
        self._wake.set()

    # -- the scheduling step -------------------------------------------------

    async def step(self) -> StepResult:
        """Enqueue every schedule's due period that no daemon enqueued yet.

        Raises:
            NotRunning-like RuntimeError: the loop was never started.
            DatabaseUnavailable, StoreError: as the store raises them.
        """
        if self._store is None:
            raise RuntimeError("the periodic scheduler runs inside `async with orch.running():`")
        store = self._store
        async with self._lock:
            self.steps += 1
            result = StepResult()
            schedules = list(self._schedules.values())
            if not schedules:
                return result
            now = await self.clock(store)
            for schedule in schedules:
                due = schedule.latest(now)
                if schedule.name not in self._registered:
                    await store.fetch(
                        "periodic_register",
                        schedule.name, schedule.kind, schedule.cron, schedule.timezone, schedule.missed, due,
                    )  # fmt: skip
                    self._registered.add(schedule.name)
                if self._reached.get(schedule.name) != due:
                    await self._enqueue(store, schedule, due, now, result)
            upcoming = min(s.after(self._reached[s.name]) for s in schedules)
            result.wait = max(0.0, (upcoming - now).total_seconds())
            return result

    async def _enqueue(self, store: Store, schedule: Schedule, period: datetime, now: datetime, result: StepResult) -> None:
        job_id = uuid.uuid4()
        row = await store.fetchrow(
            "periodic_enqueue",
            schedule.name, period, now, job_id, schedule.kind, schedule.queue, json.dumps(schedule.payload),
            schedule.owner.user_id, schedule.owner.org_id, schedule.priority, schedule.max_attempts,
            period_key(schedule.name, period), schedule.grace, schedule.missed == "enqueue_once",
        )  # fmt: skip
        # Whether this daemon advanced it or another had: the period is reached.
        self._reached[schedule.name] = period
        if row is None or not row["advanced"]:
            return
        if row["job_id"] is not None:
            late = (now - period).total_seconds()
            logger.info("periodic %s: enqueued job %s for %s (%.3fs after it)", schedule.name, row["job_id"], period, late)
            result.enqueued.append(Enqueued(schedule.name, period, row["job_id"]))
        elif row["on_time"]:
            # The second guard: a live job already holds this period's key.
            logger.warning("periodic %s: the job for %s was already queued; not enqueued again", schedule.name, period)
        else:
            logger.info("periodic %s: skipped the missed period %s", schedule.name, period)
            result.skipped.append((schedule.name, period))

    # -- the loop ------------------------------------------------------------

    async def run(
        self,
        store: Store,
        *,
        backoff: tuple[float, float] = (0.05, 5.0),
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Step, then sleep until the next period (or a new schedule), forever.

        A database error is logged and the step retried with backoff: it
        never ends the loop (the guarded statement makes a retry harmless).
        """
        self._store = store
        # A restart re-checks every schedule: the period it was down over.
        self._reached.clear()
        self._registered.clear()
        task_status.started()
        delay, ceiling = backoff
        try:
            if not self.loop:
                await trio.sleep_forever()
            while True:
                self._wake = trio.Event()
                try:
                    wait = (await self.step()).wait
                    delay = backoff[0]
                except (DatabaseUnavailable, StoreError) as exc:
                    wait = delay * random.uniform(0.5, 1.0)
                    logger.warning("periodic scheduling failed (%s); retrying in %.2fs", exc, wait)
                    delay = min(ceiling, delay * 2)
                with trio.move_on_after(min(wait, self.max_sleep)):
                    await self._wake.wait()
        finally:
            self._store = None
