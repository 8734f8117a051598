"""Durations and retention ages, without a database."""

from __future__ import annotations

import math
from typing import Any

import pytest

from orchestrator import InvalidInput, Retention
from orchestrator._retention import DAY, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 7 * DAY), ("2w", 14 * DAY),
     ("1d12h", 1.5 * DAY), ("1.5h", 5400), (" 7D ", 7 * DAY), ("250ms", 0.25), ("0", 0), ("0s", 0)],
)  # fmt: skip
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "older_than") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-3d", "7x", "d7", "1e400", "inf", "nan", "200y", "3d-1h", "36500000d"])
def test_bad_durations_name_the_field_and_the_text(text: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_duration(text, "older_than")
    assert refused.value.field == "older_than"
    assert repr(text) in str(refused.value)


def test_zero_can_be_refused() -> None:
    with pytest.raises(InvalidInput, match="more than 0"):
        parse_duration("0s", "prune_interval", allow_zero=False)


@pytest.mark.parametrize(("seconds", "text"), [(604800, "1w"), (30 * DAY, "30d"), (5400, "1h30m"), (0, "0s"), (1.5, "1.5s")])
def test_durations_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_retention_ages_per_state() -> None:
    retention = Retention(completed=60, failed=None)
    assert retention.ages() == {"completed": 60, "cancelled": 30 * DAY}
    assert retention.ages(["failed"], older_than=5) == {"failed": 5}
    assert retention.ages(["failed"]) == {}


@pytest.mark.parametrize("age", [-1, math.inf, True, "1d"])
def test_bad_ages_are_refused(age: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        Retention(failed=age)
    assert refused.value.field == "retention_failed"
