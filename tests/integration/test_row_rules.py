"""The row rules' predicates (migration 0014) agree with their messages (0004)
and cost no function call.

The CHECK ``job_status_well_formed_check`` guards every insert and every
update of a live row, and ``job_row_well_formed`` every claim;
``job_row_problem`` names the rule a failed row broke. All three must say the
same thing about every row. The CHECK spells its rules out and the predicate
must be inlined where it is used: a SQL function PostgreSQL cannot inline
runs through the function executor for each row.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

from orchestrator._queries import query
from tests.pg import fetch

UTC = timezone.utc
NAMES = [None, "", "a", "x" * 128, "x" * 129, "é" * 128, "é" * 129, "a\x01b", "a\x1f", "a\x7f", "a\x9f", "a\xa0", " "]
UNIQUE_KEYS = [None, "", "k", "k" * 256, "k" * 257, "k\x0a"]
MAX_ATTEMPTS = [None, 1, 1000, 1001]
TIMES = [
    None,
    datetime(1900, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
    datetime(1900, 1, 1, tzinfo=UTC),
    datetime(2026, 12, 3, tzinfo=UTC),
    datetime(9000, 1, 1, tzinfo=UTC) - timedelta(microseconds=1),
    datetime(9000, 1, 1, tzinfo=UTC),
]
COLUMNS = "kind, queue, owner_user_id, owner_org_id, unique_key, max_attempts, created_at, run_at"
GOOD_ROW: tuple[Any, ...] = ("k", "default", "alice", "acme", None, 1, TIMES[3], TIMES[3])
VALUES = [NAMES, NAMES, NAMES, NAMES, UNIQUE_KEYS, MAX_ATTEMPTS, TIMES, TIMES]


def rows_to_judge() -> list[tuple[Any, ...]]:
    """A good row with each field given each of its edge values in turn, and
    random rows mixing them."""
    rows = [GOOD_ROW]
    for field, values in enumerate(VALUES):
        rows += [GOOD_ROW[:field] + (v,) + GOOD_ROW[field + 1 :] for v in values]
    chance = random.Random(14)
    rows += [tuple(chance.choice(values) for values in VALUES) for _ in range(2000)]
    return rows


UNNEST = (
    "unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::timestamptz[])"
    " WITH ORDINALITY AS r(kind, queue, owner_user_id, owner_org_id, unique_key, max_attempts, created_at, run_at, n)"
)


async def judge(url: str, verdict: str, rows: list[tuple[Any, ...]]) -> list[tuple[tuple[Any, ...], bool, str | None]]:
    """Each row with ``verdict`` (an expression over its columns) and job_row_problem's message."""
    judged = await fetch(
        url,
        f"SELECT {verdict} AS ok, orchestrator.job_row_problem({COLUMNS}) AS problem FROM {UNNEST} ORDER BY n",
        *[list(column) for column in zip(*rows)],
    )
    assert len(judged) == len(rows)
    return [(row, j["ok"], j["problem"]) for row, j in zip(rows, judged)]


async def test_the_predicate_is_true_exactly_when_there_is_no_problem(database_url: str) -> None:
    judged = await judge(database_url, f"orchestrator.job_row_well_formed({COLUMNS})", rows_to_judge())
    assert [(row, ok, problem) for row, ok, problem in judged if ok != (problem is None)] == []
    assert {ok for _, ok, _ in judged} == {True, False}, "the cases must hold good rows and bad ones"


async def check_expression(url: str) -> str:
    [check] = await fetch(
        url, "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = 'job_status_well_formed_check'"
    )
    definition: str = check["def"]
    assert definition.startswith("CHECK (") and definition.endswith(") NOT VALID"), definition
    return definition.removeprefix("CHECK ").removesuffix(" NOT VALID")


async def test_the_check_passes_a_live_row_exactly_when_there_is_no_problem(database_url: str) -> None:
    # A CHECK fails only on false. Rows with NULL in a NOT NULL column are
    # left out: that constraint refuses them first.
    rows = [row for row in rows_to_judge() if all(v is not None for i, v in enumerate(row) if i != 4)]
    verdict = f"({await check_expression(database_url)}) IS NOT FALSE"
    judged = await judge(database_url, verdict.replace("status", "'queued'::orchestrator.job_state"), rows)
    assert [(row, ok, problem) for row, ok, problem in judged if ok != (problem is None)] == []
    assert {ok for _, ok, _ in judged} == {True, False}, "the cases must hold good rows and bad ones"


async def test_the_check_calls_no_function_and_the_claims_inline_the_predicate(database_url: str) -> None:
    check = await check_expression(database_url)
    assert "char_length(kind)" in check
    assert not any(name in check for name in ("job_row_problem", "job_row_well_formed", "job_name_")), check
    for claim in ("claim_jobs", "apply_transitions_and_claim"):
        assert "job_row_well_formed(" in query(claim) and "job_row_problem" not in query(claim)
    # EXPLAIN VERBOSE prints the expression as planned: an inlined function
    # no longer appears by name.
    plan = await fetch(
        database_url, f"EXPLAIN (VERBOSE) SELECT orchestrator.job_row_well_formed({COLUMNS}) FROM orchestrator.job_status"
    )
    text = "\n".join(r[0] for r in plan)
    assert "char_length" in text
    assert not any(name in text for name in ("job_row_well_formed", "job_name_ok")), text
