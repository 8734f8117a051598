"""Who may see and cancel which job (G6 cancellation with authority, G7 tenancy)."""

from __future__ import annotations

import uuid

import pytest

from orchestrator._auth import authorize_cancel, visible_row
from orchestrator._errors import JobNotFound, NotAuthorized
from orchestrator._models import Principal

JOB_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")
ROW = {"job_id": JOB_ID, "owner_user_id": "alice", "owner_org_id": "acme"}

OWNER = Principal(user_id="alice", org_id="acme")
ADMIN = Principal(user_id="root", org_id="acme", role="admin")
MEMBER = Principal(user_id="bob", org_id="acme")
OUTSIDER = Principal(user_id="mallory", org_id="evil")
OUTSIDE_ADMIN = Principal(user_id="alice", org_id="evil", role="admin")  # same user name, other org


@pytest.mark.parametrize("principal", [OWNER, ADMIN, MEMBER], ids=["owner", "admin", "member"])
def test_principals_of_the_org_see_the_row(principal: Principal) -> None:
    assert visible_row(principal, JOB_ID, ROW) is ROW


def test_owner_may_cancel() -> None:
    assert authorize_cancel(OWNER, ROW) is None


def test_admin_of_the_org_may_cancel_anyones_job() -> None:
    authorize_cancel(ADMIN, ROW)
    authorize_cancel(ADMIN, {**ROW, "owner_user_id": "someone-else"})


def test_member_who_is_not_the_owner_is_refused_naming_both() -> None:
    with pytest.raises(NotAuthorized) as caught:
        authorize_cancel(MEMBER, ROW)
    message = str(caught.value)
    assert "'bob'" in message and "'alice'" in message and str(JOB_ID) in message


@pytest.mark.parametrize("principal", [OUTSIDER, OUTSIDE_ADMIN], ids=["member", "admin"])
def test_principal_of_another_org_gets_not_found_everywhere(principal: Principal) -> None:
    with pytest.raises(JobNotFound, match=str(JOB_ID)) as seen:
        visible_row(principal, JOB_ID, ROW)
    with pytest.raises(JobNotFound, match=str(JOB_ID)) as cancelled:
        authorize_cancel(principal, ROW)
    assert not isinstance(cancelled.value, NotAuthorized)
    # Nothing leaks the owning organisation.
    assert "acme" not in str(seen.value) and "acme" not in str(cancelled.value)


def test_other_org_is_reported_exactly_like_a_missing_row() -> None:
    with pytest.raises(JobNotFound) as other:
        visible_row(OUTSIDER, JOB_ID, ROW)
    with pytest.raises(JobNotFound) as missing:
        visible_row(OUTSIDER, JOB_ID, None)
    assert str(other.value) == str(missing.value)


def test_missing_row_is_not_found() -> None:
    with pytest.raises(JobNotFound, match=str(JOB_ID)):
        visible_row(OWNER, JOB_ID, None)


def test_job_not_found_is_a_lookup_error() -> None:
    assert issubclass(JobNotFound, LookupError)
