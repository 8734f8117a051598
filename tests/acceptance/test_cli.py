"""The ``orchestrator`` command line, run as a real subprocess.

Every command runs as ``python -m orchestrator ...`` against a fresh
database (the ``database_url`` fixture); the worker daemon runs in the
background and is stopped with a signal.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.pg import fetch

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.acceptance.cli_app:orch"
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nope"

ALICE = ["--user", "alice", "--org", "acme"]
BOB = ["--user", "bob", "--org", "acme"]
CAROL_ADMIN = ["--user", "carol", "--org", "acme", "--role", "admin"]
MALLORY_ADMIN = ["--user", "mallory", "--org", "evil-corp", "--role", "admin"]

#: Environment variables the CLI reads; the tests set them explicitly.
_CLI_ENV = (
    "ORCHESTRATOR_DATABASE_URL",
    "ORCHESTRATOR_SCHEMA",
    "ORCHESTRATOR_USER",
    "ORCHESTRATOR_ORG",
    "ORCHESTRATOR_ROLE",
)


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def cli_env(database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLI_ENV}
    if database_url is not None:
        env["ORCHESTRATOR_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


async def cli(database_url: str | None, *args: str, timeout: float = 60, **env: str) -> Result:
    """Run ``orchestrator ARGS`` to its end."""
    with trio.fail_after(timeout):
        done = await trio.run_process(
            cli_command(*args),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=cli_env(database_url, **env),
            cwd=ROOT,
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


async def submit(database_url: str, kind: str, payload: Any, who: Sequence[str] = ALICE, *more: str) -> str:
    result = await cli(database_url, "submit", kind, json.dumps(payload), "--app", APP, *who, *more)
    assert result.code == 0, result
    return result.out.strip()


async def count_jobs(database_url: str) -> int:
    [row] = await fetch(database_url, "SELECT count(*) AS n FROM orchestrator.job_status")
    return int(row["n"])


def one_error_line(result: Result) -> str:
    """stderr is one line, without a traceback."""
    assert "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    return lines[0]


# -- migrate -------------------------------------------------------------------------


async def test_migrate_applies_then_is_up_to_date(empty_database_url: str) -> None:
    first = await cli(None, "--database-url", empty_database_url, "migrate")
    assert first.code == 0, first
    assert "applied 0001_job_status.sql" in first.out

    second = await cli(None, "migrate", "--database-url", empty_database_url)
    assert second.code == 0, second
    assert "up to date" in second.out
    assert "applied" not in second.out


# -- submit, status, jobs ------------------------------------------------------------------


async def test_submit_then_status_shows_it_queued(database_url: str) -> None:
    submitted = await cli(
        database_url, "submit", "resize", '{"width": 3, "height": 4}', "--app", APP, *ALICE, "--json", "--priority", "7"
    )
    assert submitted.code == 0, submitted
    record = submitted.json()
    assert record["state"] == "queued"
    assert record["kind"] == "resize"
    assert record["owner"] == {"user_id": "alice", "org_id": "acme"}
    assert record["priority"] == 7
    assert record["max_attempts"] == 2
    job_id = record["id"]

    # The principal may also come from the environment.
    status = await cli(database_url, "status", job_id, "--json", ORCHESTRATOR_USER="alice", ORCHESTRATOR_ORG="acme")
    assert status.code == 0, status
    assert status.json()["state"] == "queued"
    assert status.json()["payload"] == {"width": 3, "height": 4}

    table = await cli(database_url, "status", job_id, *BOB)
    assert table.code == 0, table
    assert f"id            {job_id}" in table.out
    assert "state         queued" in table.out

    # Without --json, submit prints the id alone.
    plain = await cli(database_url, "submit", "resize", '{"width": 1, "height": 1}', "--app", APP, *ALICE)
    assert plain.code == 0, plain
    assert uuid.UUID(plain.out.strip())


async def test_a_bad_payload_exits_2_naming_the_field_and_writes_nothing(database_url: str) -> None:
    invalid = await cli(database_url, "submit", "resize", '{"width": "wide", "height": 4}', "--app", APP, *ALICE)
    assert invalid.code == 2, invalid
    line = one_error_line(invalid)
    assert "width" in line and "integer" in line and "'resize'" in line

    missing = await cli(database_url, "submit", "resize", '{"width": 4}', "--app", APP, *ALICE)
    assert missing.code == 2, missing
    assert "height: Field required" in one_error_line(missing)

    malformed = await cli(database_url, "submit", "resize", "{width: 4", "--app", APP, *ALICE)
    assert malformed.code == 2, malformed
    assert "not valid JSON" in one_error_line(malformed)

    assert await count_jobs(database_url) == 0


async def test_an_unknown_kind_exits_2(database_url: str) -> None:
    result = await cli(database_url, "submit", "thumbnail", "{}", "--app", APP, *ALICE)
    assert result.code == 2, result
    line = one_error_line(result)
    assert "'thumbnail'" in line and "explode, resize" in line
    assert await count_jobs(database_url) == 0


async def test_submit_without_a_principal_exits_2(database_url: str) -> None:
    result = await cli(database_url, "submit", "resize", '{"width": 1, "height": 1}', "--app", APP, "--user", "alice")
    assert result.code == 2, result
    assert "--org" in one_error_line(result)


async def test_jobs_lists_the_organisations_jobs(database_url: str) -> None:
    first = await submit(database_url, "resize", {"width": 1, "height": 2})
    second = await submit(database_url, "explode", {"reason": "no"}, BOB)

    listed = await cli(database_url, "jobs", *ALICE, "--json")
    assert listed.code == 0, listed
    assert {j["id"] for j in listed.json()} == {first, second}

    only_resize = await cli(database_url, "jobs", *ALICE, "--json", "--kind", "resize", "--state", "queued")
    assert [j["id"] for j in only_resize.json()] == [first]

    table = await cli(database_url, "jobs", *ALICE, "--limit", "1")
    assert table.code == 0, table
    header, *rows = table.out.strip().splitlines()
    assert header.split() == ["ID", "KIND", "STATE", "ATTEMPT", "PROGRESS", "OWNER", "CREATED"]
    assert len(rows) == 1 and second in rows[0]  # newest first

    elsewhere = await cli(database_url, "jobs", *MALLORY_ADMIN, "--json")
    assert elsewhere.code == 0 and elsewhere.json() == [], elsewhere


# -- cancel and bad ids ------------------------------------------------------------------


async def test_cancel_obeys_authority(database_url: str) -> None:
    job_id = await submit(database_url, "resize", {"width": 1, "height": 1})

    by_member = await cli(database_url, "cancel", job_id, *BOB)
    assert by_member.code == 3, by_member
    assert "'bob' may not cancel" in one_error_line(by_member)

    by_other_org = await cli(database_url, "cancel", job_id, *MALLORY_ADMIN)
    assert by_other_org.code == 4, by_other_org
    assert job_id in one_error_line(by_other_org)

    unchanged = await cli(database_url, "status", job_id, *ALICE, "--json")
    assert unchanged.json()["state"] == "queued"

    by_owner = await cli(database_url, "cancel", job_id, *ALICE, "--json")
    assert by_owner.code == 0, by_owner
    assert by_owner.json() == {"job_id": job_id, "cancelled": True, "state": "cancelled", "reason": None}

    again = await cli(database_url, "cancel", job_id, *ALICE)
    assert again.code == 5, again
    assert "already cancelled" in one_error_line(again)

    other = await submit(database_url, "resize", {"width": 2, "height": 2})
    by_admin = await cli(database_url, "cancel", other, *CAROL_ADMIN)
    assert by_admin.code == 0, by_admin
    assert f"job {other} cancelled" in by_admin.out


async def test_an_invalid_or_unknown_id(database_url: str) -> None:
    invalid = await cli(database_url, "status", "not-a-uuid", *ALICE)
    assert invalid.code == 2, invalid
    assert "'not-a-uuid'" in one_error_line(invalid)

    unknown = str(uuid.uuid4())
    for command in ("status", "cancel", "wait"):
        missing = await cli(database_url, command, unknown, *ALICE)
        assert missing.code == 4, missing
        assert unknown in one_error_line(missing)


# -- the daemon ----------------------------------------------------------------------------


async def wait_for_text(path: Path, text: str, process: trio.Process, timeout: float = 60) -> None:
    """Poll ``path`` until it contains ``text`` (the process must stay alive)."""
    with trio.fail_after(timeout):
        while text not in path.read_text(errors="replace"):
            assert process.returncode is None, path.read_text(errors="replace")
            await trio.sleep(0.05)


async def test_run_processes_jobs_then_sigterm_stops_it_cleanly(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as log_file:
        async with trio.open_nursery() as nursery:
            worker: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cli_command("run", "--app", APP, "--concurrency", "2", "--queues", "default"),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                    env=cli_env(database_url),
                    cwd=ROOT,
                )
            )
            ok = await submit(database_url, "resize", {"width": 3, "height": 4})
            bad = await submit(database_url, "explode", {"reason": "out of cheese"})

            done = await cli(database_url, "wait", ok, *ALICE, "--json", "--timeout", "60")
            assert done.code == 0, done
            record = done.json()
            assert record["state"] == "completed"
            assert record["result"] == {"pixels": 12}
            assert record["created_at"] <= record["started_at"] <= record["completed_at"]

            failed = await cli(database_url, "wait", bad, *ALICE, "--timeout", "60")
            assert failed.code == 5, failed
            assert "state         failed" in failed.out
            assert "out of cheese" in one_error_line(failed)

            await wait_for_text(log, "started", worker)
            worker.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await worker.wait()
    output = log.read_text()
    assert worker.returncode == 0, output
    assert "Traceback" not in output
    assert "concurrency=2" in output
    assert "received SIGTERM" in output
    assert "stopped" in output


async def test_run_stops_cleanly_on_sigint(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with log.open("wb") as log_file:
        async with trio.open_nursery() as nursery:
            worker: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cli_command("run", "--app", APP),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    check=False,
                    env=cli_env(database_url),
                    cwd=ROOT,
                )
            )
            await wait_for_text(log, "started", worker)
            worker.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                await worker.wait()
    output = log.read_text()
    assert worker.returncode == 0, output
    assert "received SIGINT" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("app", "complaint"),
    [
        ("tests.acceptance.cli_app", "must be 'module:attribute'"),
        ("tests.acceptance.no_such_module:orch", "no module named 'tests.acceptance.no_such_module'"),
        ("tests.acceptance.cli_app:nope", "has no attribute 'nope'"),
        ("tests.acceptance.cli_app:not_an_orchestrator", "builtins.int, not an orchestrator.Orchestrator"),
        ("tests.acceptance.cli_app:empty", "registers no job kinds"),
    ],
)
async def test_run_with_a_bad_app_exits_2_naming_the_problem(app: str, complaint: str) -> None:
    # The database is unreachable: the app is checked before connecting.
    result = await cli(UNREACHABLE, "run", "--app", app)
    assert result.code == 2, result
    assert complaint in one_error_line(result)


# -- demo and a missing database -------------------------------------------------------------


async def test_demo_runs_to_completion_and_shows_each_final_state(database_url: str) -> None:
    result = await cli(None, "demo", "--database-url", database_url, timeout=120)
    assert result.code == 0, result
    assert "\x1b[" not in result.out  # not a terminal: one line per change, no redrawing
    summary = result.out[result.out.index("Summary") :]
    expected = {
        "instant #1": "completed",
        "instant #2": "completed",
        "instant #3": "completed",
        "slow": "completed",
        "flaky": "completed",
        "cancel-me": "cancelled",
        "guarded": "completed",
    }
    for label, state in expected.items():
        [line] = [line for line in summary.splitlines() if line.strip().startswith(label + " ")]
        assert f" {state} " in line, line
        assert line.rstrip().endswith(("✓", "ok")), line
    assert "every job ended as expected" in result.out

    rows = await fetch(database_url, "SELECT kind, status::text AS status, attempt FROM orchestrator.job_status")
    assert sorted((r["kind"], r["status"], r["attempt"]) for r in rows) == [
        ("cancel-me", "cancelled", 1),
        ("flaky", "completed", 2),
        ("guarded", "completed", 1),
        ("instant", "completed", 1),
        ("instant", "completed", 1),
        ("instant", "completed", 1),
        ("slow", "completed", 1),
    ]


async def test_an_unreachable_database_exits_6() -> None:
    for args in (["status", str(uuid.uuid4()), *ALICE], ["migrate"], ["run", "--app", APP]):
        result = await cli(None, "--database-url", UNREACHABLE, *args)
        assert result.code == 6, result
        line = one_error_line(result)
        assert "database unavailable" in line and "127.0.0.1" in line, line
