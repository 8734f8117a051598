"""The store contract: scenarios every store adapter must pass.

Each scenario takes a store (the port of ``orchestrator._port``) and checks
the guarded semantics of ``sql/queries.sql``. tests/unit/test_store_contract.py
runs them on the in-memory adapter, tests/integration/test_store_contract.py on
PostgreSQL (a fresh database per test), so what the memory store models is
also what PostgreSQL does.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
import trio

from orchestrator._errors import StoreError
from orchestrator._port import Row, TrioStorePort
from orchestrator._store import TransitionRow

Scenario = Callable[[TrioStorePort], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}

NODE = "node-a"
OTHER_NODE = "node-b"
LEASE = 30.0
#: A lease that has run out by the time it is granted: lets rescue be
#: tested on PostgreSQL without waiting.
EXPIRED_LEASE = -1.0


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


async def submit(
    store: TrioStorePort,
    n: int = 1,
    *,
    kind: str = "work",
    queue: str = "default",
    user: str = "alice",
    org: str = "acme",
    priority: int = 0,
    max_attempts: int = 1,
    delay: float = 0.0,
    unique_keys: Sequence[str | None] | None = None,
    trace_context: dict[str, str] | None = None,
) -> list[Row]:
    ids = [uuid.uuid4() for _ in range(n)]
    return await store.submit(
        kind=kind, queue=queue, owner_user_id=user, owner_org_id=org, priority=priority,
        max_attempts=max_attempts, delay=delay, job_ids=ids, payloads_json=[f'{{"i": {i}}}' for i in range(n)],
        unique_keys=list(unique_keys) if unique_keys is not None else [None] * n, trace_context=trace_context,
    )  # fmt: skip


async def claim(store: TrioStorePort, n: int = 10, *, lease: float = LEASE, node: str = NODE, **slots: int) -> list[Row]:
    return await store.claim(kinds=["work"], slots=slots or {"default": n}, node=node, lease_seconds=lease)


async def row_of(store: TrioStorePort, job_id: uuid.UUID) -> Row:
    row = await store.get_job_any(job_id)
    assert row is not None
    return row


def finish(claimed: Row, current: Row, state: str = "completed", **changes: Any) -> TransitionRow:
    """The actor's write that ends a claimed job, stamped after its start."""
    return TransitionRow(
        job_id=claimed["job_id"], token=claimed["lease_token"], expected="active", next=state,
        completed_at=current["started_at"] + timedelta(milliseconds=1), **changes,
    )  # fmt: skip


def check_timestamps(row: Row) -> None:
    assert row["started_at"] is None or row["created_at"] <= row["started_at"]
    assert row["completed_at"] is None or row["started_at"] is None or row["started_at"] <= row["completed_at"]
    assert (row["completed_at"] is not None) == (row["status"] in ("completed", "failed", "cancelled"))


@scenario
async def submit_inserts_queued_rows_visible_to_their_organisation(store: TrioStorePort) -> None:
    rows = await submit(store, 2)
    assert [r["status"] for r in rows] == ["queued", "queued"]
    for r in rows:
        assert r["attempt"] == 1 and r["started_at"] is None and r["lease_token"] is None
        assert r["run_at"] >= r["created_at"]
    first = rows[0]["job_id"]
    assert (await store.get_job(first, "acme") or {}).get("job_id") == first
    assert await store.get_job(first, "evil-corp") is None
    assert {r["job_id"] for r in await store.get_jobs([first, uuid.uuid4()])} == {first}
    await submit(store, user="bob", org="other")
    listed = await store.list_jobs("acme", status="queued", kind=None, queue=None, owner=None, limit=10)
    assert {r["job_id"] for r in listed} == {r["job_id"] for r in rows}
    assert await store.list_jobs("acme", status="active", kind=None, queue=None, owner=None, limit=10) == []


@scenario
async def a_unique_key_returns_the_live_job_instead_of_a_new_one(store: TrioStorePort) -> None:
    [first] = await submit(store, unique_keys=["k"])
    [again] = await submit(store, unique_keys=["k"])
    assert again["job_id"] == first["job_id"]
    [other_org] = await submit(store, org="other", unique_keys=["k"])
    assert other_org["job_id"] != first["job_id"]


