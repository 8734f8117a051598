"""Listing jobs page by page, newest first, with a keyset cursor.

The cursor is the ``(created_at, id)`` of the last job of a page, encoded as
an opaque URL-safe string. Jobs submitted while a client pages sort before
it, so a listing neither repeats nor skips a job (offsets would do both).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from ._errors import InvalidInput, quote_prefix
from ._lifecycle import JobState
from ._models import JobRecord, Principal

if TYPE_CHECKING:
    from ._store import Store

#: Most jobs one page holds.
PAGE_LIMIT = 500


class JobPage(BaseModel):
    """One page of jobs, and the cursor of the next one (``None`` at the end)."""

    model_config = ConfigDict(frozen=True)

    jobs: list[JobRecord]
    next_cursor: str | None


def encode_cursor(record: JobRecord) -> str:
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The keyset a cursor stands for.

    Raises:
        InvalidInput: naming ``cursor``, for anything :func:`encode_cursor` did not make.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, job_id = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        return created_at, uuid.UUID(job_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor", f"not a cursor from a previous page: {quote_prefix(cursor)}") from None


def check_state(state: JobState | str | None) -> str | None:
    """``state`` as its value.

    Raises:
        InvalidInput: naming ``state`` when it is not a job state.
    """
    if state is None:
        return None
    try:
        return JobState(state).value
    except ValueError:
        allowed = ", ".join(s.value for s in JobState)
        raise InvalidInput("state", f"must be one of {allowed}, got {quote_prefix(state)}") from None


async def list_jobs_page(
    store: Store,
    by: Principal,
    *,
    state: JobState | str | None = None,
    kind: str | None = None,
    queue: str | None = None,
    owner: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> JobPage:
    """A page of ``by``'s organisation's jobs, newest first, filtered.

    Raises:
        InvalidInput: a bad ``state``, ``limit`` or ``cursor``.
    """
    status = check_state(state)
    if not 1 <= limit <= PAGE_LIMIT:
        raise InvalidInput("limit", f"must be from 1 to {PAGE_LIMIT}, got {limit}")
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    rows = await store.fetch(
        "list_jobs", by.org_id, status, kind, queue, owner, after_at, after_id, limit + 1
    )
    jobs = [JobRecord.from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    return JobPage(jobs=jobs, next_cursor=encode_cursor(jobs[-1]) if more else None)
