"""Periods of cron expressions in time zones, and the checks of what a schedule is given."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import BaseModel, TypeAdapter

from orchestrator import InvalidInput, Principal
from orchestrator._cron import (
    check_cron,
    check_missed,
    check_timezone,
    latest_period,
    next_period,
    period_key,
)
from orchestrator._periodic import PeriodicSchedules, check_payload, check_schedule_options
from orchestrator._validation import PayloadLimits

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


def test_latest_period_includes_the_boundary_itself() -> None:
    assert latest_period("*/5 * * * *", UTC, utc(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 10, 5)


def test_latest_period_just_before_a_boundary_is_the_previous_one() -> None:
    now = utc(2024, 1, 1, 10, 5) - timedelta(microseconds=1)
    assert latest_period("*/5 * * * *", UTC, now) == utc(2024, 1, 1, 10, 0)
    assert latest_period("*/5 * * * *", UTC, utc(2024, 1, 1, 10, 9, 59)) == utc(2024, 1, 1, 10, 5)


def test_next_period_is_strictly_after() -> None:
    assert next_period("*/5 * * * *", UTC, utc(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 10, 10)
    assert next_period("*/5 * * * *", UTC, utc(2024, 1, 1, 10, 7, 30)) == utc(2024, 1, 1, 10, 10)


def test_periods_are_returned_in_utc_whatever_the_zone() -> None:
    period = latest_period("0 9 * * *", PARIS, utc(2024, 1, 15, 12))
    assert period.utcoffset() == timedelta(0)
    assert period == utc(2024, 1, 15, 8)  # 09:00 CET


def test_daily_at_nine_in_paris_follows_the_spring_change() -> None:
    # 2024-03-31: Paris goes from UTC+1 to UTC+2 at 02:00 local.
    periods = [utc(2024, 3, 30, 8)]
    for _ in range(2):
        periods.append(next_period("0 9 * * *", PARIS, periods[-1]))
    assert periods == [utc(2024, 3, 30, 8), utc(2024, 3, 31, 7), utc(2024, 4, 1, 7)]
    # Before 09:00 local on the day of the change, the due period is still the day before's.
    assert latest_period("0 9 * * *", PARIS, utc(2024, 3, 31, 6, 59)) == utc(2024, 3, 30, 8)
    assert latest_period("0 9 * * *", PARIS, utc(2024, 3, 31, 7, 0)) == utc(2024, 3, 31, 7)


def test_daily_at_nine_in_paris_follows_the_autumn_change() -> None:
    # 2024-10-27: back from UTC+2 to UTC+1.
    assert next_period("0 9 * * *", PARIS, utc(2024, 10, 26, 7)) == utc(2024, 10, 27, 8)
    assert latest_period("0 9 * * *", PARIS, utc(2024, 10, 27, 7, 30)) == utc(2024, 10, 26, 7)


def test_a_local_time_skipped_by_the_spring_change_still_fires_once_that_day() -> None:
    # 02:30 does not exist in Paris on 2024-03-31; croniter fires at 03:00 local.
    first = next_period("30 2 * * *", PARIS, utc(2024, 3, 30, 12))
    assert first == utc(2024, 3, 31, 1)
    assert next_period("30 2 * * *", PARIS, first) == utc(2024, 4, 1, 0, 30)


def test_the_period_key_names_the_schedule_and_the_utc_instant() -> None:
    period = datetime(2024, 3, 31, 9, tzinfo=PARIS)
    assert period_key("report", period) == "periodic:report:2024-03-31T07:00:00+00:00"


@pytest.mark.parametrize("expression", ["*/5 * * * *", "0 9 * * 1-5", "@daily", "@HOURLY", " 0 0 1 * * "])
def test_good_cron_expressions_are_accepted(expression: str) -> None:
    assert check_cron(expression) == expression.strip()


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("", "must not be empty"),
        ("* * *", "must have 5 fields"),
        ("* * * * * 30", "must have 5 fields"),
        ("61 * * * *", "is not a cron expression"),
        ("*/0 * * * *", "is not a cron expression"),
        ("a b c d e", "is not a cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("@reboot", "unknown alias"),
        ("* * * * *\n", "control characters"),
        (5, "must be a string"),
        (None, "must be a string"),
    ],
)
def test_bad_cron_expressions_are_refused_naming_cron(expression: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_cron(expression)
    assert caught.value.field == "cron"
    assert says in caught.value.reason


def test_time_zones_are_iana_names() -> None:
    assert check_timezone("Europe/Paris").key == "Europe/Paris"
    assert check_timezone("UTC").key == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "", "Europe/Paris\x00", 3])
def test_unknown_time_zones_are_refused_naming_timezone(name: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_timezone(name)
    assert caught.value.field == "timezone"


@pytest.mark.parametrize("value", ["enqueue_once", "skip"])
def test_missed_policies(value: str) -> None:
    assert check_missed(value) == value


@pytest.mark.parametrize("value", ["later", "SKIP", None, True, 1, ["skip"]])
def test_unknown_missed_policies_are_refused_naming_missed(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_missed(value)
    assert caught.value.field == "missed"


def options(**overrides: Any) -> dict[str, Any]:
    given: dict[str, Any] = dict(
        cron="*/5 * * * *", name=None, timezone="UTC", missed="enqueue_once", grace=60.0,
        owner=None, queue=None, priority=None, max_attempts=None,
    )  # fmt: skip
    given.update(overrides)
    return given


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"grace": -1}, "grace"),
        ({"grace": float("nan")}, "grace"),
        ({"owner": {"user_id": "x"}}, "owner"),
        ({"queue": ""}, "queue"),
        ({"priority": 2**40}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"name": "a\nb"}, "name"),
        ({"cron": "* *", "timezone": "Nowhere"}, "cron"),  # the first bad one
    ],
)
def test_schedule_options_name_the_bad_one(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_schedule_options(**options(**overrides))
    assert caught.value.field == field


class Report(BaseModel):
    pages: int
    title: str = "weekly"


def test_a_payload_that_does_not_fit_the_handler_is_refused_naming_its_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_payload(TypeAdapter(Report), {"pages": "many"}, PayloadLimits())
    assert caught.value.field == "payload.pages"
    with pytest.raises(InvalidInput) as caught:
        check_payload(TypeAdapter(Any), {"x": float("nan")}, PayloadLimits())
    assert caught.value.field == "payload.x"
    assert check_payload(TypeAdapter(Report), {"pages": 3}, PayloadLimits()) == {"pages": 3, "title": "weekly"}


def test_a_schedule_name_is_taken_once() -> None:
    schedules = PeriodicSchedules()
    opts = check_schedule_options(**options(owner=Principal(user_id="u", org_id="o")))
    common: dict[str, Any] = dict(
        kind="report", payload_type=TypeAdapter(Report), payload={"pages": 1}, limits=PayloadLimits(),
        queue="default", priority=0, max_attempts=1,
    )  # fmt: skip
    schedule = opts.bind(schedules, **common)
    assert (schedule.name, schedule.owner.org_id, schedule.payload) == ("report", "o", {"pages": 1, "title": "weekly"})
    schedules.add(schedule)
    with pytest.raises(InvalidInput) as caught:
        opts.bind(schedules, **common)
    assert caught.value.field == "name"
    assert len(schedules) == 1
