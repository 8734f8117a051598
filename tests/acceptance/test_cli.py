"""The ``orchestrator`` command line, run as a real subprocess.

Every command runs as ``python -m orchestrator ...`` against a fresh
database (the ``database_url`` fixture); the worker daemon runs in the
background and is stopped with a signal. Conditions in another process are
awaited by polling under a deadline (``trio.fail_after``), never by sleeping
a fixed time.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
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
    "ORCHESTRATOR_CONCURRENCY",
    "ORCHESTRATOR_QUEUES",
    "ORCHESTRATOR_SHUTDOWN_GRACE",
    "ORCHESTRATOR_LOG_FORMAT",
    "ORCHESTRATOR_LOG_LEVEL",
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
    assert "'thumbnail'" in line and "explode, nap, resize" in line
    assert await count_jobs(database_url) == 0


async def test_submit_without_a_principal_exits_2(database_url: str) -> None:
    result = await cli(database_url, "submit", "resize", '{"width": 1, "height": 1}', "--app", APP, "--user", "alice")
    assert result.code == 2, result
    assert "--org" in one_error_line(result)


async def test_jobs_lists_the_organisations_jobs(database_url: str) -> None:
    first = await submit(database_url, "resize", {"width": 1, "height": 2})
    second = await submit(database_url, "explode", {"reason": "no"}, BOB)
    third = await submit(database_url, "resize", {"width": 5, "height": 5}, ALICE, "--queue", "bulk")

    listed = await cli(database_url, "jobs", *ALICE, "--json")
    assert listed.code == 0, listed
    assert [j["id"] for j in listed.json()] == [third, second, first]  # newest first

    only_resize = await cli(database_url, "jobs", *ALICE, "--json", "--kind", "resize", "--state", "queued")
    assert [j["id"] for j in only_resize.json()] == [third, first]

    in_bulk = await cli(database_url, "jobs", *BOB, "--json", "--queue", "bulk")
    assert in_bulk.code == 0, in_bulk
    assert [(j["id"], j["queue"]) for j in in_bulk.json()] == [(third, "bulk")]

    by_bob = await cli(database_url, "jobs", *ALICE, "--json", "--owner", "bob")
    assert [j["id"] for j in by_bob.json()] == [second]

    alice_default = await cli(database_url, "jobs", *ALICE, "--json", "--owner", "alice", "--queue", "default")
    assert [j["id"] for j in alice_default.json()] == [first]

    nobody = await cli(database_url, "jobs", *ALICE, "--owner", "nobody")
    assert nobody.code == 0 and nobody.out.strip() == "no jobs", nobody

    table = await cli(database_url, "jobs", *ALICE, "--limit", "1")
    assert table.code == 0, table
    header, *rows = table.out.strip().splitlines()
    assert header.split() == ["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PROGRESS", "OWNER", "CREATED"]
    assert len(rows) == 1 and third in rows[0] and " bulk " in rows[0]  # newest first

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


@asynccontextmanager
async def background_worker(
    database_url: str | None, log: Path, *args: str, **env: str
) -> AsyncIterator[trio.Process]:
    """``orchestrator run --app APP ARGS`` in the background: stderr (the
    log) to ``log``, stdout next to it. Killed if the block leaves it running."""
    with log.open("wb") as err, log.with_suffix(".out").open("wb") as out:
        async with trio.open_nursery() as nursery:
            worker: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cli_command("run", "--app", APP, *args),
                    stdout=out,
                    stderr=err,
                    check=False,
                    env=cli_env(database_url, **env),
                    cwd=ROOT,
                )
            )
            try:
                yield worker
            finally:
                if worker.returncode is None:
                    worker.kill()


async def stop_with(worker: trio.Process, signum: int, timeout: float = 30) -> float:
    """Send ``signum``; return the seconds until the worker exited."""
    start = trio.current_time()
    worker.send_signal(signum)
    with trio.fail_after(timeout):
        await worker.wait()
    return trio.current_time() - start


async def job_row(database_url: str, job_id: str) -> dict[str, Any]:
    [row] = await fetch(
        database_url,
        "SELECT status::text AS status, attempt, lease_node, lease_token, lease_expires_at, result"
        " FROM orchestrator.job_status WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    return dict(row)


async def wait_for_status(
    database_url: str, job_id: str, status: str, process: trio.Process, log: Path, timeout: float = 60
) -> None:
    """Poll the job's row until it has ``status`` (the worker must stay alive)."""
    with trio.fail_after(timeout):
        while (await job_row(database_url, job_id))["status"] != status:
            assert process.returncode is None, log.read_text(errors="replace")
            await trio.sleep(0.05)