@scenario
async def a_batchs_trace_context_is_stored_and_comes_back_with_each_claim(store: TrioStorePort) -> None:
    context = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "k=v"}
    traced = await submit(store, 2, trace_context=context)
    [untraced] = await submit(store)
    claimed = {c["job_id"]: c["trace_context"] for c in await claim(store, 10)}
    assert claimed == {traced[0]["job_id"]: context, traced[1]["job_id"]: context, untraced["job_id"]: None}
    assert (await row_of(store, traced[0]["job_id"]))["trace_context"] == context


@scenario
async def claim_activates_rows_after_their_creation_once(store: TrioStorePort) -> None:
    rows = await submit(store, 3)
    [ignored] = await submit(store, kind="other")
    claimed = await claim(store, 2)
    assert len(claimed) == 2
    for c in claimed:
        row = await row_of(store, c["job_id"])
        assert row["status"] == "active" and row["lease_node"] == NODE
        assert row["lease_token"] == c["lease_token"]
        assert c["started_at"] == row["started_at"] > row["created_at"]
        assert c["previous_started_at"] is None and c["cancel_requested"] is False
        assert c["attempt"] == 1 and c["payload"] in ({"i": 0}, {"i": 1}, {"i": 2})
        check_timestamps(row)
    assert len({c["lease_token"] for c in claimed}) == 2
    rest = await claim(store, 10)
    assert [r["job_id"] for r in rest] == [r["job_id"] for r in rows if r["job_id"] not in {c["job_id"] for c in claimed}]
    assert await claim(store, 10) == []
    assert (await row_of(store, ignored["job_id"]))["status"] == "queued"


@scenario
async def claim_takes_each_queues_share_by_priority(store: TrioStorePort) -> None:
    [low] = await submit(store, priority=0)
    [high] = await submit(store, priority=5)
    [fast] = await submit(store, queue="fast")
    claimed = await claim(store, default=1, fast=3)
    assert {c["job_id"] for c in claimed} == {high["job_id"], fast["job_id"]}
    assert [c["job_id"] for c in await claim(store, default=1, fast=0)] == [low["job_id"]]


@scenario
async def a_delayed_job_is_not_claimed_before_it_is_due(store: TrioStorePort) -> None:
    assert await store.next_due(kinds=["work"], queues=["default"]) is None
    [later] = await submit(store, delay=3600)
    assert await claim(store) == []
    due = await store.next_due(kinds=["work"], queues=["default"])
    assert due is not None and 3500 < due <= 3600
    await submit(store)
    due = await store.next_due(kinds=["work"], queues=["default"])
    assert due is not None and due <= 0
    assert await store.next_due(kinds=["other"], queues=["default"]) is None


@scenario
async def a_claim_across_kinds_takes_the_queues_best_by_priority(store: TrioStorePort) -> None:
    jobs = {}
    for kind, priority in [("work", 0), ("extra", 5), ("work", 9), ("extra", 1), ("work", 3)]:
        [jobs[kind, priority]] = await submit(store, kind=kind, priority=priority)
    first = await store.claim(kinds=["work", "extra"], slots={"default": 3}, node=NODE, lease_seconds=LEASE)
    assert {c["job_id"] for c in first} == {jobs[k]["job_id"] for k in [("work", 9), ("extra", 5), ("work", 3)]}
    second = await store.claim(kinds=["extra"], slots={"default": 3}, node=NODE, lease_seconds=LEASE)
    assert [c["job_id"] for c in second] == [jobs["extra", 1]["job_id"]]


@scenario
async def next_due_is_the_earliest_run_at_across_priorities_and_kinds(store: TrioStorePort) -> None:
    for priority, delay in [(5, 3600), (0, 60), (-1, 1800)]:
        await submit(store, priority=priority, delay=delay)
    await submit(store, kind="extra", delay=30)
    await submit(store, queue="fast", delay=10)
    due = await store.next_due(kinds=["work"], queues=["default"])
    assert due is not None and 55 < due <= 60
    due = await store.next_due(kinds=["work", "extra"], queues=["default"])
    assert due is not None and 25 < due <= 30
    due = await store.next_due(kinds=["work", "extra"], queues=["default", "fast"])
    assert due is not None and 5 < due <= 10


