"""The event stream: one LISTEN per server, fanned out to every client.

A statement trigger on INSERT (migration 0006) and the statements that move
jobs themselves (``announce_jobs``, migration 0007) announce on the schema's
``events`` channel the ids of the jobs each statement inserted or moved
(state, attempt, progress). The hub
holds the one listening connection of this server, reads the announced jobs
in one statement per batch of notifications, and hands each record only to
the subscribers of the job's organisation. No client polls.

When the listening connection drops (a database restart), the hub
reconnects with backoff and sends every subscriber a ``resync`` event:
what was announced meanwhile is lost, so clients re-read what they show.
A subscriber too slow to keep up loses events the same way, and gets a
``resync`` once it catches up.
"""

from __future__ import annotations

import logging
import math
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from .._errors import DatabaseUnavailable
from .._models import JobRecord, Principal
from .._store import EVENTS_CHANNEL, Store, parse_job_ids

logger = logging.getLogger("orchestrator.http.events")

#: Ids read in one statement at most.
READ_BATCH = 500


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event."""

    name: str
    data: str

    def encode(self) -> bytes:
        lines = "".join(f"data: {line}\n" for line in self.data.splitlines() or [""])
        return f"event: {self.name}\n{lines}\n".encode()


KEEP_ALIVE = b": keep-alive\n\n"
RESYNC = Event("resync", "{}")


@dataclass(eq=False)
class Subscriber:
    org_id: str
    send: trio.MemorySendChannel[Event]
    missed: bool = field(default=False)

    def offer(self, event: Event) -> None:
        try:
            self.send.send_nowait(event)
        except trio.WouldBlock:
            self.missed = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


class EventHub:
    """Listens once, fans out by organisation.

    Args:
        buffer: events one subscriber may have pending before it misses some.
    """

    def __init__(self, *, buffer: int = 1000) -> None:
        self.buffer = buffer
        self._subscribers: set[Subscriber] = set()
        self.listening = trio.Event()
        #: How many times the listening connection was (re)opened.
        self.connections = 0

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def broadcast(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub.offer(event)

    def publish(self, record: JobRecord) -> None:
        """Hand ``record`` to the subscribers of its organisation."""
        event: Event | None = None
        for sub in list(self._subscribers):
            if sub.org_id == record.owner.org_id:
                event = event or Event("job", record.model_dump_json())
                sub.offer(event)

    async def run(self, store: Store, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        task_status.started()
        delay, ceiling = 0.05, 5.0
        while True:
            try:
                async with store.listen([EVENTS_CHANNEL]) as notifications:
                    self.connections += 1
                    if self.connections > 1:
                        self.broadcast(RESYNC)
                    self.listening.set()
                    delay = 0.05
                    async for _channel, payload in notifications:
                        ids = set(parse_job_ids(payload))
                        # Take what else has arrived, to read it in one statement.
                        while len(ids) < READ_BATCH:
                            try:
                                _channel, more = notifications.receive_nowait()
                            except trio.WouldBlock:
                                break
                            ids.update(parse_job_ids(more))
                        if self._subscribers:
                            await self._read_and_publish(store, ids)
            except DatabaseUnavailable as exc:
                logger.warning("event stream: notification connection lost (%s); reconnecting in %.2fs", exc, delay)
            self.listening = trio.Event()
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(ceiling, delay * 2)

    async def _read_and_publish(self, store: Store, ids: set[uuid.UUID]) -> None:
        try:
            rows = await store.get_jobs(sorted(ids))
        except DatabaseUnavailable as exc:
            logger.warning("event stream: could not read announced jobs (%s)", exc)
            self.broadcast(RESYNC)
            return
        for row in sorted(rows, key=lambda r: (r["created_at"], str(r["job_id"]))):
            self.publish(JobRecord.from_row(row))

    async def stream(self, principal: Principal, *, keep_alive: float = 15.0) -> AsyncIterator[bytes]:
        """The bytes of one client's stream: ``ready``, then its organisation's job events.

        A comment line goes out after ``keep_alive`` quiet seconds, so
        proxies and clients can tell a quiet stream from a dead one.
        """
        send, receive = trio.open_memory_channel[Event](self.buffer)
        sub = Subscriber(principal.org_id, send)
        self._subscribers.add(sub)
        try:
            yield Event("ready", "{}").encode()
            while True:
                with trio.move_on_after(keep_alive if keep_alive > 0 else math.inf) as quiet:
                    event = await receive.receive()
                if quiet.cancelled_caught:
                    yield KEEP_ALIVE
                    continue
                yield event.encode()
                if sub.missed:
                    sub.missed = False
                    yield RESYNC.encode()
        finally:
            self._subscribers.discard(sub)
            send.close()
            receive.close()