def assert_back_in_the_queue(row: dict[str, Any], attempt: int = 1) -> None:
    """Released by a stopping worker: queued, the attempt not counted, no lease."""
    assert row["status"] == "queued", row
    assert row["attempt"] == attempt, row
    assert row["lease_node"] is None and row["lease_token"] is None and row["lease_expires_at"] is None, row


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (each must be one)."""
    records = []
    for line in text.splitlines():
        if line.strip():
            record = json.loads(line)
            assert isinstance(record, dict), line
            records.append(record)
    return records


async def test_run_takes_settings_from_the_environment_and_flags_win(database_url: str, tmp_path: Path) -> None:
    # The app says concurrency=5, shutdown_grace=0; the environment overrides
    # those; the flags override the environment.
    log = tmp_path / "worker.log"
    env = {
        "ORCHESTRATOR_CONCURRENCY": "3",
        "ORCHESTRATOR_QUEUES": "default=2,bulk",
        "ORCHESTRATOR_SHUTDOWN_GRACE": "7.5",
        "ORCHESTRATOR_LOG_FORMAT": "json",
        "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        "ORCHESTRATOR_SCHEMA": "orch_env",
    }
    async with background_worker(database_url, log, "--shutdown-grace", "2", "--log-level", "INFO", **env) as worker:
        await wait_for_text(log, '"worker.started"', worker)
        # The worker really uses the schema from the environment: a job
        # submitted there (with the same environment) runs.
        elsewhere = await submit(database_url, "resize", {"width": 2, "height": 2})  # in the default schema
        in_env_schema = await cli(
            database_url, "submit", "resize", '{"width": 3, "height": 3}', "--app", APP, *ALICE, **env
        )
        assert in_env_schema.code == 0, in_env_schema
        done = await cli(
            database_url, "wait", in_env_schema.out.strip(), *ALICE, "--json", "--timeout", "60", **env
        )
        assert done.code == 0, done
        assert done.json()["result"] == {"pixels": 9}
        assert (await job_row(database_url, elsewhere))["status"] == "queued"  # not this worker's schema
        assert await stop_with(worker, signal.SIGTERM) < 30
    assert worker.returncode == 0, log.read_text()
    records = json_lines(log.read_text())
    [started] = [r for r in records if r.get("event") == "worker.started"]
    assert started["concurrency"] == 3  # the environment's, over the app's 5
    assert started["queues"] == {"default": 2, "bulk": 3}  # a queue without a limit gets the concurrency
    assert started["shutdown_grace"] == 2  # the flag's, over the environment's 7.5
    assert started["schema"] == "orch_env"
    assert "queues=default=2,bulk=3 concurrency=3 shutdown_grace=2s" in started["message"]


@pytest.mark.parametrize(
    ("args", "env", "complaint"),
    [
        ((), {"ORCHESTRATOR_CONCURRENCY": "lots"}, "bad concurrency (from ORCHESTRATOR_CONCURRENCY): 'lots' is not an integer"),
        ((), {"ORCHESTRATOR_QUEUES": "default=0"}, "bad queues (from ORCHESTRATOR_QUEUES): queue 'default': limit 0 must be at least 1"),
        ((), {"ORCHESTRATOR_SHUTDOWN_GRACE": "-1"}, "bad shutdown_grace (from ORCHESTRATOR_SHUTDOWN_GRACE): '-1' must be"),
        ((), {"ORCHESTRATOR_LOG_FORMAT": "xml"}, "bad log_format (from ORCHESTRATOR_LOG_FORMAT): 'xml' must be one of: text, json"),
        (("--queues", "default=two"), {}, "argument --queues: queue 'default': limit 'two' is not an integer"),
        (("--queues", "a,a"), {}, "argument --queues: queue 'a' is given twice"),
    ],
)
async def test_run_with_a_bad_setting_exits_2_naming_it(
    args: Sequence[str], env: dict[str, str], complaint: str
) -> None:
    # The database is unreachable: settings are checked before connecting.
    result = await cli(UNREACHABLE, "run", "--app", APP, *args, **env)
    assert result.code == 2, result
    assert complaint in result.err, result
    assert "Traceback" not in result.err


async def test_json_logs_are_one_object_per_line_with_the_event_fields(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    async with background_worker(database_url, log, "--log-format", "json", ORCHESTRATOR_LOG_LEVEL="DEBUG") as worker:
        job_id = await submit(database_url, "resize", {"width": 3, "height": 4})
        done = await cli(database_url, "wait", job_id, *ALICE, "--json", "--timeout", "60")
        assert done.code == 0, done
        await wait_for_text(log, '"job.completed"', worker)
        assert await stop_with(worker, signal.SIGTERM) < 30
    assert worker.returncode == 0, log.read_text()
    assert log.with_suffix(".out").read_text() == ""

    records = json_lines(log.read_text())
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys(), record
    ours = [r for r in records if r.get("job_id") == job_id]
    fields = ("event", "kind", "queue", "attempt", "state", "previous_state")
    assert [tuple(r[f] for f in fields) for r in ours] == [
        ("job.active", "resize", "default", 1, "active", "queued"),
        ("job.completed", "resize", "default", 1, "completed", "active"),
    ]
    completed = ours[-1]
    # Per-job records are DEBUG; INFO has one summary line per interval.
    assert completed["logger"] == "orchestrator.job" and completed["level"] == "DEBUG"
    assert job_id in completed["message"]
    assert completed["ts"].endswith("Z")
    events = [r.get("event") for r in records]
    assert events.index("worker.started") < events.index("job.completed") < events.index("worker.stopped")
    summaries = [r for r in records if r.get("event") == "worker.summary"]
    assert summaries and summaries[-1]["level"] == "INFO" and summaries[-1]["logger"] == "orchestrator.summary"
    assert sum(r["claimed"] for r in summaries) == sum(r["completed"] for r in summaries) == 1
    assert summaries[-1]["p50_run_ms"] is not None
    [stopping] = [r for r in records if r.get("event") == "worker.stopping"]
    assert stopping["signal"] == "SIGTERM"


# -- graceful shutdown ----------------------------------------------------------------------


async def test_sigterm_requeues_a_job_still_running_when_the_grace_ends(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    job_id = await submit(database_url, "nap", {"seconds": 3600})
    async with background_worker(database_url, log, "--shutdown-grace", "1") as worker:
        await wait_for_status(database_url, job_id, "active", worker, log)
        took = await stop_with(worker, signal.SIGTERM)
    output = log.read_text()
    assert worker.returncode == 0, output
    assert 0.9 <= took < 1 + 5, (took, output)  # the grace, then out promptly
    assert "received SIGTERM" in output and "1 running job(s) get up to 1s" in output
    assert "Traceback" not in output
    assert_back_in_the_queue(await job_row(database_url, job_id))


async def test_a_job_finishing_within_the_grace_completes_before_exit(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    job_id = await submit(database_url, "nap", {"seconds": 1.5})
    async with background_worker(database_url, log, "--shutdown-grace", "60") as worker:
        await wait_for_status(database_url, job_id, "active", worker, log)
        took = await stop_with(worker, signal.SIGTERM, timeout=60)
    output = log.read_text()
    assert worker.returncode == 0, output
    assert took < 30, (took, output)  # it waited for the job, not for the grace
    row = await job_row(database_url, job_id)
    assert row["status"] == "completed" and json.loads(row["result"]) == {"slept": 1.5}, row
    # At INFO the job's end shows in the summary line, written as the worker drains.
    assert output.index("received SIGTERM") < output.index("1 completed") < output.index("stopped")


async def test_a_second_signal_stops_at_once_and_still_requeues(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    job_id = await submit(database_url, "nap", {"seconds": 3600})
    async with background_worker(database_url, log, "--shutdown-grace", "60") as worker:
        await wait_for_status(database_url, job_id, "active", worker, log)
        worker.send_signal(signal.SIGTERM)
        # The first signal was handled and the worker is in its grace.
        await wait_for_text(log, "received SIGTERM: stopping", worker)
        assert (await job_row(database_url, job_id))["status"] == "active"
        took = await stop_with(worker, signal.SIGTERM)
    output = log.read_text()
    assert worker.returncode == 0, output
    assert took < 10, (took, output)  # far from the 60 s grace
    assert "received SIGTERM (second signal)" in output
    assert "Traceback" not in output
    assert_back_in_the_queue(await job_row(database_url, job_id))


# -- wait -----------------------------------------------------------------------------------


def change_lines(out: str) -> list[list[str]]:
    """``wait``'s lines before the final record: [elapsed, state, "attempt", "n/m", ...]."""
    lines = out.split("\n\n", 1)[0].splitlines()
    return [line.split() for line in lines]


