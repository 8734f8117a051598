"""Job kinds: retry backoff, payload types from handler annotations, the registry."""

from __future__ import annotations

import __future__
import json
import random
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from orchestrator._validation import PayloadLimits, encode_payload
from orchestrator._errors import UnknownJobKind
from orchestrator._jobs import JobContext, JobDefinition, Registry, RetryPolicy, payload_type


class Order(BaseModel):
    sku: str
    quantity: int


# -- RetryPolicy ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    base=st.floats(0.001, 100),
    maximum=st.floats(0.001, 10_000),
    attempt=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_delay_is_equal_jitter_below_the_capped_exponential(
    base: float, maximum: float, attempt: int, seed: int
) -> None:
    ceiling = min(maximum, base * 2 ** (attempt - 1))
    delay = RetryPolicy(base, maximum).delay(attempt, random.Random(seed))
    assert ceiling / 2 <= delay <= ceiling
    assert delay <= maximum


def test_delay_doubles_with_each_attempt_until_the_cap() -> None:
    policy = RetryPolicy(base=1.0, maximum=300.0)
    rng = random.Random(1234)
    delays = [policy.delay(n, rng) for n in range(1, 13)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(300.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling, (n, delay)
    # Below the cap each window [c/2, c] starts where the previous one ends.
    assert delays[:9] == sorted(delays[:9])
    assert delays[0] <= 1.0 and delays[8] >= 128.0  # 2**8 = 256 -> at least 128
    assert all(150.0 <= d <= 300.0 for d in delays[9:])  # capped from attempt 10 (2**9 = 512 > 300)


def test_delay_is_reproducible_with_a_seeded_rng_and_jittered_across_seeds() -> None:
    policy = RetryPolicy(base=10.0, maximum=1000.0)
    assert policy.delay(3, random.Random(7)) == policy.delay(3, random.Random(7))
    assert len({policy.delay(3, random.Random(seed)) for seed in range(20)}) > 1


def test_delay_stays_capped_for_huge_attempt_numbers() -> None:
    delay = RetryPolicy(base=1.0, maximum=300.0).delay(1025, random.Random(0))
    assert 150.0 <= delay <= 300.0


# -- payload_type --------------------------------------------------------------


async def typed(ctx: JobContext, payload: Order) -> None: ...


async def untyped(ctx, payload):  # type: ignore[no-untyped-def]
    ...


async def builtin(ctx: JobContext, payload: list[int]) -> int:
    return sum(payload)


def _compile_handler(source: str, namespace: dict[str, Any]) -> Any:
    """Define a handler in a module compiled with ``from __future__ import annotations``."""
    code = compile(source, "<handlers>", "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, namespace)
    return namespace["handler"]


def test_payload_type_reads_the_second_parameter_annotation() -> None:
    assert payload_type(typed) is Order
    assert payload_type(builtin) == list[int]


def test_payload_type_resolves_string_annotations() -> None:
    handler = _compile_handler(
        "async def handler(ctx: JobContext, payload: Order) -> None: ...",
        {"JobContext": JobContext, "Order": Order},
    )
    assert handler.__annotations__["payload"] == "Order"  # really postponed
    assert payload_type(handler) is Order


def test_payload_type_of_a_bound_method_skips_self() -> None:
    class Jobs:
        async def run(self, ctx: JobContext, payload: Order) -> None: ...

    assert payload_type(Jobs().run) is Order


class CallableHandler:
    async def __call__(self, ctx: JobContext, payload: Order) -> None: ...


def test_payload_type_of_a_callable_instance() -> None:
    assert payload_type(CallableHandler()) is Order


def test_unannotated_payload_is_any() -> None:
    assert payload_type(untyped) is Any
    assert payload_type(lambda ctx, payload: None) is Any


def test_payload_type_needs_only_the_payload_annotation_to_resolve() -> None:
    handler = _compile_handler("async def handler(ctx: JobContext, payload: Order) -> None: ...", {"Order": Order})
    assert payload_type(handler) is Order


@pytest.mark.parametrize(
    "handler",
    [lambda payload: None, lambda ctx, payload, extra=None: None, lambda: None],
    ids=["one", "three", "none"],
)
def test_wrong_number_of_parameters_is_a_type_error(handler: Any) -> None:
    with pytest.raises(TypeError, match=r"must take \(ctx, payload\), got \d parameters"):
        payload_type(handler)


# -- JobDefinition -------------------------------------------------------------


def definition(kind: str = "ship", queue: str = "default") -> JobDefinition:
    return JobDefinition(kind=kind, handler=typed, payload=TypeAdapter(payload_type(typed)), queue=queue)


def test_validate_returns_the_handler_type() -> None:
    assert definition().validate({"sku": "A-1", "quantity": "3"}) == Order(sku="A-1", quantity=3)
    stored = json.loads(encode_payload(definition().payload, Order(sku="A-1", quantity=3), PayloadLimits()))
    assert stored == {"sku": "A-1", "quantity": 3}


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"sku": "A-1", "quantity": "many"}, "quantity"), ({"quantity": 1}, "sku")],
)
def test_validate_raises_validation_error_naming_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        definition().validate(payload)
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]
    assert field in str(caught.value)


def test_definition_defaults() -> None:
    d = definition()
    assert (d.queue, d.max_attempts, d.timeout, d.priority, d.retry) == ("default", 1, None, 0, RetryPolicy())


# -- Registry ------------------------------------------------------------------


def test_registry_finds_what_was_added() -> None:
    registry = Registry()
    ship, bill = definition("ship", "outbound"), definition("bill", "money")
    registry.add(ship)
    registry.add(bill)
    assert registry.get("ship") is ship and registry.get("bill") is bill
    assert registry.kinds == ["bill", "ship"]
    assert registry.queues == ["money", "outbound"]
    assert "ship" in registry and "nope" not in registry


def test_unknown_kind_names_it_and_the_known_ones() -> None:
    registry = Registry()
    with pytest.raises(UnknownJobKind, match=r"'nope' \(registered: none\)"):
        registry.get("nope")
    registry.add(definition("ship"))
    with pytest.raises(UnknownJobKind, match=r"'nope' \(registered: ship\)"):
        registry.get("nope")


def test_duplicate_kind_is_refused_and_the_first_kept() -> None:
    registry = Registry()
    first = definition("ship")
    registry.add(first)
    with pytest.raises(ValueError, match="'ship' is already registered"):
        registry.add(definition("ship", "other"))
    assert registry.get("ship") is first
    assert registry.queues == ["default"]
