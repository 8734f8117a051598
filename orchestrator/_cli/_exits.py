"""Exit codes, and the one-line message and code for every error a command raises.

    0  success
    1  other error (a rejected statement, a timeout, a bug)
    2  bad usage or bad input: a malformed argument, database URL, job id or
       JSON payload, a payload failing validation (InvalidInput, pydantic's
       ValidationError), an unknown job kind, a bad --app
    3  not authorised (NotAuthorized)
    4  not found: no such job in the organisation (JobNotFound)
    5  the job failed (``wait``), or ``cancel`` was refused because the job
       had already ended
    6  the database is unavailable (a well-formed URL, no answer)
    130 interrupted (Ctrl-C) while not running the daemon
"""

from __future__ import annotations

import trio
from pydantic import ValidationError

from .._app import AppLoadError, SettingError
from .._errors import (
    DatabaseUnavailable,
    InvalidInput,
    InvalidJobId,
    JobNotFound,
    NotAuthorized,
    OrchestratorError,
    UnknownJobKind,
    quote_prefix,
)
from .._groups import leaves

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_AUTHORIZED = 3
EXIT_NOT_FOUND = 4
EXIT_JOB_FAILED = 5
EXIT_DATABASE = 6
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """An error with its exit code and a one-line message."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def one_line(text: str) -> str:
    return " ".join(text.split())


def validation_message(exc: ValidationError, context: str) -> str:
    """One line naming every field that failed and why."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(the whole value)"
        problem = f"{where}: {error.get('msg', 'invalid')}"
        if error.get("type") != "missing" and "input" in error:
            problem += f" (got {quote_prefix(error['input'], limit=60)})"
        problems.append(problem)
    return f"{context}: " + "; ".join(problems)


def meaningful_error(exc: BaseException) -> BaseException:
    """The one meaningful exception inside (nested) exception groups."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    found = [e for e in leaves(exc) if not isinstance(e, trio.Cancelled)]
    for kind in (KeyboardInterrupt, SystemExit):
        for leaf in found:
            if isinstance(leaf, kind):
                return leaf
    if found and all(type(leaf) is type(found[0]) for leaf in found):
        return found[0]
    return exc


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and one-line message for ``exc``."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, (AppLoadError, SettingError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ValidationError):
        return EXIT_USAGE, validation_message(exc, f"invalid {exc.title}")
    if isinstance(exc, (InvalidJobId, UnknownJobKind)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, InvalidInput):
        return EXIT_USAGE, f"invalid {exc.field}: {exc.reason}"
    if isinstance(exc, NotAuthorized):
        return EXIT_NOT_AUTHORIZED, f"not authorised: {exc}"
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND, f"not found: {exc}"
    if isinstance(exc, DatabaseUnavailable):
        return EXIT_DATABASE, f"database unavailable: {exc}"
    if isinstance(exc, OrchestratorError):
        return EXIT_ERROR, str(exc)
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, BaseExceptionGroup):
        inner = "; ".join(f"{type(e).__name__}: {e}" for e in leaves(exc) if not isinstance(e, trio.Cancelled))
        return EXIT_ERROR, f"several errors: {inner}"
    return EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc}"