async def read_pty(master: int, into: bytearray) -> None:
    """Collect what the process writes to the terminal until it closes."""
    stream = trio.lowlevel.FdStream(master)
    try:
        while chunk := await stream.receive_some(4096):
            into += chunk
    except (trio.BrokenResourceError, OSError) as exc:  # EIO: the other side closed
        cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
        assert cause is None or getattr(cause, "errno", errno.EIO) == errno.EIO, exc
    finally:
        await stream.aclose()


async def test_wait_shows_progress_then_the_job(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    job_id = await submit(database_url, "nap", {"seconds": 1.5})
    plain_out = tmp_path / "wait.out"
    terminal = bytearray()
    master, slave = pty.openpty()
    with plain_out.open("wb") as out:
        async with trio.open_nursery() as nursery:
            # Two watchers of the same job: one on a pipe-like file, one on a terminal.
            plain: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cli_command("wait", job_id, *ALICE, "--timeout", "60"),
                    stdout=out,
                    capture_stderr=True,
                    check=False,
                    env=cli_env(database_url),
                    cwd=ROOT,
                )
            )
            live: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    cli_command("wait", job_id, *ALICE, "--timeout", "60"),
                    stdout=slave,
                    capture_stderr=True,
                    check=False,
                    env=cli_env(database_url, TERM="xterm", COLUMNS="120", NO_COLOR="1"),
                    cwd=ROOT,
                )
            )
            os.close(slave)
            nursery.start_soon(read_pty, master, terminal)
            # Both show the job queued before any worker runs.
            await wait_for_text(plain_out, "queued", plain)
            with trio.fail_after(60):
                while b"queued" not in terminal:
                    assert live.returncode is None, bytes(terminal)
                    await trio.sleep(0.05)
            async with background_worker(database_url, log) as worker:
                with trio.fail_after(60):
                    await plain.wait()
                    await live.wait()

                failing = await submit(database_url, "explode", {"reason": "out of cheese"})
                failed = await cli(database_url, "wait", failing, *ALICE, "--timeout", "60")
                assert await stop_with(worker, signal.SIGTERM) < 30

    text = plain_out.read_text()
    assert plain.returncode == 0, text
    changes = change_lines(text)
    # One line per change of state, in order, no redrawing.
    assert [c[1] for c in changes] == ["queued", "active", "completed"], text
    assert all(c[2:4] == ["attempt", "1/1"] for c in changes), text
    assert "\r" not in text and "\x1b[" not in text
    assert f"id            {job_id}" in text and "state         completed" in text

    screen = terminal.decode(errors="replace")
    assert live.returncode == 0, screen
    redraws = screen.split("\r\x1b[2K")
    assert len(redraws) >= 4, screen  # one line redrawn in place while it runs
    assert "queued" in redraws[1] and "completed" in redraws[-1] and "100%" in redraws[-1], screen
    assert any("active" in r and ("25%" in r or "50%" in r or "75%" in r) for r in redraws), screen
    assert "state         completed" in screen

    assert failed.code == 5, failed
    [*_, last] = change_lines(failed.out)
    assert last[1] == "failed" and "out of cheese" in " ".join(last), failed
    assert "out of cheese" in one_error_line(failed)


