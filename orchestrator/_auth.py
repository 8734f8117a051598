"""Who may see and cancel which job (G6, G7). Pure: no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ._errors import JobNotFound, NotAuthorized
from ._models import Principal


def visible_row(principal: Principal, job_id: uuid.UUID, row: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """``row`` if ``principal`` may see it.

    A job of another organisation is reported exactly like a missing one,
    so ids cannot be probed across tenants.

    Raises:
        JobNotFound: naming the id.
    """
    if row is None or row["owner_org_id"] != principal.org_id:
        raise JobNotFound(f"no job {job_id} in organisation {principal.org_id!r}")
    return row


def authorize_cancel(principal: Principal, row: Mapping[str, Any]) -> None:
    """Allow the job's owner and admins of its organisation.

    Raises:
        NotAuthorized: naming who tried and whose job it is.
    """
    if row["owner_org_id"] != principal.org_id:
        raise JobNotFound(f"no job {row['job_id']} in organisation {principal.org_id!r}")
    if principal.is_admin or row["owner_user_id"] == principal.user_id:
        return
    raise NotAuthorized(
        f"{principal.user_id!r} may not cancel job {row['job_id']}: it belongs to "
        f"{row['owner_user_id']!r} and {principal.user_id!r} is not an admin of {principal.org_id!r}"
    )