@scenario
async def transitions_apply_only_from_the_expected_state_and_token(store: TrioStorePort) -> None:
    await submit(store)
    [c] = await claim(store)
    current = await row_of(store, c["job_id"])
    done = finish(c, current, result={"ok": True})
    wrong_token = dataclasses.replace(done, token=c["lease_token"] + 1000)
    wrong_state = dataclasses.replace(done, expected="queued")
    assert await store.apply_transitions([wrong_token]) == set()
    assert await store.apply_transitions([wrong_state]) == set()
    assert (await row_of(store, c["job_id"]))["status"] == "active"
    assert await store.apply_transitions([done]) == {c["job_id"]}
    row = await row_of(store, c["job_id"])
    assert row["status"] == "completed" and row["result"] == {"ok": True}
    check_timestamps(row)
    # Terminal is absorbing: the same write again, or a cancel, changes nothing.
    assert await store.apply_transitions([done]) == set()
    assert await store.apply_transitions([finish(c, current, "cancelled")]) == set()
    assert await store.request_cancel(c["job_id"], by="alice") is False
    assert await row_of(store, c["job_id"]) == row


@scenario
async def progress_is_written_while_active_under_the_lease(store: TrioStorePort) -> None:
    await submit(store)
    [c] = await claim(store)
    write = TransitionRow(job_id=c["job_id"], token=c["lease_token"], expected="active", next="active", progress=0.5)
    assert await store.apply_transitions([write]) == {c["job_id"]}
    row = await row_of(store, c["job_id"])
    assert row["status"] == "active" and row["progress"] == 0.5


@scenario
async def a_batch_applies_each_row_on_its_own_guard(store: TrioStorePort) -> None:
    await submit(store, 2)
    c1, c2 = await claim(store)
    r1, r2 = await row_of(store, c1["job_id"]), await row_of(store, c2["job_id"])
    stale = dataclasses.replace(finish(c2, r2), token=c2["lease_token"] + 1000)
    assert await store.apply_transitions([finish(c1, r1, "failed", error={"type": "E"}), stale]) == {c1["job_id"]}
    assert (await row_of(store, c1["job_id"]))["status"] == "failed"
    assert (await row_of(store, c2["job_id"]))["status"] == "active"


@scenario
async def the_timestamps_check_refuses_an_end_before_the_start(store: TrioStorePort) -> None:
    await submit(store)
    [c] = await claim(store)
    before = await row_of(store, c["job_id"])
    early = TransitionRow(
        job_id=c["job_id"], token=c["lease_token"], expected="active", next="completed",
        completed_at=before["started_at"] - timedelta(microseconds=1),
    )  # fmt: skip
    with pytest.raises(StoreError) as caught:
        await store.apply_transitions([early])
    assert caught.value.constraint == "job_status_timestamps_check"
    assert await row_of(store, c["job_id"]) == before


@scenario
async def a_retry_yields_to_a_pending_cancel_request(store: TrioStorePort) -> None:
    await submit(store, max_attempts=3)
    [c] = await claim(store)
    assert await store.request_cancel(c["job_id"], by="carol") is True
    renewed = await store.renew_leases(NODE, LEASE, [c["lease_token"]])
    assert renewed == {c["job_id"]: True}
    retry = TransitionRow(
        job_id=c["job_id"], token=c["lease_token"], expected="active", next="queued",
        run_at=c["started_at"], attempt=2, error={"type": "E"},
    )  # fmt: skip
    assert await store.apply_transitions([retry]) == set()
    current = await row_of(store, c["job_id"])
    assert current["cancel_requested_by"] == "carol"
    assert await store.apply_transitions([finish(c, current, "cancelled")]) == {c["job_id"]}
    assert (await row_of(store, c["job_id"]))["status"] == "cancelled"


