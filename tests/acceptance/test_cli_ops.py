"""The operations commands on the command line: explain, prune, config."""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pytest

from tests.acceptance.test_cli import (
    ALICE,
    APP,
    MALLORY_ADMIN,
    UNREACHABLE,
    background_worker,
    cli,
    json_lines,
    one_error_line,
    stop_with,
    submit,
    wait_for_text,
)
from tests.unit.test_settings import BAD_TEXT


async def test_explain_says_why_a_job_waits(database_url: str) -> None:
    job_id = await submit(database_url, "resize", {"width": 2, "height": 2}, ALICE, "--delay", "600")
    shown = await cli(database_url, "explain", job_id, *ALICE)
    assert shown.code == 0, shown
    assert shown.out.startswith("waiting for its run_at: due in"), shown
    assert "reason" in shown.out and "scheduled" in shown.out
    as_json = await cli(database_url, "explain", job_id, *ALICE, "--json")
    assert as_json.code == 0, as_json
    data = as_json.json()
    assert data["reason"] == "scheduled" and data["job_id"] == job_id and 590 < data["due_in_seconds"] <= 600


async def test_explain_refuses_bad_unknown_and_foreign_ids(database_url: str) -> None:
    bad = await cli(database_url, "explain", "nope", *ALICE)
    assert bad.code == 2, bad
    assert "job_id" in one_error_line(bad) and "'nope'" in one_error_line(bad)
    unknown = str(uuid.uuid4())
    missing = await cli(database_url, "explain", unknown, *ALICE)
    assert missing.code == 4 and unknown in one_error_line(missing), missing
    job_id = await submit(database_url, "resize", {"width": 2, "height": 2})
    foreign = await cli(database_url, "explain", job_id, *MALLORY_ADMIN)
    assert foreign.code == 4, foreign


async def test_prune_by_hand_dry_run_then_for_real(database_url: str) -> None:
    from orchestrator._retention import DAY
    from tests.integration.test_retention import add_finished, all_ids

    await cli(database_url, "migrate")
    old = await add_finished(database_url, "completed", 3, 8 * DAY)
    old_failed = await add_finished(database_url, "failed", 2, 40 * DAY)
    young = await add_finished(database_url, "cancelled", 2, 3600)

    dry = await cli(database_url, "prune", "--dry-run")
    assert dry.code == 0, dry
    assert "completed  would delete 3 (finished more than 1w ago)" in dry.out, dry
    assert "failed     would delete 2 (finished more than 30d ago)" in dry.out, dry
    assert await all_ids(database_url) == old | old_failed | young

    only = await cli(database_url, "prune", "--state", "failed", "--json")
    assert only.code == 0, only
    assert only.json()["counts"] == {"failed": 2}
    assert await all_ids(database_url) == old | young

    short = await cli(database_url, "prune", "--older-than", "30m")
    assert short.code == 0, short
    assert "completed  deleted 3 (finished more than 30m ago)" in short.out
    assert "cancelled  deleted 2" in short.out
    assert await all_ids(database_url) == set()


@pytest.mark.parametrize("bad", ["soon", "-3d", "7x", "", "1e400", "200y", "nan"])
async def test_prune_refuses_a_bad_duration_naming_the_option(database_url: str, bad: str) -> None:
    from orchestrator._retention import DAY
    from tests.integration.test_retention import add_finished, all_ids

    await cli(database_url, "migrate")
    kept = await add_finished(database_url, "completed", 2, 100 * DAY)
    result = await cli(database_url, "prune", "--older-than", bad)
    assert result.code == 2, result
    assert "argument --older-than" in result.err, result
    assert await all_ids(database_url) == kept


async def test_prune_refuses_a_bad_state(database_url: str) -> None:
    result = await cli(database_url, "prune", "--state", "queued")
    assert result.code == 2 and "argument --state" in result.err, result


