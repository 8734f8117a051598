"""Settings: each source, their precedence, masking, and a bad value for every setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import Orchestrator
from orchestrator._settings import (
    SETTING_NAMES,
    InvalidSetting,
    apply_settings,
    describe_settings,
    mask_secrets,
    resolve_settings,
)

SECRET = "hunter2"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestrator.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_come_from_nowhere() -> None:
    resolved = resolve_settings(environ={})
    assert resolved.settings.concurrency == 10 and resolved.settings.retention_completed == 7 * 86_400
    assert {s.kind for s in resolved.sources.values()} == {"default"}


def test_each_source_gives_values_of_its_own(tmp_path: Path) -> None:
    config = write(tmp_path, 'pool_size = 7\nqueues = { default = 2, bulk = 5 }\nretention_failed = "2w"\n')
    app = Orchestrator(lease_seconds=12.0, prune_interval=None)
    resolved = resolve_settings(
        flags={"concurrency": 3, "http": "127.0.0.1:8080"},
        environ={"ORCHESTRATOR_SHUTDOWN_GRACE": "4.5", "ORCHESTRATOR_LOG_FORMAT": "JSON", "ORCHESTRATOR_WORK": "no"},
        config=config,
        app=app,
        app_name="svc:orch",
    )
    s, src = resolved.settings, resolved.sources
    assert (s.concurrency, src["concurrency"].kind, src["concurrency"].name) == (3, "flag", "--concurrency")
    assert (s.http, src["http"].kind) == ("127.0.0.1:8080", "flag")
    assert (s.shutdown_grace, src["shutdown_grace"].name) == (4.5, "ORCHESTRATOR_SHUTDOWN_GRACE")
    assert (s.log_format, s.work) == ("json", False)
    assert (s.pool_size, src["pool_size"].kind, src["pool_size"].name) == (7, "file", str(config))
    assert s.queues == {"default": 2, "bulk": 5}
    assert s.retention_failed == 14 * 86_400
    assert (s.lease_seconds, src["lease_seconds"].kind, src["lease_seconds"].name) == (12.0, "app", "svc:orch")
    assert (s.prune_interval, src["prune_interval"].kind) == (None, "app")
    assert src["max_payload_bytes"].kind == "default"


def test_precedence_is_flags_environment_file_app_default(tmp_path: Path) -> None:
    config = write(tmp_path, "concurrency = 3\n")
    app = Orchestrator(concurrency=4)
    env = {"ORCHESTRATOR_CONCURRENCY": "2"}

    def winner(**kwargs: Any) -> tuple[int, str]:
        resolved = resolve_settings(**kwargs)
        return resolved.settings.concurrency, resolved.sources["concurrency"].kind

    assert winner(flags={"concurrency": 1}, environ=env, config=config, app=app) == (1, "flag")
    assert winner(flags={"concurrency": None}, environ=env, config=config, app=app) == (2, "env")
    assert winner(environ={}, config=config, app=app) == (3, "file")
    assert winner(environ={}, app=app) == (4, "app")
    assert winner(environ={}, app=Orchestrator()) == (10, "default")


def test_an_empty_variable_counts_as_unset() -> None:
    resolved = resolve_settings(environ={"ORCHESTRATOR_CONCURRENCY": "  ", "ORCHESTRATOR_SCHEMA": ""})
    assert resolved.settings.concurrency == 10 and resolved.sources["schema"].kind == "default"


def test_settings_apply_to_the_orchestrator(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        'node_id = "n7"\nconcurrency = 6\nqueues = ["a", "b"]\npoll_interval = "250ms"\nmax_payload_bytes = 4096\n'
        'retention_completed = "never"\nprune_interval = "15m"\nprune_batch = 50\n',
    )
    orch = Orchestrator()
    apply_settings(orch, resolve_settings(environ={}, config=config, app=orch).settings)
    assert (orch.node_id, orch.concurrency, orch.queues, orch.poll_interval) == ("n7", 6, ["a", "b"], 0.25)
    assert orch.payload_limits.max_bytes == 4096
    assert (orch.retention.completed, orch.retention.failed) == (None, 30 * 86_400)
    assert (orch.prune_interval, orch.prune_batch) == (900, 50)


def test_secrets_are_masked_when_shown() -> None:
    url = f"postgresql://app:{SECRET}@db.example:5432/jobs?sslmode=require&password={SECRET}"
    resolved = resolve_settings(environ={"ORCHESTRATOR_DATABASE_URL": url})
    assert resolved.settings.database_url == url  # used as given
    [row] = [r for r in describe_settings(resolved) if r["setting"] == "database_url"]
    assert SECRET not in str(row) and row["value"].startswith("postgresql://app:***@db.example:5432/jobs?")
    assert "password=***" in row["value"] and "sslmode=require" in row["value"]
    assert mask_secrets(f"postgresql://u@h/d?token={SECRET}") == "postgresql://u@h/d?token=***"


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(InvalidSetting) as refused:
        resolve_settings(environ={"ORCHESTRATOR_DATABASE_URL": f"mysql://app:{SECRET}@db/x"})
    assert refused.value.field == "database_url" and SECRET not in str(refused.value)
    assert "ORCHESTRATOR_DATABASE_URL" in str(refused.value)


#: A bad value for every setting, as text (the environment, a flag).
BAD_TEXT = {
    "database_url": "http://db.example/app",
    "schema": "Not-A-Schema",
    "node_id": "node\x01one",
    "concurrency": "lots",
    "queues": "default=0",
    "poll_interval": "0s",
    "lease_seconds": "soon",
    "pool_size": "500",
    "shutdown_grace": "-1",
    "max_payload_bytes": "1",
    "max_payload_depth": "0",
    "retention_completed": "-3d",
    "retention_failed": "7x",
    "retention_cancelled": "200000d",
    "prune_interval": "0",
    "prune_batch": "0",
    "log_level": "LOUD",
    "log_format": "xml",
    "http": "no-port-here",
    "http_body_limit": "0",
    "metrics": "9090",
    "metrics_interval": "-5s",
    "work": "maybe",
    "tracing": "sometimes",
}

#: A bad value for every setting, typed (a TOML file, the app).
BAD_TYPED = {
    "database_url": 5432,
    "schema": 7,
    "node_id": ["n1"],
    "concurrency": 0,
    "queues": 5,
    "poll_interval": -1.0,
    "lease_seconds": 0,
    "pool_size": 1.5,
    "shutdown_grace": "later",
    "max_payload_bytes": True,
    "max_payload_depth": 10_000,
    "retention_completed": -1,
    "retention_failed": "30 days",
    "retention_cancelled": [30],
    "prune_interval": 10**9,
    "prune_batch": 10**7,
    "log_level": 10,
    "log_format": "yaml",
    "http": 8080,
    "http_body_limit": -5,
    "metrics": 9090,
    "metrics_interval": 0,
    "work": 2,
    "tracing": "yes please",
}


def test_every_setting_has_bad_values_here() -> None:
    assert set(BAD_TEXT) == set(SETTING_NAMES) == set(BAD_TYPED)


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
def test_a_bad_variable_is_refused_naming_the_setting_the_variable_and_the_value(name: str) -> None:
    variable = f"ORCHESTRATOR_{name.upper()}"
    with pytest.raises(InvalidSetting) as refused:
        resolve_settings(environ={variable: BAD_TEXT[name]})
    message = str(refused.value)
    assert refused.value.field == name
    assert message.startswith(f"bad {name} (from {variable}): "), message
    value = BAD_TEXT[name]
    assert repr(value) in message or value in message, message


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
def test_a_bad_flag_is_refused_naming_the_flag(name: str) -> None:
    with pytest.raises(InvalidSetting) as refused:
        resolve_settings(flags={name: BAD_TEXT[name]}, environ={})
    assert str(refused.value).startswith(f"bad {name} (from --{name.replace('_', '-')}): ")


@pytest.mark.parametrize("name", sorted(BAD_TYPED))
def test_a_bad_value_in_the_file_is_refused_naming_the_file(name: str, tmp_path: Path) -> None:
    import json

    value = BAD_TYPED[name]
    literal = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
    config = write(tmp_path, f"{name} = {literal}\n")
    with pytest.raises(InvalidSetting) as refused:
        resolve_settings(environ={}, config=config)
    message = str(refused.value)
    assert refused.value.field == name and message.startswith(f"bad {name} (from {config}): "), message
    assert repr(value) in message or str(value) in message, message


def test_a_bad_setting_of_the_app_names_the_app() -> None:
    app = Orchestrator()
    app.concurrency = 0
    with pytest.raises(InvalidSetting, match=r"bad concurrency \(from the app svc:orch\): .*got 0"):
        resolve_settings(environ={}, app=app, app_name="svc:orch")


def test_a_flag_overrides_a_bad_variable() -> None:
    resolved = resolve_settings(flags={"concurrency": 3}, environ={"ORCHESTRATOR_CONCURRENCY": "lots"})
    assert resolved.settings.concurrency == 3


def test_only_the_settings_asked_for_are_checked() -> None:
    resolved = resolve_settings(environ={"ORCHESTRATOR_CONCURRENCY": "lots"}, only={"log_level"})
    assert resolved.settings.concurrency == 10


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("concurency = 3\n", "unknown setting 'concurency'"),
        ("concurrency = \n", "not valid TOML"),
        ("[retention]\ncompleted = 3\n", "unknown setting 'retention'"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, text: str, complaint: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(InvalidSetting) as refused:
        resolve_settings(environ={}, config=config)
    assert complaint in str(refused.value) and str(config) in str(refused.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InvalidSetting, match="cannot read the file"):
        resolve_settings(environ={}, config=tmp_path / "absent.toml")


def test_no_work_is_named_as_given() -> None:
    resolved = resolve_settings(flags={"work": False}, environ={"ORCHESTRATOR_WORK": "true"})
    assert resolved.settings.work is False and resolved.sources["work"].name == "--no-work"
    resolved = resolve_settings(flags={"work": True}, environ={"ORCHESTRATOR_WORK": "false"})
    assert resolved.settings.work is True and resolved.sources["work"].name == "--work"


def test_tracing_is_on_by_default_and_off_from_the_environment_or_a_flag() -> None:
    orch = Orchestrator()
    apply_settings(orch, resolve_settings(environ={}, app=orch).settings)
    assert orch.tracing is True
    apply_settings(orch, resolve_settings(environ={"ORCHESTRATOR_TRACING": "false"}, app=orch).settings)
    assert orch.tracing is False
    resolved = resolve_settings(flags={"tracing": True}, environ={"ORCHESTRATOR_TRACING": "false"}, app=orch)
    assert resolved.settings.tracing is True and resolved.sources["tracing"].name == "--tracing"
