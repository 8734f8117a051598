"""Periodic jobs on real PostgreSQL: each period enqueued exactly once.

"Now" is driven by an injected clock (standing in for the database's
``clock_timestamp()``) and the scheduling step is called explicitly, with the
daemons' timer loops off, so no test waits for a wall-clock boundary and
every test knows which step did what. The loop itself has tests of its own.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio
from pydantic import BaseModel

from orchestrator import DatabaseUnavailable, InvalidInput, JobContext, Orchestrator, Principal, StoreError, UnknownJobKind
from orchestrator._periodic import StepResult
from orchestrator._store import Store
from tests.pg import fetch

T0 = datetime(2024, 1, 1, 10, 2, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


class FakeClock:
    """The scheduler's "database now", set by the test; can fail on demand."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.failures: list[Exception] = []
        self.calls = 0

    async def __call__(self, store: Store) -> datetime:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.now


class Tick(BaseModel):
    n: int


def make_daemon(
    url: str, clock: Any, *, node: str, missed: str = "enqueue_once", loop: bool = False, **kwargs: Any
) -> Orchestrator:
    """A daemon running the kind ``tick`` every five minutes."""
    orch = Orchestrator(url, node_id=node, poll_interval=0.2)
    orch.schedules.clock = clock
    orch.schedules.loop = loop

    @orch.periodic("*/5 * * * *", name="tick", missed=missed, payload={"n": 7}, **kwargs)
    async def tick(ctx: JobContext, payload: Tick) -> int:
        return payload.n

    return orch


async def periodic_jobs(url: str, kind: str = "tick") -> list[Any]:
    return await fetch(
        url,
        "SELECT unique_key, payload, owner_org_id, queue, status::text AS status FROM orchestrator.job_status"
        " WHERE kind = $1 ORDER BY unique_key",
        kind,
    )


def keys(rows: list[Any]) -> list[str]:
    return [r["unique_key"] for r in rows]


def key(period: datetime, name: str = "tick") -> str:
    return f"periodic:{name}:{period.isoformat()}"


async def step_all(*daemons: Orchestrator) -> list[StepResult]:
    """Run every daemon's scheduling step at once."""
    results: list[StepResult] = []

    async def one(orch: Orchestrator) -> None:
        results.append(await orch.schedules.step())

    async with trio.open_nursery() as nursery:
        for orch in daemons:
            nursery.start_soon(one, orch)
    return results


async def test_the_schedule_table_is_migrated(database_url: str) -> None:
    columns = await fetch(
        database_url,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = 'orchestrator' AND table_name = 'periodic_schedules'",
    )
    assert {c["column_name"] for c in columns} == {
        "name", "kind", "cron", "timezone", "missed", "last_period", "created_at", "updated_at",
    }  # fmt: skip


async def test_two_daemons_enqueue_each_period_exactly_once(database_url: str) -> None:
    clock = FakeClock(T0)
    a = make_daemon(database_url, clock, node="a")
    b = make_daemon(database_url, clock, node="b")
    async with a.running(), b.running():
        await step_all(a, b)
        # A new schedule starts at its next period: 10:00 passed before it existed.
        assert await periodic_jobs(database_url) == []
        inserted = 0
        for k in range(1, 7):
            # Each daemon steps twice per period, and at different instants in it.
            clock.now = utc(2024, 1, 1, 10, 0) + k * 5 * MINUTE + timedelta(seconds=k)
            results = await step_all(a, b, a, b)
            this_period = [e for r in results for e in r.enqueued]
            assert len(this_period) == 1, this_period
            inserted += 1
        rows = await periodic_jobs(database_url)
    assert keys(rows) == [key(utc(2024, 1, 1, 10, 0) + k * 5 * MINUTE) for k in range(1, 7)]
    assert len(rows) == inserted
    assert {(r["payload"], r["owner_org_id"], r["queue"]) for r in rows} == {('{"n": 7}', "periodic", "default")}
    [schedule] = await fetch(database_url, "SELECT * FROM orchestrator.periodic_schedules")
    assert (schedule["name"], schedule["kind"], schedule["cron"], schedule["timezone"], schedule["missed"]) == (
        "tick", "tick", "*/5 * * * *", "UTC", "enqueue_once",
    )  # fmt: skip
    assert schedule["last_period"] == utc(2024, 1, 1, 10, 30)