@scenario
async def a_retry_requeues_with_the_next_attempt_and_a_later_start(store: TrioStorePort) -> None:
    await submit(store, max_attempts=2)
    [c] = await claim(store)
    retry = TransitionRow(
        job_id=c["job_id"], token=c["lease_token"], expected="active", next="queued",
        run_at=c["started_at"], attempt=2, error={"type": "E"},
    )  # fmt: skip
    assert await store.apply_transitions([retry]) == {c["job_id"]}
    row = await row_of(store, c["job_id"])
    assert row["status"] == "queued" and row["attempt"] == 2 and row["lease_token"] is None
    [again] = await claim(store)
    assert again["attempt"] == 2 and again["previous_started_at"] == c["started_at"]
    assert again["started_at"] > c["started_at"]
    # The first attempt's token no longer matches anything.
    assert await store.apply_transitions([finish(c, row)]) == set()


@scenario
async def cancel_queued_is_guarded_by_status_and_previous_start(store: TrioStorePort) -> None:
    [job] = await submit(store)
    job_id = job["job_id"]
    stamp = job["created_at"] + timedelta(milliseconds=1)
    assert await store.request_cancel(job_id, by="alice") is False
    assert await store.cancel_queued(job_id, started_at=stamp, completed_at=stamp, by="alice") is None
    row = await store.cancel_queued(job_id, started_at=None, completed_at=stamp, by="alice")
    assert row is not None and row["status"] == "cancelled" and row["cancel_requested_by"] == "alice"
    check_timestamps(row)
    assert await store.cancel_queued(job_id, started_at=None, completed_at=stamp, by="alice") is None


@scenario
async def renewal_extends_only_the_leases_held(store: TrioStorePort) -> None:
    await submit(store, 2)
    mine = await claim(store, 1)
    await submit(store)
    theirs = await claim(store, 1, node=OTHER_NODE)
    tokens = [mine[0]["lease_token"], theirs[0]["lease_token"], 10**9]
    assert await store.renew_leases(NODE, LEASE, tokens) == {mine[0]["job_id"]: False}
    assert await store.renew_leases(NODE, LEASE, []) == {}


@scenario
async def release_gives_an_unstarted_claim_back_as_it_was(store: TrioStorePort) -> None:
    await submit(store, 2)
    c1, c2 = await claim(store)
    assert await store.request_cancel(c2["job_id"], by="alice") is True
    jobs = [(c["job_id"], c["lease_token"], c["previous_started_at"]) for c in (c1, c2)]
    stale = (c1["job_id"], c1["lease_token"] + 1000, None)
    assert await store.release_unstarted([stale]) == set()
    assert await store.release_unstarted(jobs) == {c1["job_id"]}
    row = await row_of(store, c1["job_id"])
    assert row["status"] == "queued" and row["started_at"] is None and row["lease_token"] is None
    assert row["attempt"] == 1
    # The job with a cancel request stays leased: the rescuer ends it.
    assert (await row_of(store, c2["job_id"]))["status"] == "active"
    [again] = await claim(store)
    assert again["job_id"] == c1["job_id"] and again["attempt"] == 1


@scenario
async def rescue_requeues_fails_or_cancels_expired_leases(store: TrioStorePort) -> None:
    [retry] = await submit(store, max_attempts=2)
    [used_up] = await submit(store, max_attempts=1)
    [asked] = await submit(store, max_attempts=2)
    claimed = {c["job_id"]: c for c in await claim(store, lease=EXPIRED_LEASE)}
    await submit(store)
    [alive] = await claim(store)
    assert await store.request_cancel(asked["job_id"], by="alice") is True
    rescued = {r["job_id"]: r for r in await store.rescue_expired()}
    assert {j: r["outcome"] for j, r in rescued.items()} == {
        retry["job_id"]: "retry", used_up["job_id"]: "failed", asked["job_id"]: "cancelled"
    }
    assert all(r["rescued_from"] == NODE for r in rescued.values())
    requeued = await row_of(store, retry["job_id"])
    assert requeued["status"] == "queued" and requeued["attempt"] == 2 and requeued["lease_token"] is None
    for job_id in (used_up["job_id"], asked["job_id"]):
        row = await row_of(store, job_id)
        assert row["lease_token"] is None and row["error"]["type"] == "LeaseExpired"
        check_timestamps(row)
    assert (await row_of(store, used_up["job_id"]))["status"] == "failed"
    assert (await row_of(store, asked["job_id"]))["status"] == "cancelled"
    assert (await row_of(store, alive["job_id"]))["status"] == "active"
    # The node that lost the lease is fenced off.
    old = claimed[retry["job_id"]]
    assert await store.apply_transitions([finish(old, requeued)]) == set()
    assert await store.renew_leases(NODE, LEASE, [old["lease_token"]]) == {}
    assert await store.rescue_expired() == []