async def test_config_show_prints_each_value_and_its_source_with_secrets_masked(tmp_path: Path) -> None:
    config = tmp_path / "orchestrator.toml"
    config.write_text(
        'database_url = "postgresql://app:hunter2@db.example/jobs"\nconcurrency = 4\nretention_completed = "2d"\n'
        'queues = { default = 2 }\n'
    )
    shown = await cli(
        None, "config", "show", "--config", str(config), "--app", APP, "--shutdown-grace", "3",
        ORCHESTRATOR_CONCURRENCY="6", ORCHESTRATOR_PRUNE_INTERVAL="15m",
    )  # fmt: skip
    assert shown.code == 0, shown
    assert "hunter2" not in shown.out
    lines = {line.split()[0]: line.split()[1:] for line in shown.out.splitlines()[1:]}
    assert lines["database_url"] == ["postgresql://app:***@db.example/jobs", "file", str(config)]
    assert lines["concurrency"] == ["6", "env", "ORCHESTRATOR_CONCURRENCY"]
    assert lines["shutdown_grace"] == ["3s", "flag", "--shutdown-grace"]
    assert lines["retention_completed"] == ["2d", "file", str(config)]
    assert lines["prune_interval"] == ["15m", "env", "ORCHESTRATOR_PRUNE_INTERVAL"]
    assert lines["poll_interval"] == ["0.2s", "app", APP]  # the app's own, over the default
    assert lines["lease_seconds"] == ["30s", "default"]

    as_json = await cli(None, "config", "show", "--json", ORCHESTRATOR_DATABASE_URL="postgresql://u:pw@h/d")
    assert as_json.code == 0, as_json
    data = as_json.json()
    assert data["database_url"] == {"value": "postgresql://u:***@h/d", "source": "env", "from": "ORCHESTRATOR_DATABASE_URL"}
    assert data["concurrency"] == {"value": 10, "source": "default", "from": None}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("concurrency = 0\n", "bad concurrency (from {config}): must be between 1 and 10,000, got 0"),
        ('prune_interval = "soon"\n', "bad prune_interval (from {config}): must be a duration"),
        ('http = "nowhere"\n', "bad http (from {config}):"),
        ("concurency = 2\n", "unknown setting 'concurency'"),
        ("concurrency = [\n", "not valid TOML"),
    ],
)
async def test_run_with_a_bad_config_file_exits_2_before_connecting(tmp_path: Path, text: str, complaint: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = await cli(UNREACHABLE, "run", "--app", APP, "--config", str(config))
    assert result.code == 2, result
    assert complaint.format(config=config) in one_error_line(result), result


async def test_run_takes_its_settings_from_the_config_file(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "orchestrator.toml"
    config.write_text(
        'concurrency = 2\nqueues = ["default"]\nshutdown_grace = 1.5\nlog_format = "json"\nlog_level = "INFO"\n'
        'node_id = "from-the-file"\nprune_interval = "never"\n'
    )
    log = tmp_path / "worker.log"
    async with background_worker(database_url, log, "--config", str(config), ORCHESTRATOR_CONCURRENCY="3") as worker:
        await wait_for_text(log, '"worker.started"', worker)
        job_id = await submit(database_url, "resize", {"width": 2, "height": 3})
        done = await cli(database_url, "wait", job_id, *ALICE, "--json", "--timeout", "60")
        assert done.code == 0 and done.json()["result"] == {"pixels": 6}, done
        assert await stop_with(worker, signal.SIGTERM) < 30
    [started] = [r for r in json_lines(log.read_text()) if r.get("event") == "worker.started"]
    assert started["concurrency"] == 3  # the environment's, over the file's 2
    assert started["node"] == "from-the-file" and started["shutdown_grace"] == 1.5
    assert started["queues"] == {"default": 3}


async def test_prune_uses_the_configured_retention(database_url: str, tmp_path: Path) -> None:
    from tests.integration.test_retention import add_finished, all_ids

    await cli(database_url, "migrate")
    old = await add_finished(database_url, "completed", 2, 7200)
    young = await add_finished(database_url, "completed", 1, 60)
    config = tmp_path / "orchestrator.toml"
    config.write_text('retention_completed = "1h"\nretention_failed = "never"\n')
    result = await cli(database_url, "prune", "--config", str(config), "--json")
    assert result.code == 0, result
    assert result.json()["counts"] == {"completed": 2, "cancelled": 0}  # failed: kept forever
    assert await all_ids(database_url) == young and old
    bad = await cli(database_url, "prune", ORCHESTRATOR_RETENTION_FAILED="-1d")
    assert bad.code == 2 and "bad retention_failed (from ORCHESTRATOR_RETENTION_FAILED)" in one_error_line(bad), bad


async def test_schedules_lists_them_as_a_table_and_as_json(database_url: str) -> None:
    from tests.pg import fetch

    empty = await cli(database_url, "schedules")
    assert empty.code == 0 and empty.out.strip() == "no periodic schedules (a daemon registers each one it runs)", empty
    await fetch(
        database_url,
        "INSERT INTO orchestrator.periodic_schedules (name, kind, cron, timezone, missed, last_period) VALUES"
        " ('cleanup', 'resize', '*/5 * * * *', 'UTC', 'enqueue_once', '2024-01-01 10:00+00'),"
        " ('morning', 'resize', '0 9 * * 1-5', 'Europe/Paris', 'skip', '2024-01-01 08:00+00'),"
        " ('broken', 'resize', 'soon', 'UTC', 'skip', NULL)",
    )
    table = await cli(database_url, "schedules")
    as_json = await cli(database_url, "schedules", "--json")
    assert table.code == 0 and as_json.code == 0, (table, as_json)
    header, *lines = table.out.strip().splitlines()
    assert header.split() == ["NAME", "KIND", "CRON", "TIMEZONE", "MISSED", "LAST", "PERIOD", "NEXT", "PERIOD", "DUE"]
    assert [line.split()[0] for line in lines] == ["broken", "cleanup", "morning"]
    assert "2024-01-01T10:00:00+00:00  2024-01-01T10:05:00+00:00  overdue by" in lines[1]
    assert "Europe/Paris" in lines[2] and "2024-01-02T08:00:00+00:00" in lines[2]
    assert "unknown (cron:" in lines[0]
    data = {s["name"]: s for s in as_json.json()}
    assert data["morning"]["missed"] == "skip" and data["morning"]["next_period"] == "2024-01-02T08:00:00Z"
    assert data["cleanup"]["due_in_seconds"] < 0 and data["broken"]["next_period"] is None


async def test_schedules_with_a_bad_database_url_exits_2() -> None:
    result = await cli("http://db.example/x", "schedules")
    assert result.code == 2 and "database_url" in one_error_line(result), result


#: Flags whose values argparse checks itself (its own one-line error, exit 2).
ARGPARSE_CHECKED = {"concurrency", "queues", "shutdown_grace", "http_body_limit", "log_level", "log_format"}


def test_every_setting_is_a_flag_of_run() -> None:
    from orchestrator._cli._parser import build_parser
    from orchestrator._settings import SETTING_NAMES

    parser = build_parser()
    args = parser.parse_args(["run", "--app", APP])
    for name in SETTING_NAMES:
        assert hasattr(args, name), f"run has no flag for the setting {name}"
    spelled = parser.parse_args(
        ["run", "--app", APP, "--lease-seconds", "9s", "--no-work", "--node-id", "n1", "--no-tracing"]
    )
    assert (spelled.lease_seconds, spelled.work, spelled.node_id, spelled.tracing) == ("9s", False, "n1", False)


@pytest.mark.parametrize("name", sorted(set(BAD_TEXT) - {"work", "tracing"}))
async def test_a_bad_value_of_any_flag_of_run_exits_2_naming_it_before_connecting(name: str) -> None:
    flag, bad = "--" + name.replace("_", "-"), BAD_TEXT[name]
    # The database is unreachable: a start would exit 6, not 2.
    result = await cli(UNREACHABLE, "run", "--app", APP, f"{flag}={bad}")
    line = one_error_line(result)
    assert result.code == 2, result
    if name in ARGPARSE_CHECKED:
        # argparse's own words ("queue 'default': limit 0 must be at least 1").
        assert f"argument {flag}" in line, line
    else:
        assert line.startswith(f"orchestrator: bad {name} (from {flag}): "), line
        shown = bad if name != "database_url" else "http://db.example"
        assert repr(shown) in line or shown in line, line
    assert "started" not in result.err


async def test_a_new_flag_wins_over_its_variable_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "orchestrator.toml"
    config.write_text('lease_seconds = "20s"\nretention_failed = "3d"\nnode_id = "from-file"\nwork = false\n')
    result = await cli(
        None, "config", "show", "--json", "--config", str(config), "--lease-seconds", "5s",
        "--retention-failed", "never", "--node-id", "from-flag", "--work",
        ORCHESTRATOR_LEASE_SECONDS="10s", ORCHESTRATOR_NODE_ID="from-env", ORCHESTRATOR_POOL_SIZE="7",
    )  # fmt: skip
    assert result.code == 0, result
    data = result.json()
    assert data["lease_seconds"] == {"value": 5.0, "source": "flag", "from": "--lease-seconds"}
    assert data["retention_failed"] == {"value": None, "source": "flag", "from": "--retention-failed"}
    assert data["node_id"] == {"value": "from-flag", "source": "flag", "from": "--node-id"}
    assert data["work"] == {"value": True, "source": "flag", "from": "--work"}
    assert data["pool_size"] == {"value": 7, "source": "env", "from": "ORCHESTRATOR_POOL_SIZE"}


async def test_run_applies_the_new_flags(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    async with background_worker(
        database_url, log, "--node-id", "flagged-node", "--lease-seconds", "12s", "--poll-interval", "250ms",
        "--log-format", "json",
    ) as worker:  # fmt: skip
        await wait_for_text(log, '"worker.started"', worker)
        job_id = await submit(database_url, "resize", {"width": 2, "height": 2})
        done = await cli(database_url, "wait", job_id, *ALICE, "--json", "--timeout", "60")
        assert done.code == 0, done
        assert await stop_with(worker, signal.SIGTERM) < 30
    [started] = [r for r in json_lines(log.read_text()) if r.get("event") == "worker.started"]
    assert started["node"] == "flagged-node"
    from tests.pg import fetch

    [node] = await fetch(database_url, "SELECT lease_seconds FROM orchestrator.nodes WHERE node_id = 'flagged-node'")
    assert node["lease_seconds"] == 12