async def test_wait_json_prints_only_the_final_record(database_url: str) -> None:
    job_id = await submit(database_url, "resize", {"width": 1, "height": 1})
    # No worker runs: the timeout ends the wait (exit 1), and --json prints nothing then.
    too_long = await cli(database_url, "wait", job_id, *ALICE, "--json", "--timeout", "0.5")
    assert too_long.code == 1, too_long
    assert too_long.out == ""
    assert f"job {job_id} did not finish within 0.5 s" in one_error_line(too_long)

    assert (await cli(database_url, "cancel", job_id, *ALICE)).code == 0
    result = await cli(database_url, "wait", job_id, *ALICE, "--json")
    assert result.code == 0, result
    assert result.json()["state"] == "cancelled"  # the whole of stdout is the record


def test_help_documents_exit_codes_and_environment() -> None:
    done = subprocess.run(cli_command("--help"), capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    for text in ("exit codes:", "3    not authorised", "4    job not found", "5    the job failed", "6    database unavailable"):
        assert text in done.stdout, done.stdout
    for variable in ("ORCHESTRATOR_CONCURRENCY", "ORCHESTRATOR_QUEUES", "ORCHESTRATOR_SHUTDOWN_GRACE", "ORCHESTRATOR_LOG_FORMAT"):
        assert variable in done.stdout, done.stdout


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


# -- settings and log records, in process ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("a", ["a"]),
        (" a , b ", ["a", "b"]),
        ("a=2,b=5", {"a": 2, "b": 5}),
        ("a=2,b", {"a": 2, "b": None}),
    ],
)
def test_queues_parse_as_a_list_or_limits(text: str, parsed: object) -> None:
    from orchestrator._app import parse_queues

    assert parse_queues(text) == parsed