async def test_the_enqueued_jobs_run_on_a_worker(database_url: str) -> None:
    clock = FakeClock(T0)
    a = make_daemon(database_url, clock, node="a")
    async with a.running():
        await a.schedules.step()
        clock.now = utc(2024, 1, 1, 10, 5, 1)
        [enqueued] = (await a.schedules.step()).enqueued
        record = await a.wait(enqueued.job_id, by=Principal(user_id="ops", org_id="periodic"), timeout=10)
    assert (record.kind, record.state.value, record.result, enqueued.period) == (
        "tick", "completed", 7, utc(2024, 1, 1, 10, 5),
    )  # fmt: skip


async def test_a_restart_between_periods_neither_skips_nor_doubles(database_url: str) -> None:
    clock = FakeClock(T0)
    async with make_daemon(database_url, clock, node="a").running() as a:
        await a.schedules.step()
        clock.now = utc(2024, 1, 1, 10, 5, 2)
        assert len((await a.schedules.step()).enqueued) == 1
    # The same period, after a restart: nothing more.
    clock.now = utc(2024, 1, 1, 10, 7)
    async with make_daemon(database_url, clock, node="a").running() as again:
        assert (await again.schedules.step()).enqueued == []
        clock.now = utc(2024, 1, 1, 10, 10)
        assert len((await again.schedules.step()).enqueued) == 1
    assert keys(await periodic_jobs(database_url)) == [key(utc(2024, 1, 1, 10, 5)), key(utc(2024, 1, 1, 10, 10))]


async def test_a_daemon_down_over_boundaries_enqueues_the_latest_missed_period_once(database_url: str) -> None:
    clock = FakeClock(T0)
    async with make_daemon(database_url, clock, node="a").running() as a:
        await a.schedules.step()
    # Down from 10:02 to 10:27: 10:05 ... 10:25 passed unattended.
    clock.now = utc(2024, 1, 1, 10, 27)
    async with make_daemon(database_url, clock, node="a").running() as a, make_daemon(
        database_url, clock, node="b"
    ).running() as b:
        results = await step_all(a, b, a)
        assert [e.period for r in results for e in r.enqueued] == [utc(2024, 1, 1, 10, 25)]
        clock.now = utc(2024, 1, 1, 10, 30)
        await step_all(a, b)
    assert keys(await periodic_jobs(database_url)) == [key(utc(2024, 1, 1, 10, 25)), key(utc(2024, 1, 1, 10, 30))]


async def test_skip_drops_a_period_reached_after_its_grace_and_resumes_on_time(database_url: str) -> None:
    clock = FakeClock(T0)
    async with make_daemon(database_url, clock, node="a", missed="skip", grace=30).running() as a:
        await a.schedules.step()
    clock.now = utc(2024, 1, 1, 10, 27)
    async with make_daemon(database_url, clock, node="a", missed="skip", grace=30).running() as a:
        result = await a.schedules.step()
        assert (result.enqueued, result.skipped) == ([], [("tick", utc(2024, 1, 1, 10, 25))])
        assert (await a.schedules.step()).skipped == []  # recorded: not skipped again
        # Within the grace it is on time.
        clock.now = utc(2024, 1, 1, 10, 30, 29)
        assert [e.period for e in (await a.schedules.step()).enqueued] == [utc(2024, 1, 1, 10, 30)]
    assert keys(await periodic_jobs(database_url)) == [key(utc(2024, 1, 1, 10, 30))]
    [row] = await fetch(database_url, "SELECT missed, last_period FROM orchestrator.periodic_schedules")
    assert (row["missed"], row["last_period"]) == ("skip", utc(2024, 1, 1, 10, 30))


