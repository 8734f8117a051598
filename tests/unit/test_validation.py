"""The submission boundary alone: every rule, its bounds and its messages."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from orchestrator import InvalidInput
from orchestrator._validation import (
    MAX_ATTEMPTS_LIMIT,
    MAX_DELAY_SECONDS,
    MAX_NAME_CHARS,
    MAX_UNIQUE_KEY_CHARS,
    PayloadLimits,
    check_delay,
    check_json,
    check_max_attempts,
    check_name,
    check_priority,
    check_submission,
    check_timeout,
    encode_payload,
)

ANY = TypeAdapter(Any)
LIMITS = PayloadLimits()


def refusal(call: Any, *args: Any, **kwargs: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    assert len(str(caught.value)) < 400, "an error quotes only a prefix of the input"
    return caught.value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "must not be empty"),
        ("k" * (MAX_NAME_CHARS + 1), f"at most {MAX_NAME_CHARS} characters"),
        ("a\x00b", "U+0000 at position 1"),
        ("tab\there", "U+0009"),
        ("del\x7f", "U+007F"),
        ("c1\x85", "U+0085"),
        ("lone\ud800", "U+D800"),
        (b"bytes", "must be a string, got bytes"),
        (7, "must be a string, got int"),
        (None, "must be a string, got NoneType"),
    ],
)
def test_a_name_is_a_short_printable_string(value: Any, reason: str) -> None:
    error = refusal(check_name, "kind", value)
    assert error.field == "kind"
    assert reason in error.reason


@given(st.text(min_size=1, max_size=MAX_NAME_CHARS).filter(lambda s: s.isprintable()))
def test_printable_names_up_to_the_limit_pass_unchanged(name: str) -> None:
    assert check_name("queue", name) == name


def test_a_huge_name_is_quoted_by_a_prefix() -> None:
    error = refusal(check_name, "kind", "x" * 10_000)
    assert "10002 characters" in str(error)


@pytest.mark.parametrize("value", [0, 0.0, 1.5, MAX_DELAY_SECONDS])
def test_delays_within_bounds_pass(value: float) -> None:
    assert check_delay(value) == float(value)


@pytest.mark.parametrize("value", [-1, -0.001, math.nan, math.inf, -math.inf, MAX_DELAY_SECONDS + 1, 1e12, 10**400, True, "5"])
def test_delays_out_of_bounds_or_not_numbers_are_refused(value: Any) -> None:
    assert refusal(check_delay, value).field == "delay"


@pytest.mark.parametrize("value", [-(2**31), 0, 2**31 - 1])
def test_priorities_in_the_integer_column_pass(value: int) -> None:
    assert check_priority(value) == value


@pytest.mark.parametrize("value", [-(2**31) - 1, 2**31, 99_999_999_999, True, False, 1.0, "1", None])
def test_priorities_outside_the_column_or_not_ints_are_refused(value: Any) -> None:
    assert refusal(check_priority, value).field == "priority"


@pytest.mark.parametrize("value", [0, -1, MAX_ATTEMPTS_LIMIT + 1, True, 2.0])
def test_max_attempts_outside_1_to_the_limit_are_refused(value: Any) -> None:
    assert refusal(check_max_attempts, value).field == "max_attempts"


@pytest.mark.parametrize("value", [0, -1, math.inf, 31 * 86_400])
def test_timeouts_must_be_positive_and_at_most_30_days(value: float) -> None:
    assert refusal(check_timeout, value).field == "timeout"
    assert check_timeout(None) is None
    assert check_timeout(30 * 86_400) == 30 * 86_400


def test_a_submission_names_its_first_bad_option_and_checks_keys_per_payload() -> None:
    good = dict(kind="k", queue="q", priority=0, max_attempts=3, delay=0, unique_keys=None, count=2)
    assert check_submission(**good).unique_keys == [None, None]
    assert refusal(check_submission, **{**good, "queue": ""}).field == "queue"
    assert refusal(check_submission, **{**good, "unique_keys": ["a"]}).field == "unique_keys"
    too_long = "u" * (MAX_UNIQUE_KEY_CHARS + 1)
    assert refusal(check_submission, **{**good, "unique_keys": [too_long, None]}).field == "unique_key"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"a": math.nan}, "payload.a"),
        ({"a": [1, math.inf]}, "payload.a[1]"),
        ({"s": "a\x00b"}, "payload.s"),
        ({"s": "\udfff"}, "payload.s"),
        ({"k\x00ey": 1}, "payload key"),
        ({1: "int key"}, "payload"),
        ({"b": b"bytes"}, "payload.b"),
        ({"x": {1, 2}}, "payload.x"),
        ({"x": object()}, "payload.x"),
        ({"big": 10**5000}, "payload.big"),
        ({"odd key": math.nan}, "payload['odd key']"),
    ],
)
def test_untyped_payloads_are_json_data_jsonb_can_hold(payload: Any, field: str) -> None:
    error = refusal(encode_payload, ANY, payload, LIMITS)
    assert error.field.startswith(field), error


def stored(adapter: TypeAdapter[Any], payload: Any, limits: PayloadLimits) -> Any:
    """What ``encode_payload`` stores, as the handler gets it back."""
    return json.loads(encode_payload(adapter, payload, limits))


def test_depth_and_size_limits_are_configurable() -> None:
    deep: Any = []
    for _ in range(10):
        deep = [deep]
    assert stored(ANY, deep, PayloadLimits(max_depth=11)) == deep
    assert "deeper than 5 levels" in refusal(encode_payload, ANY, deep, PayloadLimits(max_depth=5)).reason
    assert "at most 100 bytes" in refusal(encode_payload, ANY, {"pad": "x" * 200}, PayloadLimits(max_bytes=100)).reason
    assert refusal(PayloadLimits, max_bytes=1).field == "max_payload_bytes"


def test_the_size_limit_counts_the_stored_texts_utf8_bytes() -> None:
    # {"pad":"..."} is 10 characters around the padding.
    limits = PayloadLimits(max_bytes=100)
    assert encode_payload(ANY, {"pad": "x" * 90}, limits) == '{"pad":"' + "x" * 90 + '"}'
    assert "got 101" in refusal(encode_payload, ANY, {"pad": "x" * 91}, limits).reason
    assert encode_payload(ANY, {"pad": "é" * 45}, limits) == '{"pad":"' + "é" * 45 + '"}'
    assert "got 102" in refusal(encode_payload, ANY, {"pad": "é" * 46}, limits).reason
    assert refusal(PayloadLimits, max_depth=0).field == "max_payload_depth"


def test_a_million_levels_are_refused_without_recursion() -> None:
    deep: Any = []
    for _ in range(1_000_000):
        deep = [deep]
    assert "deeper than 64 levels" in refusal(check_json, "payload", deep, LIMITS, strict=True).reason


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**62), 2**62) | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5).filter(lambda k: "\x00" not in k and k.isprintable()), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(JSON)
def test_plain_json_is_stored_exactly_as_given(payload: Any) -> None:
    assert stored(ANY, payload, LIMITS) == payload


def test_tuples_become_arrays_and_large_floats_exact_integers() -> None:
    assert stored(ANY, {"t": (1, 2)}, LIMITS) == {"t": [1, 2]}
    assert stored(ANY, {"f": 2.0**60}, LIMITS) == {"f": 2**60}


class Size(BaseModel):
    w: int
    label: str = ""


def test_a_typed_payload_is_checked_by_its_model_then_by_the_boundary() -> None:
    adapter = TypeAdapter(Size)
    assert stored(adapter, {"w": 2}, LIMITS) == {"w": 2, "label": ""}
    assert stored(adapter, Size(w=3), LIMITS) == {"w": 3, "label": ""}
    with pytest.raises(ValidationError):
        encode_payload(adapter, {"w": "wide"}, LIMITS)
    assert refusal(encode_payload, adapter, {"w": 1, "label": "a\x00"}, LIMITS).field == "payload.label"
