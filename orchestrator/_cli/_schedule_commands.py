"""``orchestrator schedules``: the cluster's periodic schedules, from the database.

A table by default (name, kind, cron, time zone, missed policy, the last
period reached, the next one and when it is due); ``--json``, a list of the
same records as ``GET /api/schedules``. Like ``prune``, it is an operator's
command: it needs the database, not a principal.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import datetime

from .._retention import format_duration
from .._schedule_listing import ScheduleInfo
from ._exits import EXIT_OK
from ._render import print_json, render_table
from ._session import plain_orchestrator, run_session


def _moment(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


def _due(schedule: ScheduleInfo) -> str:
    if schedule.due_in_seconds is None:
        return f"unknown ({schedule.problem})"
    seconds = round(schedule.due_in_seconds)
    if seconds < 0:
        return f"overdue by {format_duration(-seconds)}"
    return f"in {format_duration(seconds)}"


def render_schedules(schedules: Sequence[ScheduleInfo]) -> str:
    """One line per schedule, aligned; a sentence when there is none."""
    if not schedules:
        return "no periodic schedules (a daemon registers each one it runs)"
    rows = [
        [s.name, s.kind, s.cron, s.timezone, s.missed, _moment(s.last_period), _moment(s.next_period), _due(s)]
        for s in schedules
    ]
    return render_table(["NAME", "KIND", "CRON", "TIMEZONE", "MISSED", "LAST PERIOD", "NEXT PERIOD", "DUE"], rows)


def cmd_schedules(args: argparse.Namespace, extras: list[str]) -> int:
    orch = plain_orchestrator(args)
    schedules = run_session(orch, orch.list_schedules)
    if args.json:
        print_json([s.model_dump(mode="json") for s in schedules])
    else:
        print(render_schedules(schedules))
    return EXIT_OK
