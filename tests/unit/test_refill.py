"""The writer's batch statement claims the replacements of the jobs it ends.

The real :class:`Dispatcher`, :class:`TransitionWriter` and job actors run on
the in-memory store under ``MockClock`` (the node of test_interleavings). The
rows and the store's history say what happened: which statement claimed each
job, that no handler ran before its row was ``active``, that the node never
ran more jobs than its concurrency or a queue's limit, and that a claim the
node can no longer run goes back to the queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import trio
import trio.testing
from pydantic import TypeAdapter

from orchestrator._jobs import JobContext, JobDefinition, Registry
from orchestrator._memory_store import MemoryStore
from orchestrator._port import Row
from orchestrator._store import TransitionRow
from tests.unit.test_interleavings import BASE, OWNER, Node

REFILL = "apply_transitions_and_claim"


class Counting:
    """A handler that returns at once and records what ran at the same time."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.started: list[uuid.UUID] = []
        self.live: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.most_overall = 0
        self.violations: list[str] = []

    async def __call__(self, ctx: JobContext, payload: Any) -> Any:
        row = self.store.peek(ctx.job.id)
        if row is None or row.status != "active" or row.lease_node != "node-1":
            self.violations.append(f"handler of {ctx.job.id} started on {row}")
        self.started.append(ctx.job.id)
        queue = ctx.job.queue
        self.live[queue] = self.live.get(queue, 0) + 1
        self.most[queue] = max(self.most.get(queue, 0), self.live[queue])
        self.most_overall = max(self.most_overall, sum(self.live.values()))
        try:
            # The handler's own work: long enough for others to overlap it.
            await trio.sleep(0.001)
            return {"ok": True}
        finally:
            self.live[queue] -= 1


def world(store: MemoryStore, handler: Any) -> Registry:
    registry = Registry()
    registry.add(JobDefinition(kind="work", handler=handler, payload=TypeAdapter(Any)))
    return registry


async def submit(store: MemoryStore, n: int, *, queue: str = "default", priority: int = 0, start: int = 0) -> list[uuid.UUID]:
    ids = [uuid.UUID(int=start + i + 1) for i in range(n)]
    await store.submit(
        kind="work", queue=queue, owner_user_id=OWNER.user_id, owner_org_id=OWNER.org_id, priority=priority,
        max_attempts=1, delay=0.0, job_ids=ids, payloads_json=["{}"] * n, unique_keys=[None] * n,
    )  # fmt: skip
    return ids


async def run_until_done(node: Node, store: MemoryStore, ids: Sequence[uuid.UUID]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(600):
            while not all((r := store.peek(j)) is not None and r.status in ("completed", "failed") for j in ids):
                await store.changed().wait()
        await trio.testing.wait_all_tasks_blocked()
        assert node.dispatcher is not None
        assert node.dispatcher._reserved == {}, "slots stayed reserved"
        await node.stop()


def claimed_by(store: MemoryStore) -> dict[str, int]:
    """How many jobs each statement moved from queued to active."""
    counts: dict[str, int] = {}
    for change in store.history:
        if (change.before, change.after) == ("queued", "active"):
            counts[change.statement] = counts.get(change.statement, 0) + 1
    return counts


def clock() -> Any:
    return lambda: BASE + timedelta(seconds=trio.current_time())


async def test_batches_that_end_jobs_claim_their_replacements(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(clock())
    handler = Counting(store)
    ids = await submit(store, 60)
    node = Node("node-1", store, world(store, handler), store.clock, concurrency=4)
    await run_until_done(node, store, ids)
    assert not handler.violations
    assert all(store.jobs[j].status == "completed" for j in ids)
    assert sorted(handler.started) == sorted(ids), "a job ran twice, or not at all"
    assert handler.most_overall <= 4
    by = claimed_by(store)
    # The first claim is the dispatcher's; then the writer's batches take over.
    assert by.get(REFILL, 0) > by.get("claim_jobs", 0), by
    assert store.statements.get(REFILL, 0) > 0
    assert store.statements.get("claim_jobs", 0) < len(ids) / 4, store.statements


async def test_batch_claims_keep_queue_limits_and_priorities(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(clock())
    handler = Counting(store)
    ids: list[uuid.UUID] = []
    for priority in (0, 5, 2):
        ids += await submit(store, 10, queue="bulk", priority=priority, start=len(ids))
    ids += await submit(store, 10, queue="mail", start=len(ids))
    node = Node(
        "node-1", store, world(store, handler), store.clock, concurrency=3, queue_limits={"bulk": 3, "mail": 1}
    )
    await run_until_done(node, store, ids)
    assert not handler.violations
    assert handler.most_overall <= 3 and handler.most["mail"] <= 1, handler.most
    assert claimed_by(store).get(REFILL, 0) > 0
    # Within a queue, jobs start by priority (all were due from the start).
    priorities = [store.jobs[j].priority for j in handler.started if store.jobs[j].queue == "bulk"]
    assert priorities == sorted(priorities, reverse=True), priorities


class HeldAnswers(MemoryStore):
    """The memory store whose batch statements commit, then answer only when
    the test says so (a slow network)."""

    def __init__(self) -> None:
        super().__init__(clock())
        self.hold: trio.Event | None = None
        self.held = trio.Event()

    async def apply_transitions_and_claim(
        self, rows: Sequence[TransitionRow], **claim: Any
    ) -> tuple[set[uuid.UUID], list[Row]]:
        answer = await super().apply_transitions_and_claim(rows, **claim)
        if self.hold is not None:
            self.held.set()
            await self.hold.wait()
        return answer


async def test_a_job_a_batch_claims_while_the_node_stops_goes_back_unstarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = HeldAnswers()
    handler = Counting(store)
    [first] = await submit(store, 1, priority=1)
    [second] = await submit(store, 1, start=1)
    store.hold = trio.Event()
    node = Node("node-1", store, world(store, handler), store.clock, concurrency=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await store.held.wait()
        # Committed: the first job completed, the second claimed for this node.
        row = store.peek(second)
        assert row is not None and row.status == "active" and row.lease_node == "node-1"
        nursery.start_soon(node.stop)
        await trio.testing.wait_all_tasks_blocked()
        store.hold.set()
        await node.stopped.wait()
    assert handler.started == [first]
    done = store.peek(first)
    assert done is not None and done.status == "completed"
    back = store.peek(second)
    assert back is not None and back.status == "queued" and back.attempt == 1
    assert back.lease_token is None and back.started_at is None
    assert [(h.statement, h.before, h.after) for h in store.history if h.job_id == second] == [
        ("submit_jobs", "", "queued"),
        (REFILL, "queued", "active"),
        ("release_unstarted", "active", "queued"),
    ]


async def test_a_refused_batch_claims_nothing_and_its_writes_go_alone(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore(clock())
    handler = Counting(store)
    ids = await submit(store, 12)
    store.refuse(REFILL, times=2)
    node = Node("node-1", store, world(store, handler), store.clock, concurrency=3)
    await run_until_done(node, store, ids)
    assert not handler.violations
    assert sorted(handler.started) == sorted(ids), "a job ran twice, or not at all"
    assert handler.most_overall <= 3
    # As before: a batch refused is written again row by row, and a job
    # whose own write is refused fails with the reason; nothing else is lost.
    failed = [store.jobs[j] for j in ids if store.jobs[j].status == "failed"]
    assert len(failed) <= 2 and all(f.error["type"] == "StoreError" for f in failed), failed
    assert len(failed) < len(ids)
    # The refused statements claimed nothing; later batches still do.
    assert claimed_by(store).get(REFILL, 0) > 0