@scenario
async def fail_unusable_is_guarded_by_the_lease_token(store: TrioStorePort) -> None:
    await submit(store)
    [c] = await claim(store)
    assert await store.fail_unusable([(c["job_id"], c["lease_token"] + 1000, "nope")]) == set()
    assert await store.fail_unusable([(c["job_id"], c["lease_token"], "cannot decode")]) == {c["job_id"]}
    row = await row_of(store, c["job_id"])
    assert row["status"] == "failed" and row["error"] == {"type": "InvalidJob", "message": "cannot decode"}
    assert row["lease_token"] is None
    check_timestamps(row)


@scenario
async def quarantine_finds_nothing_among_well_formed_rows(store: TrioStorePort) -> None:
    await submit(store)
    assert await store.quarantine_malformed() == []


@scenario
async def statements_announce_what_they_move(store: TrioStorePort) -> None:
    async with store.listen(["jobs", "done", "cancel"]) as notifications:
        jobs = await submit(store, 2)
        await _expect(notifications, "jobs", None)
        c1, c2 = await claim(store)
        assert await store.request_cancel(c2["job_id"], by="alice")
        await _expect(notifications, "cancel", str(c2["job_id"]))
        current = await row_of(store, c1["job_id"])
        assert await store.apply_transitions([finish(c1, current)]) == {c1["job_id"]}
        await _expect(notifications, "done", str(c1["job_id"]))
        assert {j["job_id"] for j in jobs} == {c1["job_id"], c2["job_id"]}


async def _expect(notifications: trio.MemoryReceiveChannel[tuple[str, str]], channel: str, payload: str | None) -> None:
    """Receive until ``channel`` carries ``payload`` (any payload for ``None``)."""
    with trio.fail_after(10):
        async for name, text in notifications:
            if name == channel and (payload is None or payload in text.split(",")):
                return
    raise AssertionError(f"the notification channel closed before {channel} {payload}")



async def finish_and_claim(
    store: TrioStorePort, rows: Sequence[TransitionRow], *, lease: float = LEASE, **slots: int
) -> tuple[set[uuid.UUID], list[Row]]:
    return await store.apply_transitions_and_claim(
        rows, kinds=["work"], slots=slots or {"default": len(rows)}, node=NODE, lease_seconds=lease
    )


@scenario
async def a_batch_that_ends_jobs_claims_their_replacements_as_a_claim_does(store: TrioStorePort) -> None:
    await submit(store, 2)
    c1, c2 = await claim(store)
    low = await submit(store, 2)
    [high] = await submit(store, priority=5)
    r1, r2 = await row_of(store, c1["job_id"]), await row_of(store, c2["job_id"])
    applied, claimed = await finish_and_claim(store, [finish(c1, r1), finish(c2, r2, "failed", error={"type": "E"})])
    assert applied == {c1["job_id"], c2["job_id"]}
    assert (await row_of(store, c1["job_id"]))["status"] == "completed"
    assert (await row_of(store, c2["job_id"]))["status"] == "failed"
    # By priority, then run_at and id, as claim_jobs (one submit: one run_at); the same columns.
    first, second = sorted(r["job_id"] for r in low)
    assert [c["job_id"] for c in claimed] == [high["job_id"], first]
    [plain] = await claim(store, 1)
    assert plain["job_id"] == second
    assert set(plain.keys()) <= set(claimed[0].keys())
    tokens = {c1["lease_token"], c2["lease_token"], plain["lease_token"]}
    for c in claimed:
        row = await row_of(store, c["job_id"])
        assert row["status"] == "active" and row["lease_node"] == NODE and row["lease_token"] == c["lease_token"]
        assert c["lease_token"] not in tokens
        assert c["started_at"] == row["started_at"] > row["created_at"]
        assert c["previous_started_at"] is None and c["cancel_requested"] is False and c["attempt"] == 1
        check_timestamps(row)
    # The new leases are held like any other: renewed, and they fence.
    renewed = await store.renew_leases(NODE, LEASE, [c["lease_token"] for c in claimed])
    assert renewed == {c["job_id"]: False for c in claimed}


