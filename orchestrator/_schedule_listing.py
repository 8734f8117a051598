"""The periodic schedules as the database holds them: what
``orchestrator schedules`` and ``GET /api/schedules`` show.

Every daemon that runs a schedule registers it in ``periodic_schedules``
(migration 0010), so one statement (``list_schedules``) lists the cluster's
schedules, whichever daemons run them and whether any is up now. The next
period is worked out here from the row's cron and time zone (croniter,
zoneinfo) after its ``last_period``, against the database's clock. A row
whose cron or time zone cannot be read (written by hand, or by a newer
version) is still listed, with the reason instead of a next period.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._cron import check_cron, check_timezone, next_period
from ._errors import InvalidInput


class ScheduleInfo(BaseModel):
    """One periodic schedule, as stored, and when its next period is due."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    cron: str
    timezone: str
    missed: str = Field(description="what a period no daemon reached on time gets: enqueue_once or skip")
    last_period: datetime | None = Field(
        description="the latest period some daemon reached: enqueued, skipped under missed=skip, "
        "or, for a schedule not yet run, the last one before it was registered"
    )
    next_period: datetime | None = Field(description="the first period after last_period; null when unreadable")
    due_in_seconds: float | None = Field(
        description="seconds from checked_at to next_period, by the database's clock; negative: overdue "
        "(no daemon running the schedule has reached it)"
    )
    problem: str | None = Field(default=None, description="why next_period could not be worked out")
    checked_at: datetime
    created_at: datetime
    updated_at: datetime


class ScheduleStore(Protocol):
    async def fetch(self, name: str, *args: Any) -> list[Mapping[str, Any]]: ...


def schedule_info(row: Mapping[str, Any]) -> ScheduleInfo:
    """The listing of one ``periodic_schedules`` row (with ``checked_at``)."""
    checked_at: datetime = row["checked_at"]
    last: datetime | None = row["last_period"]
    upcoming: datetime | None = None
    problem: str | None = None
    try:
        cron, zone = check_cron(row["cron"]), check_timezone(row["timezone"])
        upcoming = next_period(cron, zone, last if last is not None else checked_at)
    except InvalidInput as exc:
        problem = f"{exc.field}: {exc.reason}"
    except (ValueError, KeyError, OverflowError) as exc:
        # croniter past the calendar's end (a last_period near year 9999).
        problem = f"no next period: {type(exc).__name__}: {exc}"
    return ScheduleInfo(
        name=row["name"],
        kind=row["kind"],
        cron=row["cron"],
        timezone=row["timezone"],
        missed=row["missed"],
        last_period=last,
        next_period=upcoming,
        due_in_seconds=None if upcoming is None else (upcoming - checked_at).total_seconds(),
        problem=problem,
        checked_at=checked_at,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def read_schedules(store: ScheduleStore) -> list[ScheduleInfo]:
    """Every schedule of the schema, by name (one statement)."""
    return [schedule_info(row) for row in await store.fetch("list_schedules")]
