"""What every command needs: who is acting, the schema, the database, a running orchestrator.

Settings given on the command line win over their ``ORCHESTRATOR_*``
environment variable, which wins over the ``--app`` object's own setting.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import trio
from pydantic import ValidationError

from .._database_url import check_database_url, redact_url
from .._errors import DatabaseUnavailable, InvalidInput, InvalidJobId
from .._models import Principal, parse_job_id
from .._orchestrator import DATABASE_URL_ENV, Orchestrator
from .._settings import Settings, apply_settings, resolve_settings
from ._exits import EXIT_DATABASE, EXIT_USAGE, CliError, one_line, validation_message

USER_ENV = "ORCHESTRATOR_USER"
ORG_ENV = "ORCHESTRATOR_ORG"
ROLE_ENV = "ORCHESTRATOR_ROLE"
DEFAULT_SCHEMA = "orchestrator"

T = TypeVar("T")


#: The command line's flag for each setting it has one for.
GLOBAL_SETTINGS = ("database_url", "schema", "log_level", "log_format")


def setting_flags(args: argparse.Namespace, names: Iterable[str] = GLOBAL_SETTINGS) -> dict[str, Any]:
    """The settings given as flags (``None``: not given)."""
    return {name: getattr(args, name, None) for name in names}


def settings_from(
    args: argparse.Namespace,
    only: Iterable[str] = ("database_url", "schema"),
    *,
    app: Orchestrator | None = None,
    app_name: str = "",
    flags: dict[str, Any] | None = None,
) -> Settings:
    """The settings ``only`` (flags > environment > ``--config`` file > app > defaults).

    Raises:
        InvalidSetting: naming the setting, where it came from and the value (exit 2).
    """
    wanted = set(only)
    given = setting_flags(args) if flags is None else flags
    return resolve_settings(
        flags={k: v for k, v in given.items() if k in wanted},
        config=getattr(args, "config", None),
        app=app,
        app_name=app_name,
        only=wanted,
    ).settings


def schema_from(args: argparse.Namespace) -> str:
    return settings_from(args, ["schema"]).schema


def principal_from(args: argparse.Namespace) -> Principal:
    user = args.user or os.environ.get(USER_ENV)
    org = args.org or os.environ.get(ORG_ENV)
    role = args.role or os.environ.get(ROLE_ENV) or "member"
    missing = [flag for flag, value in (("--user", user), ("--org", org)) if not value]
    if missing:
        raise CliError(
            f"who is acting? give {' and '.join(missing)} (or set {USER_ENV} / {ORG_ENV})",
            EXIT_USAGE,
        )
    if role not in ("member", "admin"):
        raise CliError(f"role {role!r} must be 'member' or 'admin' (from --role or {ROLE_ENV})", EXIT_USAGE)
    try:
        return Principal.model_validate({"user_id": user, "org_id": org, "role": role})
    except ValidationError as exc:
        raise CliError(validation_message(exc, "bad principal"), EXIT_USAGE) from None


def job_id_from(text: str) -> str:
    """Check a job id before connecting anywhere."""
    try:
        return str(parse_job_id(text))
    except InvalidJobId as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


#: What a command that only reads, cancels, prunes or manages tokens needs.
CLIENT_SETTINGS = (
    "database_url", "schema", "pool_size", "retention_completed", "retention_failed", "retention_cancelled",
    "prune_batch",
)  # fmt: skip


def plain_orchestrator(args: argparse.Namespace) -> Orchestrator:
    """An orchestrator with no handlers: enough to read, wait, cancel and prune."""
    orch = Orchestrator()
    apply_settings(orch, settings_from(args, CLIENT_SETTINGS), set(CLIENT_SETTINGS))
    return orch


def apply_global_settings(orch: Orchestrator, args: argparse.Namespace, app_name: str = "") -> None:
    """The database, schema and payload limits: flags win over the
    environment, which wins over the ``--config`` file, then the app's own."""
    names = {"database_url", "schema", "max_payload_bytes", "max_payload_depth", "pool_size"}
    apply_settings(orch, settings_from(args, names, app=orch, app_name=app_name), names)


@contextmanager
def naming_database(url: str | None) -> Iterator[None]:
    """An unavailable database, raised inside, as an error naming its URL (exit 6)."""
    try:
        yield
    except DatabaseUnavailable as exc:
        raise CliError(f"database unavailable ({redact_url(url)}): {exc}", EXIT_DATABASE) from exc


async def resolve_database(orch: Orchestrator) -> str:
    """The URL ``orch`` will use, starting the embedded server if needed.

    Raises:
        InvalidInput: the URL given is malformed (exit 2), before anything connects.
        CliError: the embedded PostgreSQL could not start (exit 6).
    """
    given = orch.database_url or os.environ.get(DATABASE_URL_ENV)
    if given:
        check_database_url(given)
    with naming_database(given):
        try:
            return await orch.resolve_database_url()
        except InvalidInput:
            raise
        except Exception as exc:
            raise DatabaseUnavailable(f"the embedded PostgreSQL could not start: {one_line(str(exc))}") from exc


@asynccontextmanager
async def session(orch: Orchestrator, *, work: bool = False) -> AsyncIterator[Orchestrator]:
    """``orch`` running on its database; an unavailable database names it."""
    url = await resolve_database(orch)
    with naming_database(url):
        async with orch.running(work=work):
            yield orch


def run_session(orch: Orchestrator, call: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` of ``await call()`` inside a :func:`session` of ``orch``."""

    async def run() -> T:
        async with session(orch):
            return await call()

    return trio.run(run)
