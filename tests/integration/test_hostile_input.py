"""Hostile values for every field of a submission, through every entry point.

Hypothesis generates the values; each is pushed through the library (trio),
the asyncio client and the SQL function ``submit_job``. After each, either
the job was accepted and reading it gives back exactly what was sent, or it
was refused, naming the field, and no row was written. Afterwards a worker
still runs a normal job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator import InvalidInput, Orchestrator, Principal, UnknownJobKind
from orchestrator._validation import MAX_DELAY_SECONDS
from orchestrator.client import Client
from tests.pg import fetch, fetch_sync, with_database

_counter = itertools.count()

HOSTILE_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cc", "Cs", "Zl", "Zp", "Cf"]), min_size=1, max_size=5),
    st.sampled_from(["", "\x00", "a\x00b", "\ud800", "\udfff x", "x" * 129, "y" * 300, "\x7f", "\u0085", "ok"]),
)
HOSTILE_NUMBER = st.one_of(
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.sampled_from(
        [0, -1, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 1e12, MAX_DELAY_SECONDS, MAX_DELAY_SECONDS + 1, 1000, 1001]
    ),
)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT)
HOSTILE_PAYLOAD = st.one_of(
    st.recursive(
        st.one_of(JSON_LEAF, st.binary(max_size=4), st.just(object())),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(st.one_of(HOSTILE_TEXT, st.integers()), inner, max_size=4),
            st.frozensets(st.integers(), max_size=2),
        ),
        max_leaves=12,
    ),
    st.integers(1, 200).map(lambda depth: json.loads("[" * depth + "]" * depth)),
    st.just(list(range(1000))),
)


def mostly(valid: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` about three times in four, else a hostile value: so that a
    case often has one bad field among good ones, and is sometimes all good."""
    return st.integers(0, 3).flatmap(lambda pick: hostile if pick == 0 else st.just(valid))


SUBMISSION = st.fixed_dictionaries(
    {
        "payload": st.one_of(st.recursive(JSON_LEAF, lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=5), i, max_size=3), max_leaves=8), HOSTILE_PAYLOAD),
        "queue": mostly(None, HOSTILE_TEXT),
        "priority": mostly(None, HOSTILE_NUMBER),
        "max_attempts": mostly(None, HOSTILE_NUMBER),
        "delay": mostly(0, HOSTILE_NUMBER),
        "unique_key": mostly(None, HOSTILE_TEXT),
        "user": mostly("alice", HOSTILE_TEXT),
    }
)
#: The fields a refusal may name.
FIELDS = ("payload", "queue", "priority", "max_attempts", "delay", "unique_key", "owner", "user_id", "kind")


