"""Cron expressions and time zones: checking them, and the periods they make.

A schedule's *periods* are the instants its cron expression fires at, read
in its time zone (``0 9 * * *`` in ``Europe/Paris`` is 07:00 UTC in summer
and 08:00 UTC in winter). Parsing and the calendar arithmetic, daylight
saving changes included, are croniter's; the time zone database is
zoneinfo's (with the ``tzdata`` package where the system has none). Pure:
no I/O, no clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from ._errors import InvalidInput, quote_prefix
from ._validation import check_name

MissedPolicy = Literal["enqueue_once", "skip"]
MISSED_POLICIES: tuple[MissedPolicy, ...] = ("enqueue_once", "skip")

#: Longest cron expression, in characters.
MAX_CRON_CHARS = 256
#: The named expressions accepted besides the five fields (``@reboot`` is no
#: period, and croniter's six- and seven-field forms, with seconds and years,
#: are refused so that an expression means what cron means by it).
CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})

_MICROSECOND = timedelta(microseconds=1)
# Where an expression is tried, to refuse one that never fires (30 February).
_PROBE = datetime(2000, 1, 1, tzinfo=timezone.utc)


def check_cron(value: Any) -> str:
    """A five-field cron expression (``"*/5 * * * *"``) or an alias (``"@daily"``).

    Raises:
        InvalidInput: naming ``cron``: not a string, malformed, or never fires.
    """
    expression = check_name("cron", value, limit=MAX_CRON_CHARS).strip()
    fields = expression.split()
    if expression.startswith("@"):
        if expression.lower() not in CRON_ALIASES:
            raise InvalidInput("cron", f"unknown alias {quote_prefix(expression)}; use one of {', '.join(sorted(CRON_ALIASES))}")
    elif len(fields) != 5:
        raise InvalidInput(
            "cron", f"must have 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}: {quote_prefix(expression)}"
        )
    try:
        croniter(expression, _PROBE).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidInput("cron", f"{quote_prefix(expression)} never fires") from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("cron", f"{quote_prefix(expression)} is not a cron expression: {exc}") from None
    return expression


def check_timezone(value: Any) -> ZoneInfo:
    """An IANA time zone name (``"Europe/Paris"``, ``"UTC"``).

    Raises:
        InvalidInput: naming ``timezone``.
    """
    name = check_name("timezone", value)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: a key zoneinfo will not look up (absolute, "..").
        raise InvalidInput("timezone", f"unknown time zone {quote_prefix(name)}; use an IANA name such as 'Europe/Paris'") from None


def check_missed(value: Any) -> MissedPolicy:
    """What to do with a period no daemon was up to enqueue on time.

    Raises:
        InvalidInput: naming ``missed``.
    """
    for policy in MISSED_POLICIES:
        if value == policy and isinstance(value, str):
            return policy
    raise InvalidInput("missed", f"must be one of {', '.join(map(repr, MISSED_POLICIES))}, got {quote_prefix(value)}")


def latest_period(cron: str, zone: ZoneInfo, now: datetime) -> datetime:
    """The latest instant at or before ``now`` at which ``cron`` fires in
    ``zone``, in UTC.

    Args:
        now: a timezone-aware instant.
    """
    # croniter's get_prev is strictly before its start: start just after now.
    start = (now + _MICROSECOND).astimezone(zone)
    prev: datetime = croniter(cron, start).get_prev(datetime)
    return prev.astimezone(timezone.utc)


def next_period(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after ``after`` at which ``cron`` fires in
    ``zone``, in UTC."""
    nxt: datetime = croniter(cron, after.astimezone(zone)).get_next(datetime)
    return nxt.astimezone(timezone.utc)


def period_key(name: str, period: datetime) -> str:
    """The unique key of a schedule's job for one period."""
    return f"periodic:{name}:{period.astimezone(timezone.utc).isoformat()}"
