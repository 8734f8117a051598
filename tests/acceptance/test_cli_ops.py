"""The operations commands on the command line: explain, prune, config."""

from __future__ import annotations

import uuid

import pytest

from tests.acceptance.test_cli import ALICE, MALLORY_ADMIN, cli, one_error_line, submit


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