@pytest.fixture(scope="module")
def hostile_db(pg_server: str, template_database: str) -> Iterator[str]:
    name = f"orch_hostile_{os.getpid()}_{next(_counter)}"
    fetch_sync(pg_server, f"CREATE DATABASE {name} TEMPLATE {template_database}")
    try:
        yield with_database(pg_server, name)
    finally:
        fetch_sync(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def count_rows(url: str) -> int:
    return int(fetch_sync(url, "SELECT count(*) AS n FROM orchestrator.job_status")[0]["n"])


def as_sent(value: Any) -> Any:
    """What a JSON round trip of ``value`` is (tuples become arrays)."""
    return json.loads(json.dumps(value))


def kwargs_of(case: dict[str, Any]) -> dict[str, Any]:
    options = {k: case[k] for k in ("queue", "priority", "max_attempts", "unique_key") if case[k] is not None}
    return {"delay": case["delay"], **options}


def check_accepted(record: Any, case: dict[str, Any]) -> None:
    assert record.payload == as_sent(case["payload"])
    assert record.kind == "anything"
    assert record.queue == (case["queue"] if case["queue"] is not None else "default")
    assert record.priority == (case["priority"] if case["priority"] is not None else 0)
    assert record.max_attempts == (case["max_attempts"] if case["max_attempts"] is not None else 1)
    assert record.owner.user_id == case["user"]
    waited = (record.run_at - record.created_at).total_seconds()
    assert math.isclose(waited, float(case["delay"]), abs_tol=1e-3)


def check_refused(exc: BaseException) -> None:
    if isinstance(exc, InvalidInput):
        assert re.split(r"[.\[ ]", exc.field)[0] in FIELDS, exc.field
        assert len(str(exc)) < 600, "a refusal must not repeat the input whole"
    else:
        # The owner is a Principal: pydantic names its field.
        assert isinstance(exc, ValidationError) and exc.title == "Principal", exc


def principal(user: Any) -> Principal:
    return Principal(user_id=user, org_id="acme")


def submit_through_library(url: str, case: dict[str, Any]) -> Any:
    orch = Orchestrator(url)

    @orch.job("anything")
    async def anything(ctx: Any, payload: Any) -> Any:
        return None

    async def run() -> Any:
        async with orch.running(work=False, migrate=False):
            job = await orch.submit("anything", case["payload"], owner=principal(case["user"]), **kwargs_of(case))
            return await orch.get(job.id, by=principal(case["user"]))

    return trio.run(run)


_pool = concurrent.futures.ThreadPoolExecutor(1)


def on_asyncio(coro_fn: Any) -> Any:
    """Run ``coro_fn()`` on a plain asyncio loop in a thread of its own."""

    def run() -> Any:
        loop = asyncio.SelectorEventLoop()
        try:
            return loop.run_until_complete(coro_fn())
        finally:
            loop.close()

    return _pool.submit(run).result(timeout=60)


def submit_through_client(url: str, case: dict[str, Any]) -> Any:
    async def run() -> Any:
        async with Client(url, job_types={"anything": Any}) as client:
            job = await client.submit("anything", case["payload"], owner=principal(case["user"]), **kwargs_of(case))
            return await client.get(job.id, by=principal(case["user"]))

    return on_asyncio(run)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=SUBMISSION, entry=st.sampled_from(["library", "client"]))
def test_hostile_submissions_are_stored_exactly_or_refused_by_name(
    hostile_db: str, case: dict[str, Any], entry: str
) -> None:
    # An empty table each time, so a unique key cannot match an earlier case's job.
    fetch_sync(hostile_db, "TRUNCATE orchestrator.job_status")
    before = count_rows(hostile_db)
    submit = submit_through_library if entry == "library" else submit_through_client
    try:
        record = submit(hostile_db, case)
    except (InvalidInput, ValidationError) as exc:
        event(f"refused: {getattr(exc, 'field', 'owner')}")
        check_refused(exc)
        assert count_rows(hostile_db) == before, "a refused submission wrote a row"
    else:
        event("accepted")
        check_accepted(record, case)
        assert count_rows(hostile_db) == before + 1


SQL_SUBMIT = (
    "SELECT orchestrator.submit_job(kind => $1, payload => $2::text::jsonb, owner_user_id => $3,"
    " owner_org_id => 'acme', queue => $4, priority => $5, max_attempts => $6,"
    " delay_seconds => $7, unique_key => $8)"
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=SUBMISSION, kind=HOSTILE_TEXT)
def test_hostile_sql_submissions_are_refused_like_the_library_does(
    hostile_db: str, case: dict[str, Any], kind: str
) -> None:
    # The SQL entry point takes typed arguments: what asyncpg cannot send as
    # those types (a surrogate, a bool as text, an int out of range) is
    # refused before anything reaches the server.
    before = count_rows(hostile_db)
    try:
        payload = json.dumps(case["payload"], allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        payload = "{"

    async def run() -> Any:
        conn = await asyncpg.connect(hostile_db)
        try:
            return await conn.fetchval(
                SQL_SUBMIT, kind, payload, case["user"], case["queue"] or "default",
                case["priority"] if case["priority"] is not None else 0,
                case["max_attempts"] if case["max_attempts"] is not None else 1,
                case["delay"], case["unique_key"],
            )  # fmt: skip
        finally:
            await conn.close()

    try:
        job_id = on_asyncio(run)
    except (asyncpg.DataError, TypeError, ValueError, OverflowError, UnicodeError):
        # Refused by asyncpg before sending: not an argument of that type.
        assert count_rows(hostile_db) == before
    except asyncpg.PostgresError as exc:
        # The function's own refusals name the parameter; JSONB's name the
        # payload; text that PostgreSQL cannot hold is refused at the door.
        assert exc.sqlstate in ("22023", "22P02", "22021", "22003", "54001"), (exc.sqlstate, exc)
        if exc.sqlstate == "22023":
            assert str(exc).startswith("submit_job: ")
            assert str(exc).split(": ")[1] in {"kind", "queue", "owner_user_id", "max_attempts", "delay_seconds", "unique_key", "payload", "priority"}
        assert count_rows(hostile_db) == before
    else:
        [row] = fetch_sync(hostile_db, "SELECT * FROM orchestrator.job_status WHERE job_id = $1", job_id)
        # Accepted: the same rules as the library's held.
        assert 0 < len(row["kind"]) <= 128 and 0 < len(row["owner_user_id"]) <= 128
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in row["kind"] + row["owner_user_id"] + row["queue"])
        assert 0 <= case["delay"] <= MAX_DELAY_SECONDS
        assert 1 <= row["max_attempts"] <= 1000