@scenario
async def a_batch_claims_nothing_unless_every_job_it_ends_left(store: TrioStorePort) -> None:
    await submit(store, 2)
    c1, c2 = await claim(store)
    [waiting] = await submit(store)
    r1, r2 = await row_of(store, c1["job_id"]), await row_of(store, c2["job_id"])
    stale = dataclasses.replace(finish(c2, r2), token=c2["lease_token"] + 1000)
    applied, claimed = await finish_and_claim(store, [finish(c1, r1), stale])
    assert applied == {c1["job_id"]} and claimed == []
    assert (await row_of(store, waiting["job_id"]))["status"] == "queued"
    # Progress alone ends nothing, so it does not stop a claim.
    progress = TransitionRow(job_id=c2["job_id"], token=c2["lease_token"], expected="active", next="active", progress=0.5)
    applied, claimed = await finish_and_claim(store, [progress], default=1)
    assert applied == {c2["job_id"]} and [c["job_id"] for c in claimed] == [waiting["job_id"]]


@scenario
async def a_refused_batch_claims_nothing(store: TrioStorePort) -> None:
    await submit(store, 2)
    c1, c2 = await claim(store)
    [waiting] = await submit(store)
    r1, r2 = await row_of(store, c1["job_id"]), await row_of(store, c2["job_id"])
    early = dataclasses.replace(finish(c2, r2), completed_at=r2["started_at"] - timedelta(microseconds=1))
    with pytest.raises(StoreError) as caught:
        await finish_and_claim(store, [finish(c1, r1), early])
    assert caught.value.constraint == "job_status_timestamps_check"
    assert await row_of(store, c1["job_id"]) == r1
    assert (await row_of(store, waiting["job_id"]))["status"] == "queued"
    assert [c["job_id"] for c in await claim(store)] == [waiting["job_id"]]


@scenario
async def a_batch_claim_keeps_queue_shares_kinds_due_times_and_its_own_jobs(store: TrioStorePort) -> None:
    await submit(store, max_attempts=2)
    [c] = await claim(store)
    [fast] = await submit(store, queue="fast")
    await submit(store, queue="fast")
    [other_kind] = await submit(store, kind="other")
    [later] = await submit(store, delay=3600)
    # A retry due at once goes back to the queue; the statement that puts it
    # there does not claim it again.
    retry = TransitionRow(
        job_id=c["job_id"], token=c["lease_token"], expected="active", next="queued",
        run_at=c["started_at"], attempt=2, error={"type": "E"},
    )  # fmt: skip
    applied, claimed = await finish_and_claim(store, [retry], default=3, fast=1)
    assert applied == {c["job_id"]}
    assert [x["job_id"] for x in claimed] == [fast["job_id"]]
    for job_id in (c["job_id"], other_kind["job_id"], later["job_id"]):
        assert (await row_of(store, job_id))["status"] == "queued"
    [again] = await claim(store, default=3, fast=0)
    assert again["job_id"] == c["job_id"] and again["attempt"] == 2 and again["previous_started_at"] == c["started_at"]


@scenario
async def a_batch_announces_the_jobs_it_ends_and_claims(store: TrioStorePort) -> None:
    await submit(store)
    [c] = await claim(store)
    [waiting] = await submit(store)
    current = await row_of(store, c["job_id"])
    async with store.listen(["done", "events"]) as notifications:
        applied, claimed = await finish_and_claim(store, [finish(c, current)])
        assert applied == {c["job_id"]} and [x["job_id"] for x in claimed] == [waiting["job_id"]]
        await _expect(notifications, "done", str(c["job_id"]))
        await _expect(notifications, "events", str(waiting["job_id"]))