async def test_a_daily_schedule_in_paris_follows_daylight_saving(database_url: str) -> None:
    clock = FakeClock(utc(2024, 3, 30, 6))  # 07:00 in Paris
    orch = Orchestrator(database_url, node_id="a")
    orch.schedules.clock = clock
    orch.schedules.loop = False

    @orch.periodic("0 9 * * *", name="morning", timezone="Europe/Paris")
    async def morning(ctx: JobContext, payload: None) -> None:
        return None

    async with orch.running():
        await orch.schedules.step()
        seen = []
        # Hour by hour over three days, across the change of 2024-03-31.
        for hour in range(1, 3 * 24):
            clock.now = utc(2024, 3, 30, 6) + timedelta(hours=hour)
            seen += [(e.period, clock.now) for e in (await orch.schedules.step()).enqueued]
    # 09:00 CET is 08:00 UTC; 09:00 CEST is 07:00 UTC. Each enqueued at the first look after it.
    assert seen == [
        (utc(2024, 3, 30, 8), utc(2024, 3, 30, 8)),
        (utc(2024, 3, 31, 7), utc(2024, 3, 31, 7)),
        (utc(2024, 4, 1, 7), utc(2024, 4, 1, 7)),
    ]
    assert len(await periodic_jobs(database_url, "morning")) == 3


async def test_by_default_the_database_clock_decides_not_the_nodes(database_url: str) -> None:
    # Two daemons whose own clocks are an hour apart, on the default clock.
    def skewed(hours: int) -> Any:
        return lambda: datetime.now(timezone.utc) + timedelta(hours=hours)

    daemons = []
    for node, hours in (("early", -1), ("late", 1)):
        orch = Orchestrator(database_url, node_id=node, clock=skewed(hours))
        orch.job("minutely")(_noop)
        orch.periodic("* * * * *", "minutely")
        orch.schedules.loop = False
        daemons.append(orch)
    a, b = daemons
    async with a.running(), b.running():
        await step_all(a, b)
        # Pretend the schedule was last enqueued two minutes ago, by the database's clock.
        await fetch(
            database_url,
            "UPDATE orchestrator.periodic_schedules SET last_period = date_trunc('minute', clock_timestamp()) - interval '2 minutes'",
        )
        [before] = await fetch(database_url, "SELECT date_trunc('minute', clock_timestamp()) AS m")
        a.schedules._reached.clear()
        b.schedules._reached.clear()
        results = await step_all(a, b)
        [after] = await fetch(database_url, "SELECT date_trunc('minute', clock_timestamp()) AS m")
    enqueued = [e for r in results for e in r.enqueued]
    assert len(enqueued) == 1
    assert enqueued[0].period in {before["m"], after["m"]}


async def _noop(ctx: JobContext, payload: Any) -> None:
    return None


async def test_the_loop_sleeps_until_the_next_period(database_url: str) -> None:
    # "Now" runs with trio's clock from 0.3 s before 10:05; the loop alone must
    # wake at the boundary and enqueue it, after a handful of steps, not a poll each tick.
    base = utc(2024, 1, 1, 10, 5) - timedelta(seconds=0.3)
    start = trio.current_time()

    async def now(store: Store) -> datetime:
        return base + timedelta(seconds=trio.current_time() - start)

    orch = make_daemon(database_url, now, node="a", loop=True)
    async with orch.running():
        with trio.fail_after(10):
            while not await periodic_jobs(database_url):
                await trio.sleep(0.05)
        steps = orch.schedules.steps
    assert keys(await periodic_jobs(database_url)) == [key(utc(2024, 1, 1, 10, 5))]
    assert steps <= 3


