"""Listing the periodic schedules: `orch.list_schedules()` and GET /api/schedules
read the `periodic_schedules` rows the daemons registered, with the next
period worked out from each row."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx

from orchestrator import JobContext, Principal
from orchestrator._cron import check_timezone, next_period
from tests.integration.helpers import ALICE, MALLORY_ADMIN, make_orchestrator
from tests.integration.http_helpers import serving
from tests.integration.test_periodic import T0, FakeClock, Tick, make_daemon, utc
from tests.pg import fetch


async def register_two(url: str) -> None:
    """Two daemons, each running a schedule of its own, one step each at T0."""
    clock = FakeClock(T0)
    tick = make_daemon(url, clock, node="a")
    report = make_daemon(url, clock, node="b")
    report.periodic(
        "0 9 * * 1-5", "tick", name="morning", payload={"n": 1}, timezone="Europe/Paris", missed="skip",
        owner=Principal(user_id="ops", org_id="acme"),
    )  # fmt: skip
    async with tick.running(), report.running():
        await tick.schedules.step()
        await report.schedules.step()


async def test_every_registered_schedule_is_listed_with_its_periods(database_url: str) -> None:
    await register_two(database_url)
    reader = make_orchestrator(database_url)
    async with reader.running(work=False):
        listed = await reader.list_schedules()
    assert [s.name for s in listed] == ["morning", "tick"]
    morning, tick = listed
    # tick: */5 in UTC; at 10:02 the latest period is 10:00, and it was reached.
    assert (tick.kind, tick.cron, tick.timezone, tick.missed) == ("tick", "*/5 * * * *", "UTC", "enqueue_once")
    assert tick.last_period == utc(2024, 1, 1, 10, 0) and tick.next_period == utc(2024, 1, 1, 10, 5)
    # morning: 09:00 Paris on weekdays (08:00 UTC in winter); 2024-01-01 was a Monday.
    assert (morning.kind, morning.timezone, morning.missed) == ("tick", "Europe/Paris", "skip")
    assert morning.last_period == utc(2024, 1, 1, 8, 0) and morning.next_period == utc(2024, 1, 2, 8, 0)
    for s in listed:
        assert s.problem is None and s.next_period is not None and s.due_in_seconds is not None
        # By the database's clock: these periods are long past (no daemon runs them now).
        assert s.due_in_seconds == (s.next_period - s.checked_at).total_seconds() < 0


async def test_a_schedule_not_yet_reached_and_a_row_that_cannot_be_read(database_url: str) -> None:
    await fetch(
        database_url,
        "INSERT INTO orchestrator.periodic_schedules (name, kind, cron, timezone, missed, last_period) VALUES"
        " ('fresh', 'tick', '@hourly', 'UTC', 'enqueue_once', NULL),"
        " ('hand-written', 'tick', 'every tuesday', 'Mars/Olympus', 'skip', now()),"
        " ('far-zone', 'tick', '0 0 * * *', 'Mars/Olympus', 'skip', now())",
    )
    reader = make_orchestrator(database_url)
    async with reader.running(work=False):
        listed = {s.name: s for s in await reader.list_schedules()}
    fresh = listed["fresh"]
    # Never reached: the next period is the first after the database's now.
    assert fresh.last_period is None and fresh.next_period is not None
    assert fresh.next_period == next_period("@hourly", check_timezone("UTC"), fresh.checked_at)
    assert 0 < fresh.due_in_seconds <= 3600  # type: ignore[operator]
    bad = listed["hand-written"]
    assert (bad.next_period, bad.due_in_seconds) == (None, None)
    assert bad.problem is not None and bad.problem.startswith("cron:") and "every tuesday" in bad.problem
    zone = listed["far-zone"]
    assert zone.next_period is None and zone.problem is not None and zone.problem.startswith("timezone:")


async def test_the_http_api_lists_them_for_any_valid_token_only(database_url: str) -> None:
    await register_two(database_url)
    orch = make_orchestrator(database_url)
    async with serving(orch, work=False) as served, httpx.AsyncClient(base_url=served.url, timeout=30) as anon:
        without = await anon.get("/api/schedules")
        wrong = await anon.get("/api/schedules", headers={"Authorization": "Bearer not-a-token"})
        async with await served.client(ALICE) as alice, await served.client(MALLORY_ADMIN) as other_org:
            mine = await alice.get("/api/schedules")
            theirs = await other_org.get("/api/schedules")
        listed = await orch.list_schedules()
        spec = (await anon.get("/openapi.json")).json()
    assert without.status_code == wrong.status_code == 401
    assert without.json()["error"] and "token" in without.json()["message"]
    assert mine.status_code == theirs.status_code == 200, mine.text
    body = mine.json()
    assert [s["name"] for s in body["schedules"]] == ["morning", "tick"]
    tick = body["schedules"][1]
    assert {k: tick[k] for k in ("kind", "cron", "timezone", "missed")} == {
        "kind": "tick", "cron": "*/5 * * * *", "timezone": "UTC", "missed": "enqueue_once",
    }  # fmt: skip
    assert datetime.fromisoformat(tick["last_period"]) == utc(2024, 1, 1, 10, 0)
    assert datetime.fromisoformat(tick["next_period"]) - datetime.fromisoformat(tick["last_period"]) == timedelta(minutes=5)
    # Cluster-wide: every organisation's token sees the same schedules.
    assert [s["name"] for s in theirs.json()["schedules"]] == [s.name for s in listed]
    assert "/api/schedules" in spec["paths"]


async def test_a_daemon_registering_a_schedule_makes_it_listed(database_url: str) -> None:
    # Through the real loop and the database's clock, not an injected one.
    orch = make_orchestrator(database_url)

    @orch.periodic("@daily", name="nightly")
    async def nightly(ctx: JobContext, payload: Tick | None) -> None:
        return None

    async with orch.running():
        with_loop = orch.schedules
        await with_loop.step()
        [listed] = await orch.list_schedules()
    assert (listed.name, listed.kind, listed.cron) == ("nightly", "nightly", "@daily")
    # Registered now: its last period is the latest midnight, the next one a day on, due within a day.
    assert listed.last_period is not None and listed.next_period == listed.last_period + timedelta(days=1)
    assert 0 < listed.due_in_seconds <= 86_400  # type: ignore[operator]
