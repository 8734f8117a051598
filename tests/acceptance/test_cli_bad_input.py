"""Hostile input on the command line: exit 2 with one short line naming the
field, no traceback, nothing written; exit 6 only for a well-formed database
URL whose server does not answer."""

from __future__ import annotations

import json

import pytest

from tests.acceptance.test_cli import ALICE, APP, UNREACHABLE, Result, cli, count_jobs, one_error_line

#: An error line may quote a prefix of the input, never the whole of a huge one.
SHORT = 400

def refused(result: Result, field: str) -> str:
    assert result.code == 2, result
    line = one_error_line(result)
    assert field in line, line
    assert len(line) < SHORT, line
    return line


async def submit(database_url: str, kind: str, payload: str, *more: str) -> Result:
    return await cli(database_url, "submit", kind, payload, "--app", APP, *ALICE, *more)


async def test_a_deeply_nested_payload_exits_2(database_url: str) -> None:
    deep = "[" * 20_000 + "]" * 20_000
    line = refused(await submit(database_url, "resize", deep), "payload")
    assert "nested too deeply" in line
    assert await count_jobs(database_url) == 0


async def test_a_huge_malformed_payload_is_not_repeated_whole(database_url: str) -> None:
    huge = '{"width": "' + "x" * 100_000
    line = refused(await submit(database_url, "resize", huge), "payload")
    assert "not valid JSON" in line
    assert await count_jobs(database_url) == 0


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user:secret@db.example/app",
        "http://db.example/app",
        "postgresql://db.example:99999/app",
        "postgresql://db.example/my app",
        "not a url at all",
    ],
)
async def test_a_malformed_database_url_exits_2_without_its_password(database_url: str, url: str) -> None:
    for args in (["status", "7b0c2f5e-8f43-4a57-9d6e-1e1f0e7a2f11", *ALICE], ["migrate"], ["run", "--app", APP]):
        line = refused(await cli(None, "--database-url", url, *args), "database_url")
        assert "secret" not in line, line
    result = await cli(None, "submit", "resize", '{"width": 1, "height": 2}', "--app", APP, *ALICE, ORCHESTRATOR_DATABASE_URL=url)
    refused(result, "database_url")
    assert await count_jobs(database_url) == 0


async def test_a_well_formed_but_unreachable_database_still_exits_6() -> None:
    result = await cli(None, "--database-url", UNREACHABLE, "jobs", *ALICE)
    assert result.code == 6, result
    assert "database unavailable" in one_error_line(result)


async def test_an_out_of_range_priority_exits_2(database_url: str) -> None:
    refused(await submit(database_url, "resize", '{"width": 1, "height": 2}', "--priority", "99999999999"), "priority")
    assert await count_jobs(database_url) == 0


async def test_an_out_of_range_delay_exits_2(database_url: str) -> None:
    refused(await submit(database_url, "resize", '{"width": 1, "height": 2}', "--delay", "1e12"), "delay")
    assert await count_jobs(database_url) == 0


async def test_a_nul_character_in_the_payload_exits_2(database_url: str) -> None:
    refused(await submit(database_url, "explode", json.dumps({"reason": "a\u0000b"})), "payload")
    assert await count_jobs(database_url) == 0


@pytest.mark.parametrize(
    ("kind", "payload", "more", "field"),
    [
        ("resize", '{"width": NaN, "height": 2}', [], "width"),
        ("resize", '{"width": 1e400, "height": 2}', [], "width"),
        ("resize", '{"width": ' + "9" * 5000 + ', "height": 2}', [], "payload"),
        ("resize", '{"width": 1, "height": 2}', ["--queue", ""], "queue"),
        ("resize", '{"width": 1, "height": 2}', ["--delay", "-5"], "--delay"),
        ("resize", '{"width": 1, "height": 2}', ["--delay", "nan"], "--delay"),
        ("resize", '{"width": 1, "height": 2}', ["--max-attempts", "0"], "--max-attempts"),
        ("resize", '{"width": 1, "height": 2}', ["--priority", "true"], "--priority"),
        ("res\x01ize", "{}", [], "kind"),
        ("k" * 10_000, "{}", [], "kind"),
    ],
)
async def test_other_hostile_submissions_exit_2_naming_the_field(
    database_url: str, kind: str, payload: str, more: list[str], field: str
) -> None:
    line = refused(await submit(database_url, kind, payload, *more), field)
    assert "\x01" not in line, "a control character is shown escaped"
    assert await count_jobs(database_url) == 0


async def test_a_huge_job_id_is_refused_with_a_prefix_of_it(database_url: str) -> None:
    line = refused(await cli(database_url, "status", "x" * 10_000, *ALICE), "job_id")
    assert "10002 characters" in line
