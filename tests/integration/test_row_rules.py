"""The row rules' predicate (migration 0014) agrees with their messages (0004)
and costs no function call.

``job_row_well_formed`` guards every insert and every update of a live row
(the CHECK) and every claim; ``job_row_problem`` names the rule a failed row
broke. They must say the same thing about every row, and the predicate must
be inlined into the expression that uses it: an IMMUTABLE SQL function that
PostgreSQL cannot inline runs through the function executor for each row.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

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


async def test_the_predicate_is_true_exactly_when_there_is_no_problem(database_url: str) -> None:
    rows = rows_to_judge()
    columns = [list(column) for column in zip(*rows)]
    judged = await fetch(
        database_url,
        f"SELECT orchestrator.job_row_well_formed({COLUMNS}) AS ok, orchestrator.job_row_problem({COLUMNS}) AS problem"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[],"
        " $8::timestamptz[]) WITH ORDINALITY AS r(kind, queue, owner_user_id, owner_org_id, unique_key,"
        " max_attempts, created_at, run_at, n) ORDER BY n",
        *columns,
    )  # fmt: skip
    assert len(judged) == len(rows)
    disagreements = [(row, j["ok"], j["problem"]) for row, j in zip(rows, judged) if j["ok"] != (j["problem"] is None)]
    assert disagreements == []
    verdicts = {j["ok"] for j in judged}
    assert verdicts == {True, False}, "the cases must hold good rows and bad ones"


async def test_the_check_and_the_claim_use_the_predicate_inlined(database_url: str) -> None:
    [check] = await fetch(
        database_url,
        "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = 'job_status_well_formed_check'",
    )
    assert "job_row_well_formed(" in check["def"] and "job_row_problem" not in check["def"]
    # EXPLAIN VERBOSE prints the expression as planned: an inlined function
    # no longer appears by name.
    plan = await fetch(
        database_url, f"EXPLAIN (VERBOSE) SELECT orchestrator.job_row_well_formed({COLUMNS}) FROM orchestrator.job_status"
    )
    text = "\n".join(r[0] for r in plan)
    assert "char_length" in text
    assert not any(name in text for name in ("job_row_well_formed", "job_name_ok")), text