async def test_database_errors_in_the_loop_are_logged_and_retried(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(T0)
    async with make_daemon(database_url, clock, node="a").running() as a:
        await a.schedules.step()
    clock.now = utc(2024, 1, 1, 10, 5, 3)
    clock.failures = [DatabaseUnavailable("connection refused"), StoreError("deadlock detected", sqlstate="40P01")]
    with caplog.at_level(logging.WARNING, logger="orchestrator.periodic"):
        async with make_daemon(database_url, clock, node="a", loop=True).running():
            with trio.fail_after(10):
                while not await periodic_jobs(database_url):
                    await trio.sleep(0.05)
    assert keys(await periodic_jobs(database_url)) == [key(utc(2024, 1, 1, 10, 5))]
    warnings = [r.getMessage() for r in caplog.records if r.name == "orchestrator.periodic"]
    assert any("connection refused" in w for w in warnings) and any("deadlock" in w for w in warnings)
    assert clock.failures == []


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"cron": "*/5 * * *"}, "cron"),
        ({"cron": "0 25 * * *"}, "cron"),
        ({"timezone": "Europe/Atlantis"}, "timezone"),
        ({"missed": "catch_up"}, "missed"),
        ({"payload": {"n": "seven"}}, "payload.n"),
        ({"payload": None}, "payload"),
        ({"grace": -5}, "grace"),
        ({"name": ""}, "name"),
        ({"name": "tick"}, "name"),  # taken by the daemon's own schedule
    ],
)
async def test_bad_schedules_are_refused_naming_the_field_and_the_daemon_keeps_serving(
    database_url: str, given: dict[str, Any], field: str
) -> None:
    clock = FakeClock(T0)
    orch = make_daemon(database_url, clock, node="a")
    orch.job("report")(_typed_report)
    arguments: dict[str, Any] = {"cron": "0 * * * *", "name": "hourly-report", "payload": {"n": 1}, **given}
    async with orch.running():
        await orch.schedules.step()
        with pytest.raises(InvalidInput) as caught:
            orch.periodic(arguments.pop("cron"), "report", **arguments)
        assert caught.value.field == field
        # Also in the decorator form, which then registers no handler either.
        decorator_form = {"cron": "*/5 * * * *", "name": "other", "payload": {"n": 1}, **given}
        with pytest.raises(InvalidInput) as caught:
            orch.periodic(decorator_form.pop("cron"), **decorator_form)(_typed_report)
        assert caught.value.field == field
        assert "other" not in orch.registry and orch.registry.kinds == ["report", "tick"]
        assert list(orch.schedules._schedules) == ["tick"]
        # Nothing was written, and the daemon's own schedule still runs.
        clock.now = utc(2024, 1, 1, 10, 5)
        assert len((await orch.schedules.step()).enqueued) == 1
    names = await fetch(database_url, "SELECT name FROM orchestrator.periodic_schedules")
    assert [r["name"] for r in names] == ["tick"]


async def _typed_report(ctx: JobContext, payload: Tick) -> None:
    return None


def test_scheduling_an_unknown_kind_is_refused() -> None:
    orch = Orchestrator("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(UnknownJobKind):
        orch.periodic("* * * * *", "nothing-handles-this")
    with pytest.raises(InvalidInput) as caught:
        orch.job("k")(_noop)
        orch.periodic("* * * * *", "k", timeout=3)  # type: ignore[call-overload]
    assert caught.value.field == "timeout"
    assert len(orch.schedules) == 0


async def test_a_schedule_added_while_running_is_picked_up(database_url: str) -> None:
    clock = FakeClock(T0)
    orch = make_daemon(database_url, clock, node="a")
    orch.job("report")(_typed_report)
    async with orch.running():
        await orch.schedules.step()
        orch.periodic("*/10 * * * *", "report", payload={"n": 2}, owner=Principal(user_id="ops", org_id="acme"))
        await orch.schedules.step()
        clock.now = utc(2024, 1, 1, 10, 10)
        result = await orch.schedules.step()
    assert sorted(e.schedule for e in result.enqueued) == ["report", "tick"]
    [report] = await periodic_jobs(database_url, "report")
    assert (report["unique_key"], report["owner_org_id"]) == (key(utc(2024, 1, 1, 10, 10), "report"), "acme")
