"""The orchestrator's exceptions: each names what was wrong."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of every error this package raises on purpose."""


class NotAuthorized(OrchestratorError):
    """The principal may not do this to the job; nothing was changed."""


class JobNotFound(OrchestratorError, LookupError):
    """No job with this id exists in the principal's organisation."""


class UnknownJobKind(OrchestratorError, LookupError):
    """No handler is registered for this kind of job; nothing was written."""


class InvalidJobId(OrchestratorError, ValueError):
    """A job id that is not a UUID."""


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
