"""Database URLs are checked for their form before anything connects."""

from __future__ import annotations

import pytest

from orchestrator import InvalidInput, Orchestrator
from orchestrator._database_url import check_database_url, redact_url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "postgres://u:p@db.example/app?sslmode=require",
        "postgresql://postgres@/postgres?host=/tmp/socket-dir",
        "postgresql:///app",
    ],
)
def test_well_formed_urls_pass(url: str) -> None:
    assert check_database_url(url) == url


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://user:secret@db.example/app", "must start with postgresql:// or postgres://"),
        ("db.example/app", "must start with postgresql:// or postgres://"),
        ("postgresql://user:secret@db.example:99999/app", "not a well-formed URL"),
        ("postgresql://db.example/a\x00b", "control characters"),
        ("postgresql://db.example/a b", "spaces"),
        ("", "empty"),
    ],
)
def test_malformed_urls_are_refused_naming_the_field_not_the_password(url: str, complaint: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_database_url(url)
    assert caught.value.field == "database_url"
    assert complaint in caught.value.reason
    assert "secret" not in str(caught.value)


def test_a_huge_url_is_quoted_by_a_prefix() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_database_url("mysql://" + "x" * 10_000)
    assert len(str(caught.value)) < 200


async def test_the_orchestrator_refuses_a_malformed_url_before_connecting() -> None:
    orch = Orchestrator("mysql://user:secret@db.example/app")
    with pytest.raises(InvalidInput, match="database_url"):
        async with orch.running():
            pass


def test_redact_hides_the_password() -> None:
    assert redact_url("postgresql://u:secret@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact_url(None) == "(none)"
