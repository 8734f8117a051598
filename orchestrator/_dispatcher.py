"""The dispatcher: claims due jobs, runs one actor per job, routes cancels.

It claims as many due jobs as it has free slots in one statement, wakes on
a notification when jobs are inserted (polling as a fallback and for delayed
jobs), renews all of this node's leases in one statement per heartbeat, and
delivers cancel requests to the actors of the jobs it runs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

import trio

from actors import ActorDead, ActorRef, MailboxFull, Restart, Supervisor

from ._errors import DatabaseUnavailable
from ._job_actor import CancelRequested, JobActor, JobMessage, ReleaseJob
from ._jobs import Registry
from ._lifecycle import JobState
from ._models import JobRecord
from ._store import Store
from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator.dispatcher")

Clock = Callable[[], datetime]


class Dispatcher:
    """Runs this node's share of the queue.

    Args:
        concurrency: jobs running at once on this node, at most.
        queues: the queues to claim from.
        poll_interval: seconds between claims when no notification comes.
        lease_seconds: how long a claim holds without a heartbeat.
        on_job_exit: called when a job leaves this node (ended or requeued).
    """

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        writer: TransitionWriter,
        supervisor: Supervisor,
        node_id: str,
        concurrency: int,
        queues: Sequence[str],
        poll_interval: float,
        lease_seconds: float,
        clock: Clock,
        on_job_exit: Callable[[uuid.UUID, JobState], None],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._store = store
        self._registry = registry
        self._writer = writer
        self._supervisor = supervisor
        self.node_id = node_id
        self._concurrency = concurrency
        self._queues = list(queues)
        self._poll_interval = poll_interval
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._on_job_exit = on_job_exit
        self._running: dict[uuid.UUID, ActorRef[JobMessage]] = {}
        self._wakeup = trio.Event()
        self._claiming = trio.CancelScope()
        self._all_exited = trio.Event()
        self.claimed = 0
        self.claims = 0

    @property
    def running(self) -> int:
        return len(self._running)

    def wake(self) -> None:
        """Claim again now (jobs were inserted, or a slot came free)."""
        self._wakeup.set()

    def deliver_cancel(self, job_id: uuid.UUID) -> bool:
        """Tell the actor of ``job_id`` to cancel, if it runs here."""
        ref = self._running.get(job_id)
        if ref is None:
            return False
        try:
            ref.tell_nowait(CancelRequested())
        except (ActorDead, MailboxFull):
            return False
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Claim and run jobs until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat)
            task_status.started()
            with self._claiming:
                await self._claim_loop()
            # Draining: keep renewing the leases of the jobs still running.
            await self._wait_all_exited()
            nursery.cancel_scope.cancel()

    async def drain(self, grace: float, *, release_bound: float = 10.0) -> None:
        """Stop claiming; give running jobs ``grace`` seconds to end; then
        interrupt the rest and put them back in the queue.

        The release writes run shielded, bounded by ``release_bound``
        seconds, so a cancelled caller still leaves no job behind on this
        node if the database answers.
        """
        self._claiming.cancel()
        with trio.move_on_after(grace):
            await self._wait_all_exited()
        with trio.CancelScope(shield=True), trio.move_on_after(release_bound):
            for job_id, ref in list(self._running.items()):
                try:
                    await ref.tell(ReleaseJob())
                except ActorDead:
                    pass
                else:
                    logger.info("job %s released: this node is stopping", job_id)
            await self._wait_all_exited()

    async def _wait_all_exited(self) -> None:
        while self._running:
            self._all_exited = trio.Event()
            await self._all_exited.wait()

    async def _claim_loop(self) -> None:
        kinds, queues = self._registry.kinds, self._queues
        # Claiming for every slot that frees costs a statement per job; wait
        # until a fifth of the slots are free (or none is busy), so one
        # statement claims several jobs. The poll tick claims regardless.
        batch = max(1, self._concurrency // 5)
        ticked = True
        while True:
            # A wake-up that arrives while claiming must not be lost, so the
            # event is renewed before the claim, not after it.
            self._wakeup = trio.Event()
            free = self._concurrency - len(self._running)
            wait = self._poll_interval
            if free >= batch or (free > 0 and (ticked or not self._running)):
                try:
                    rows = await self._store.claim(
                        kinds=kinds, queues=queues, limit=free, node=self.node_id, lease_seconds=self._lease_seconds
                    )
                except DatabaseUnavailable as exc:
                    logger.warning("claim failed, database unavailable: %s", exc)
                    rows = []
                self.claimed += len(rows)
                self.claims += 1
                for row in rows:
                    await self._spawn(JobRecord.from_row(row), row["lease_token"])
                if len(rows) == free:
                    ticked = False
                    continue
                if not rows:
                    wait = await self._until_next_due(kinds, queues)
            ticked = False
            with trio.move_on_after(wait) as waited:
                await self._wakeup.wait()
            ticked = waited.cancelled_caught

    async def _until_next_due(self, kinds: list[str], queues: list[str]) -> float:
        try:
            due = await self._store.next_due(kinds=kinds, queues=queues)
        except DatabaseUnavailable:
            return self._poll_interval
        if due is None:
            return self._poll_interval
        until = (due - datetime.now(timezone.utc)).total_seconds()
        return max(0.0, min(self._poll_interval, until))

    async def _spawn(self, job: JobRecord, token: int) -> None:
        definition = self._registry.get(job.kind)
        ref: ActorRef[JobMessage] = await self._supervisor.spawn(
            lambda: JobActor(job, token, definition, self._writer, self._store, self._clock, self._job_exited),
            name=f"job-{job.id}",
            mailbox_size=16,
            restart=Restart.TEMPORARY,
        )
        if ref.is_alive:
            self._running[job.id] = ref

    def _job_exited(self, job: JobRecord, state: JobState) -> None:
        self._running.pop(job.id, None)
        self._on_job_exit(job.id, state)
        if not self._running:
            self._all_exited.set()
        self.wake()

    async def _heartbeat(self) -> None:
        interval = self._lease_seconds / 3
        while True:
            await trio.sleep(interval)
            try:
                cancel_requested = await self._store.renew_leases(self.node_id, self._lease_seconds)
            except DatabaseUnavailable as exc:
                logger.warning("lease renewal failed, database unavailable: %s", exc)
                continue
            for job_id in cancel_requested:
                self.deliver_cancel(job_id)