async def test_payloads_over_the_size_limit_are_refused_everywhere(database_url: str) -> None:
    orch = Orchestrator(database_url, max_payload_bytes=10_000)

    @orch.job("anything")
    async def anything(ctx: Any, payload: Any) -> Any:
        return None

    alice = Principal(user_id="alice", org_id="acme")
    async with orch.running(work=False):
        with pytest.raises(InvalidInput, match="payload: must encode to at most 10,000 bytes"):
            await orch.submit("anything", {"big": "x" * 10_000}, owner=alice)
        with pytest.raises(InvalidInput, match="payload: must encode to at most 10,000 bytes"):
            await orch.submit("anything", list(range(20_000)), owner=alice)
        assert (await orch.submit("anything", {"small": "x" * 9_000}, owner=alice)).payload == {"small": "x" * 9_000}
    rows = await fetch(database_url, "SELECT count(*) AS n FROM orchestrator.job_status")
    assert rows[0]["n"] == 1
    big = json.dumps({"big": "x" * (1024 * 1024)})
    async with trio_asyncio.open_loop():
        with pytest.raises(asyncpg.InvalidParameterValueError, match="submit_job: payload: must encode to at most 1048576"):
            await fetch(
                database_url,
                "SELECT orchestrator.submit_job(kind => 'anything', payload => $1::text::jsonb,"
                " owner_user_id => 'alice', owner_org_id => 'acme')",
                big,
            )


async def test_a_normal_job_completes_after_hostile_submissions(database_url: str) -> None:
    orch = Orchestrator(database_url, poll_interval=0.2)

    @orch.job("anything")
    async def anything(ctx: Any, payload: Any) -> Any:
        return payload

    alice = Principal(user_id="alice", org_id="acme")
    async with orch.running():
        for bad in ({"x": float("nan")}, {"k": "\x00"}, [[[[[]]]]] * 1, b"\xff"):
            with pytest.raises(InvalidInput):
                await orch.submit("anything", bad, owner=alice, delay=1e12)
        with pytest.raises(InvalidInput, match="delay"):
            await orch.submit("anything", {}, owner=alice, delay=1e12)
        with pytest.raises(InvalidInput, match=r"^kind: must be at most 128 characters, got 10000") as long_kind:
            await orch.submit("x" * 10_000, {}, owner=alice)
        assert len(str(long_kind.value)) < 200
        with pytest.raises(UnknownJobKind, match="unknown job kind 'nope'"):
            await orch.submit("nope", {}, owner=alice)
        job = await orch.submit("anything", {"ok": [1, 2.5, "three"]}, owner=alice)
        with trio.fail_after(30):
            done = await orch.wait(job.id, by=alice)
    assert done.result == {"ok": [1, 2.5, "three"]}
