"""The orchestrator's exceptions: each names what was wrong."""

from __future__ import annotations


def quote_prefix(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to about ``limit`` characters, for error messages.

    An error must say which value was refused without repeating a huge one
    back whole.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class OrchestratorError(Exception):
    """Base of every error this package raises on purpose."""


class NotAuthorized(OrchestratorError):
    """The principal may not do this to the job; nothing was changed."""


class JobNotFound(OrchestratorError, LookupError):
    """No job with this id exists in the principal's organisation."""


class UnknownJobKind(OrchestratorError, LookupError):
    """No handler is registered for this kind of job; nothing was written."""


class InvalidInput(OrchestratorError, ValueError):
    """A value given to the orchestrator is not allowed; nothing was written.

    Every entry point (the library, the asyncio client, the command line,
    HTTP) refuses bad values with this error, through one validation boundary.

    Attributes:
        field: the name of the offending field (``"payload.items[3]"``,
            ``"delay"``, ``"kind"``...).
        reason: what is allowed, in words.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidJobId(InvalidInput):
    """A job id that is not a UUID."""

    def __init__(self, reason: str) -> None:
        super().__init__("job_id", reason)


class DatabaseUnavailable(OrchestratorError, ConnectionError):
    """PostgreSQL could not be reached, or the connection was lost."""


class StoreError(OrchestratorError):
    """PostgreSQL rejected a statement (a constraint, a missing schema...)."""

    def __init__(self, message: str, *, sqlstate: str | None = None, constraint: str | None = None):
        super().__init__(message)
        self.sqlstate = sqlstate
        self.constraint = constraint


class MigrationError(OrchestratorError):
    """A migration file could not be found or applied."""
