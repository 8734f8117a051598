"""What every command needs: who is acting, the schema, the database, a running orchestrator.

Settings given on the command line win over their ``ORCHESTRATOR_*``
environment variable, which wins over the ``--app`` object's own setting.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

import trio
from pydantic import ValidationError

from .._app import SCHEMA_ENV
from .._database_url import redact_url
from .._errors import DatabaseUnavailable, InvalidJobId
from .._models import Principal, parse_job_id
from .._orchestrator import DATABASE_URL_ENV, Orchestrator
from ._exits import EXIT_DATABASE, EXIT_USAGE, CliError, one_line, validation_message

USER_ENV = "ORCHESTRATOR_USER"
ORG_ENV = "ORCHESTRATOR_ORG"
ROLE_ENV = "ORCHESTRATOR_ROLE"
DEFAULT_SCHEMA = "orchestrator"

T = TypeVar("T")


def schema_from(args: argparse.Namespace, fallback: str = DEFAULT_SCHEMA) -> str:
    from .._store import check_schema_name

    schema = args.schema or os.environ.get(SCHEMA_ENV) or fallback
    try:
        return check_schema_name(schema)
    except ValueError as exc:
        raise CliError(f"bad --schema: {exc}", EXIT_USAGE) from None


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


def plain_orchestrator(args: argparse.Namespace) -> Orchestrator:
    """An orchestrator with no handlers: enough to read, wait and cancel."""
    return Orchestrator(args.database_url, schema=schema_from(args))


def apply_global_settings(orch: Orchestrator, args: argparse.Namespace) -> None:
    """Settings given on the command line win over the environment, which
    wins over the app's own."""
    database_url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if database_url:
        orch.database_url = database_url
    orch.schema = schema_from(args, fallback=orch.schema)


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
        CliError: the embedded PostgreSQL could not start (exit 6).
    """
    with naming_database(orch.database_url or os.environ.get(DATABASE_URL_ENV)):
        try:
            return await orch.resolve_database_url()
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