def test_settings_come_from_flags_then_environment_then_the_app() -> None:
    from orchestrator import Orchestrator
    from orchestrator._app import SettingError, apply_worker_settings

    environ = {"ORCHESTRATOR_CONCURRENCY": "4", "ORCHESTRATOR_QUEUES": "a=2,b", "ORCHESTRATOR_SHUTDOWN_GRACE": "9"}
    orch = Orchestrator(concurrency=10, queues=["z"], shutdown_grace=1.0)
    apply_worker_settings(orch, shutdown_grace=3.0, environ=environ)
    assert (orch.concurrency, orch.queues, orch.shutdown_grace) == (4, {"a": 2, "b": 4}, 3.0)
    assert orch.queue_limits() == {"a": 2, "b": 4}

    untouched = Orchestrator(concurrency=10, queues=["z"], shutdown_grace=1.0)
    apply_worker_settings(untouched, environ={})
    assert (untouched.concurrency, untouched.queues, untouched.shutdown_grace) == (10, ["z"], 1.0)

    with pytest.raises(SettingError, match=r"bad concurrency \(from ORCHESTRATOR_CONCURRENCY\): '0' must be at least 1"):
        apply_worker_settings(untouched, environ={"ORCHESTRATOR_CONCURRENCY": "0"})


def test_the_json_formatter_writes_extras_and_errors_on_one_line() -> None:
    import logging

    from orchestrator._logging import JsonFormatter

    logger = logging.getLogger("orchestrator.test")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError as exc:
        record = logger.makeRecord(
            logger.name, logging.WARNING, __file__, 1, "job %s moved", ("j1",), (type(exc), exc, exc.__traceback__),
            extra={"event": "job.completed", "job_id": "j1", "attempt": 2, "level": "shadowed", "when": object()},
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "WARNING" and data["logger"] == "orchestrator.test" and data["message"] == "job j1 moved"
    assert (data["event"], data["job_id"], data["attempt"]) == ("job.completed", "j1", 2)
    assert data["extra.level"] == "shadowed"  # an extra never hides a base key
    assert data["when"].startswith("<object object")
    assert "RuntimeError: boom" in data["exc_info"]
