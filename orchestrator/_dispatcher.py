"""The dispatcher: claims due jobs, runs one actor per job, keeps the node alive.

It claims as many due jobs as it has free slots (per queue) in one
statement, wakes on a notification when jobs are inserted (polling as a
fallback and for delayed jobs), and on each heartbeat renews all of this
node's leases in one statement, rescues jobs whose node died, and delivers
cancel requests it may have missed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
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
from ._store import retry_unavailable
from ._summary import SUMMARY_INTERVAL, Summary
from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator.dispatcher")

Clock = Callable[[], datetime]

#: Malformed rows can only predate migration 0004 (its CHECK refuses new
#: ones), so the search for them runs at start and then only now and then.
QUARANTINE_EVERY_BEATS = 30


@dataclass(slots=True)
class _Running:
    ref: ActorRef[JobMessage]
    token: int
    queue: str


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
        self._running: dict[uuid.UUID, _Running] = {}
        self._wakeup = trio.Event()
        self._claiming = trio.CancelScope()
        self._grace = trio.CancelScope()
        self._all_exited = trio.Event()
        self._all_exited.set()
        self._rotation = 0
        self.claimed = 0
        self.claims = 0
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
        """Claim again now (jobs were inserted, or a slot came free)."""
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
                nursery.start_soon(self.summary.run, self._summary_interval)
                task_status.started()
                with self._claiming:
                    await self._claim_loop()
                # Draining: keep renewing the leases of the jobs still running.
                await self._wait_all_exited()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self._store.stop_node(self.node_id)
                except OrchestratorError as exc:
                    logger.warning("could not mark node %s stopped: %s", self.node_id, exc)

    async def drain(self, grace: float, *, release_bound: float = 10.0) -> None:
        """Stop claiming; give running jobs ``grace`` seconds to end; then
        interrupt the rest and put them back in the queue.

        The release writes run shielded, bounded by ``release_bound``
        seconds, so a cancelled caller still leaves no job behind on this
        node if the database answers.
        """
        self._claiming.cancel()
        with trio.move_on_after(grace) as self._grace:
            await self._wait_all_exited()
        with trio.CancelScope(shield=True), trio.move_on_after(release_bound):
            for job_id in list(self._running):
                self._tell(job_id, ReleaseJob())
            await self._wait_all_exited()

    def hurry(self) -> None:
        """Stop claiming and cut the shutdown grace short: running jobs are
        released back to the queue now rather than when the grace ends."""
        self._claiming.cancel()
        self._grace.cancel()

    async def _wait_all_exited(self) -> None:
        while self._running:
            await self._all_exited.wait()

    def _slots(self) -> dict[str, int]:
        free = self._concurrency - len(self._running)
        busy: dict[str, int] = {}
        for running in self._running.values():
            busy[running.queue] = busy.get(running.queue, 0) + 1
        queue_free = {q: limit - busy.get(q, 0) for q, limit in self._queue_limits.items()}
        self._rotation += 1
        return share_slots(free, queue_free, self._rotation)

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
                job, definition, self._writer, self._store, self._clock, self._job_exited, self.summary
            ),
            name=f"job-{job.id}",
            mailbox_size=16,
            restart=Restart.TEMPORARY,
        )
        if ref.is_alive:
            # This node claimed the job again (a rescuer requeued it after
            # this node's lease ran out): the earlier actor's lease is gone.
            self._tell(job.id, LeaseLost())
            self._running[job.id] = _Running(ref, job.lease_token, job.queue)
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
        self.wake()

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

    async def _beat(self) -> None:
        held = dict(self._running)
        renewed = await self._store.renew_leases(self.node_id, self._lease_seconds, [r.token for r in held.values()])
        for job_id, running in held.items():
            if job_id not in renewed and self._running.get(job_id) is running:
                logger.warning("job %s: lease (token %d) lost; cancelling its handler here", job_id, running.token)
                self.summary.lease_lost()
                self._tell(job_id, LeaseLost())
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
