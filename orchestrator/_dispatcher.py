"""The dispatcher: claims due jobs, runs one actor per job, keeps the node alive.

It claims as many due jobs as it has free slots (per queue) in one
statement, wakes on a notification when jobs are inserted (polling as a
fallback and for delayed jobs), and on each heartbeat renews all of this
node's leases in one statement, rescues jobs whose node died, and delivers
cancel requests it may have missed.

It also judges each lease by its own clock: a job whose lease was not
renewed within :data:`LOCAL_LEASE_SHARE` of the lease since it was claimed
or last renewed has its handler stopped with nothing written, even when the
database cannot be reached to say so. By then the lease is close to running
out in the database, after which a rescuer may requeue the job for another
node; a node cut off from PostgreSQL must not still be running it.

It is also the writer's :class:`~orchestrator._writer.Refill`: the statement
that ends a batch of this node's jobs claims their replacements (while the
queue is known to hold due jobs), and the dispatcher starts those exactly as
the rows of its own claims. Slots being claimed by a statement in flight,
its own or the writer's, count as taken, so the two never fill one slot
twice.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import trio

from actors import ActorDead, ActorRef, MailboxFull, Restart, Supervisor

from ._errors import DatabaseUnavailable, OrchestratorError, StoreError
from ._job_actor import CancelRequested, JobActor, JobMessage, LeaseLost, ReleaseJob
from ._claimed import ClaimedJob
from ._jobs import Registry
from ._lifecycle import JobState
from ._metrics import Metrics
from ._validation import UndecodableJSON
from ._port import Row, WorkerPort
from ._store import TransitionRow, retry_unavailable
from ._summary import SUMMARY_INTERVAL, Summary
from ._tracing import Tracing
from ._writer import RefillClaim, TransitionWriter

logger = logging.getLogger("orchestrator.dispatcher")

Clock = Callable[[], datetime]

#: Malformed rows can only predate migration 0004 (its CHECK refuses new
#: ones), so the search for them runs at start and then only now and then.
QUARANTINE_EVERY_BEATS = 30

#: The share of the lease after which this node, without a renewal it knows
#: of, counts the lease as lost. Measured from the claim's answer (or a
#: renewal's sending), it ends before the database's ``lease_expires_at``
#: unless that answer took more than the rest of the lease to arrive.
LOCAL_LEASE_SHARE = 0.9


@dataclass(slots=True)
class _Running:
    ref: ActorRef[JobMessage]
    token: int
    queue: str
    #: By this node's clock (trio time): when it counts the lease as lost
    #: unless a renewal succeeds first.
    held_until: float = math.inf
    #: Told ``LeaseLost`` already.
    lost: bool = False


def share_slots(free: int, queue_free: Mapping[str, int], start: int = 0) -> dict[str, int]:
    """Split ``free`` node slots among queues, round-robin, within each queue's own free slots.

    ``start`` rotates which queue is served first, so a busy queue listed
    first does not starve the others.
    """
    queues = [q for q in queue_free if queue_free[q] > 0]
    shares = dict.fromkeys(queues, 0)
    i = start
    while free > 0 and queues:
        queue = queues[i % len(queues)]
        shares[queue] += 1
        free -= 1
        if shares[queue] >= queue_free[queue]:
            queues.remove(queue)
        else:
            i += 1
    return {q: n for q, n in shares.items() if n > 0}


class Dispatcher:
    """Runs this node's share of the queue.

    Args:
        concurrency: jobs running at once on this node, at most.
        queue_limits: the queues to claim from, each with its own limit of
            jobs running at once on this node.
        poll_interval: seconds between claims when no notification comes.
        lease_seconds: how long a claim holds without a heartbeat.
        on_job_exit: called when a job leaves this node (ended or requeued).
        summary_interval: seconds between the INFO summary lines.
        metrics: where the node's Prometheus figures go (through the summary).
        tracing: where each attempt's span starts (``None``: no spans).
    """

    def __init__(
        self,
        *,
        store: WorkerPort,
        registry: Registry,
        writer: TransitionWriter,
        supervisor: Supervisor,
        node_id: str,
        concurrency: int,
        queue_limits: Mapping[str, int],
        poll_interval: float,
        lease_seconds: float,
        clock: Clock,
        on_job_exit: Callable[[uuid.UUID, JobState], None],
        summary_interval: float = SUMMARY_INTERVAL,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        for queue, limit in queue_limits.items():
            if limit < 1:
                raise ValueError(f"queue {queue!r} needs a concurrency of at least 1, got {limit}")
        self._store = store
        self._registry = registry
        self._writer = writer
        self._supervisor = supervisor
        self.node_id = node_id
        self._concurrency = concurrency
        self._queue_limits = dict(queue_limits)
        self._poll_interval = poll_interval
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._on_job_exit = on_job_exit
        self._tracing = tracing
        self._running: dict[uuid.UUID, _Running] = {}
        self._wakeup = trio.Event()
        self._claiming = trio.CancelScope()
        self._grace = trio.CancelScope()
        self._all_exited = trio.Event()
        self._all_exited.set()
        self._rotation = 0
        #: Slots per queue that a claim in flight (the dispatcher's or a
        #: writer batch's) is filling.
        self._reserved: dict[str, int] = {}
        self._claiming_active = False
        # Whether the last claim found fewer due jobs than it had room for:
        # then a batch's statement claims nothing until jobs are announced
        # (an empty claim in every write costs, and gains nothing).
        self._dry = False
        self.claimed = 0
        self.claims = 0
        #: Writer batches that claimed for this node, and the jobs they claimed.
        self.refills = 0
        self.refilled_jobs = 0
        self.rescued = 0
        self.quarantined = 0
        self._reported: set[str] = set()
        self.summary = Summary(metrics)
        self._summary_interval = summary_interval

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def actors(self) -> int:
        """Job actors alive under this node's supervisor."""
        return len(self._supervisor.children)

    @property
    def mailbox_depth(self) -> int:
        """Messages waiting in the job actors' mailboxes, all together."""
        return sum(ref.mailbox_depth for ref in self._supervisor.children)

    def wake(self) -> None:
        """Claim again now: jobs were inserted (or came back to the queue)."""
        self._dry = False
        self._wakeup.set()

    def deliver_cancel(self, job_id: uuid.UUID) -> bool:
        """Tell the actor of ``job_id`` to cancel, if it runs here."""
        return self._tell(job_id, CancelRequested())

    def _tell(self, job_id: uuid.UUID, message: JobMessage) -> bool:
        running = self._running.get(job_id)
        if running is None:
            return False
        try:
            running.ref.tell_nowait(message)
        except (ActorDead, MailboxFull):
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and run jobs until drained (see :meth:`drain`) or cancelled."""
        await self._store.register_node(self.node_id, socket.gethostname(), os.getpid())
        self.quarantined += await self.quarantine()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._watch_leases)
                nursery.start_soon(self.summary.run, self._summary_interval)
                task_status.started()
                with self._claiming:
                    self._claiming_active = True
                    self._writer.attach(self)
                    try:
                        await self._claim_loop()
                    finally:
                        self._claiming_active = False
                        self._writer.attach(None)
                # Draining: keep renewing the leases of the jobs still running.
                await self._wait_all_exited()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self._store.stop_node(self.node_id)
                except OrchestratorError as exc:
                    logger.warning("could not mark node %s stopped: %s", self.node_id, exc)

    async def drain(self, grace: float, *, release_bound: float = 10.0) -> int:
        """Stop claiming; give running jobs ``grace`` seconds to end; then
        interrupt the rest and put them back in the queue.

        The release writes run shielded, bounded by ``release_bound``
        seconds, so a cancelled caller still leaves no job behind on this
        node if the database answers.

        Returns:
            How many job actors are still there after the bound (their last
            writes could not reach the database): the caller cancels them,
            and their leases run out for a rescuer to requeue the jobs.
        """
        self._claiming.cancel()
        with trio.move_on_after(grace) as self._grace:
            await self._wait_all_exited()
        with trio.CancelScope(shield=True), trio.move_on_after(release_bound):
            for job_id in list(self._running):
                self._tell(job_id, ReleaseJob())
            await self._wait_all_exited()
        if self._running:
            logger.warning(
                "%d jobs could not be released (is PostgreSQL reachable?); left leased for a rescuer",
                len(self._running),
            )
        return len(self._running)

    def hurry(self) -> None:
        """Stop claiming and cut the shutdown grace short: running jobs are
        released back to the queue now rather than when the grace ends."""
        self._claiming.cancel()
        self._grace.cancel()

    async def _wait_all_exited(self) -> None:
        while self._running:
            await self._all_exited.wait()

    def _slots(self, leaving: Mapping[str, int] | None = None) -> dict[str, int]:
        """The free slots per queue, counting those being claimed as taken
        and the jobs ``leaving`` (per queue) as gone."""
        leaving = leaving or {}
        busy = dict(self._reserved)
        for running in self._running.values():
            busy[running.queue] = busy.get(running.queue, 0) + 1
        for queue, n in leaving.items():
            busy[queue] = busy.get(queue, 0) - n
        free = self._concurrency - len(self._running) - sum(self._reserved.values()) + sum(leaving.values())
        queue_free = {q: limit - busy.get(q, 0) for q, limit in self._queue_limits.items()}
        self._rotation += 1
        return share_slots(free, queue_free, self._rotation)

    @contextmanager
    def _reserving(self, slots: Mapping[str, int]) -> Iterator[None]:
        self._reserve(slots)
        try:
            yield
        finally:
            self._unreserve(slots)

    def _reserve(self, slots: Mapping[str, int]) -> None:
        for queue, n in slots.items():
            self._reserved[queue] = self._reserved.get(queue, 0) + n

    def _unreserve(self, slots: Mapping[str, int]) -> None:
        for queue, n in slots.items():
            left = self._reserved.get(queue, 0) - n
            if left > 0:
                self._reserved[queue] = left
            else:
                self._reserved.pop(queue, None)

    # -- the writer's Refill -------------------------------------------------

    def reserve(self, rows: Sequence[TransitionRow]) -> RefillClaim | None:
        """The claim a batch of writes is to make for the slots its rows
        free (only rows of jobs running here under their current lease), or
        ``None``: the node is stopping, nothing leaves, or the queue ran
        dry. The slots count as taken until :meth:`refilled` or :meth:`cancel`."""
        if not self._claiming_active or self._claiming.cancel_called or self._dry:
            return None
        leaving: dict[str, int] = {}
        for row in rows:
            running = self._running.get(row.job_id)
            if row.next != JobState.ACTIVE.value and running is not None and running.token == row.token:
                leaving[running.queue] = leaving.get(running.queue, 0) + 1
        if not leaving:
            return None
        slots = self._slots(leaving)
        if not slots:
            return None
        self._reserve(slots)
        return RefillClaim(self._registry.kinds, slots, self.node_id, self._lease_seconds)

    def cancel(self, claim: RefillClaim) -> None:
        """The batch's statement failed: it claimed nothing."""
        self._unreserve(claim.slots)

    async def refilled(self, claim: RefillClaim, rows: list[Row]) -> None:
        """Start the jobs a batch's statement claimed, exactly as those of a
        claim; give them back unstarted if the node began to stop meanwhile."""
        # No checkpoint between giving the slots back and taking them up.
        self._unreserve(claim.slots)
        self.refills += 1
        self.refilled_jobs += len(rows)
        if len(rows) < sum(claim.slots.values()):
            self._dry = True
        if not self._claiming_active or self._claiming.cancel_called:
            await self._release_unstarted(rows)
            return
        self.claimed += len(rows)
        await self._start_claimed(rows)

    async def _claim_loop(self) -> None:
        kinds = self._registry.kinds
        # No timer between a freed slot and its claim (G3): a claim runs as
        # soon as a slot is free, and takes whatever else came free while
        # the previous one ran, the way the writer batches.
        while True:
            # A wake-up that arrives while claiming must not be lost, so the
            # event is renewed before the claim, not after it.
            self._wakeup = trio.Event()
            slots = self._slots()
            free = sum(slots.values())
            wait = self._poll_interval
            if free > 0:
                try:
                    rows = await self._claim(kinds, slots)
                except DatabaseUnavailable as exc:
                    logger.warning("claim failed, database unavailable: %s", exc)
                    rows = []
                except StoreError as exc:
                    # No statement's failure may stop the worker: wait for
                    # the poll and claim again.
                    self._log_store_error("claiming", exc)
                    rows = []
                self.claimed += len(rows)
                self.claims += 1
                self._dry = len(rows) < free
                if len(rows) == free:
                    # Every free slot was filled: more may be due.
                    continue
                if not rows:
                    wait = await self._until_next_due(kinds, list(self._queue_limits))
            with trio.move_on_after(wait):
                await self._wakeup.wait()

    async def _claim(self, kinds: list[str], slots: dict[str, int]) -> list[Row]:
        """Claim up to ``slots`` jobs and start an actor for each.

        The claim marks its rows ``active``: an answer lost to cancellation
        would leave them started with nobody running them, so the statement
        and the spawning run shielded (bounded by the lease), and what was
        claimed after this node began to stop is given back unstarted.
        """
        with trio.CancelScope(shield=True), trio.move_on_after(self._lease_seconds):
            with self._reserving(slots):
                rows = await self._store.claim(
                    kinds=kinds, slots=slots, node=self.node_id, lease_seconds=self._lease_seconds
                )
            if self._claiming.cancel_called:
                await self._release_unstarted(rows)
                rows = []
            else:
                await self._start_claimed(rows)
            return rows
        return []

    async def _release_unstarted(self, rows: list[Row]) -> None:
        # The claim made them active; giving them back makes them queued.
        self.summary.moved(rows, "active")
        try:
            released = await retry_unavailable(
                "releasing unstarted jobs",
                self._store.release_unstarted,
                [(r["job_id"], r["lease_token"], r["previous_started_at"]) for r in rows],
            )
            self.summary.moved([r for r in rows if r["job_id"] in released], "queued")
        except StoreError as exc:
            # Left leased: the rescuer deals with them when the lease ends.
            self._log_store_error("releasing unstarted jobs", exc)

    async def _until_next_due(self, kinds: list[str], queues: list[str]) -> float:
        try:
            due = await self._store.next_due(kinds=kinds, queues=queues)
        except DatabaseUnavailable:
            return self._poll_interval
        except StoreError as exc:
            self._log_store_error("finding the next due job", exc)
            return self._poll_interval
        if due is None:
            return self._poll_interval
        return max(0.0, min(self._poll_interval, due))

    async def _start_claimed(self, rows: list[Row]) -> None:
        """Start an actor for each claimed row; fail the rows that cannot run.

        A row this node cannot decode into a job, or start an actor for, is
        failed with the reason (guarded by its lease token) instead of
        stopping the dispatcher, so one bad row never stops everyone's work.
        """
        unusable: list[tuple[uuid.UUID, int, str]] = []
        unusable_rows: list[Row] = []
        started: list[ClaimedJob] = []
        for row in rows:
            try:
                job = ClaimedJob.from_row(row)
                if isinstance(job.payload, UndecodableJSON):
                    raise ValueError(f"payload cannot be decoded ({job.payload.reason})")
                self._spawn(job)
                started.append(job)
            except Exception as exc:
                reason = f"this job cannot be run: {type(exc).__name__}: {str(exc)[:300]}"
                logger.error("job %s: %s; failing it", row["job_id"], reason)
                unusable.append((row["job_id"], row["lease_token"], reason))
                unusable_rows.append(row)
        self.summary.claimed_jobs(len(rows), started)
        if unusable:
            # The claim made them active too, though no actor runs them.
            self.summary.moved(unusable_rows, "active")
            try:
                failed = await retry_unavailable("failing unusable jobs", self._store.fail_unusable, unusable)
                self.summary.moved([r for r in unusable_rows if r["job_id"] in failed], "failed")
            except StoreError as exc:
                # Left leased: the rescuer deals with them when the lease ends.
                self._log_store_error("failing unusable jobs", exc)

    async def quarantine(self, batch: int = 1000) -> int:
        """Fail every live job that breaks the row rules (see migration 0004).

        Returns:
            How many jobs were failed.
        """
        failed = 0
        while True:
            try:
                rows = await self._store.quarantine_malformed(batch)
            except (DatabaseUnavailable, StoreError) as exc:
                self._log_store_error("failing malformed jobs", exc)
                return failed
            for row in rows:
                logger.error("job %s is malformed and was failed: %s", row["job_id"], row["problem"])
            self.summary.moved(rows, "failed")
            failed += len(rows)
            if len(rows) < batch:
                return failed

    def _log_store_error(self, what: str, exc: OrchestratorError) -> None:
        # Said once per kind of failure, not on every poll.
        key = f"{what}: {exc}"
        if key not in self._reported:
            self._reported.add(key)
            logger.error("%s failed: %s (the worker keeps serving)", what, exc)

    def _spawn(self, job: ClaimedJob) -> None:
        definition = self._registry.get(job.kind)
        # Not awaited: the actor's on_start (which starts the handler) runs
        # once this claim's rows are all handed out, with no serial
        # nursery.start per row.
        ref: ActorRef[JobMessage] = self._supervisor.spawn_soon(
            lambda: JobActor(
                job, definition, self._writer, self._store, self._clock, self._job_exited, self.summary,
                self._tracing,
            ),
            name=f"job-{job.id}",
            mailbox_size=16,
            restart=Restart.TEMPORARY,
        )
        if ref.is_alive:
            # This node claimed the job again (a rescuer requeued it after
            # this node's lease ran out): the earlier actor's lease is gone.
            self._tell(job.id, LeaseLost())
            self._running[job.id] = _Running(ref, job.lease_token, job.queue, self._lease_deadline(trio.current_time()))
            if self._all_exited.is_set():
                self._all_exited = trio.Event()

    def _job_exited(self, job: ClaimedJob, state: JobState) -> None:
        running = self._running.get(job.id)
        # Only this attempt's entry: a newer claim of the job may hold it.
        if running is not None and running.token == job.lease_token:
            del self._running[job.id]
        self._on_job_exit(job.id, state)
        if not self._running:
            self._all_exited.set()
        # A slot came free: claim again (the queue stays as dry as it was).
        self._wakeup.set()

    async def _heartbeat(self) -> None:
        interval = self._lease_seconds / 3
        beats = 0
        while True:
            beats += 1
            try:
                await self._beat()
                if beats % QUARANTINE_EVERY_BEATS == 0:
                    self.quarantined += await self.quarantine()
            except OrchestratorError as exc:
                # A missed beat costs nothing while the lease lasts; the next
                # one renews everything still held.
                logger.warning("heartbeat failed: %s", exc)
            await trio.sleep(interval)

    def _lease_deadline(self, since: float) -> float:
        return since + self._lease_seconds * LOCAL_LEASE_SHARE

    def _lose_lease(self, job_id: uuid.UUID, running: _Running, why: str) -> None:
        if not running.lost:
            logger.warning("job %s: lease (token %d) %s; stopping its handler here, writing nothing", job_id, running.token, why)
            self.summary.lease_lost()
        # Told again on the next look if its mailbox was full.
        running.lost = self._tell(job_id, LeaseLost())

    async def _watch_leases(self) -> None:
        """Stop the handlers whose lease this node could not renew in time,
        by its own clock: the heartbeat may be stuck on a database that
        does not answer."""
        while True:
            now = trio.current_time()
            soonest = now + self._lease_seconds / 3
            for job_id, running in list(self._running.items()):
                if running.lost:
                    continue
                if running.held_until <= now:
                    self._lose_lease(job_id, running, "not renewed in time (is PostgreSQL reachable?)")
                else:
                    soonest = min(soonest, running.held_until)
            await trio.sleep_until(soonest)

    async def _beat(self) -> None:
        held = dict(self._running)
        sent = trio.current_time()
        renewed = await self._store.renew_leases(self.node_id, self._lease_seconds, [r.token for r in held.values()])
        for job_id, running in held.items():
            if self._running.get(job_id) is not running:
                continue
            if job_id in renewed:
                running.held_until = max(running.held_until, self._lease_deadline(sent))
            else:
                self._lose_lease(job_id, running, "lost")
        for job_id, cancel_requested in renewed.items():
            if cancel_requested:
                self.deliver_cancel(job_id)
        rescued = await self._store.rescue_expired()
        self.rescued += len(rescued)
        self.summary.rescued_jobs(rescued)
        for row in rescued:
            logger.warning(
                "job %s rescued from node %s whose lease expired: %s", row["job_id"], row["rescued_from"], row["outcome"]
            )
        if rescued:
            self.wake()
