"""The store for plain asyncio: the trio store's statements on an asyncpg pool.

:class:`AsyncioStore` provides :class:`orchestrator._port.ProducerPort`,
running the same named statements from ``sql/queries.sql`` as the trio
store, with the same per-connection setup (``search_path`` set to the schema,
the jsonb codec) and the same error translation. It runs on the caller's asyncio loop and never imports trio_asyncio: importing that patches
asyncio for the whole process, which a host application (FastAPI, aiohttp)
must not pay for.

:class:`DoneListener` and :class:`Watch` let waiters sleep until the
schema's ``done`` notification names their job, with a poll as fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from ._errors import DatabaseUnavailable, StoreError
from ._queries import query
from ._store import (
    DONE_CHANNEL,
    Row,
    check_schema_name,
    init_connection,
    may_retry,
    parse_job_ids,
    translated_errors,
)
from ._waiters import Hints, Waiters

logger = logging.getLogger("orchestrator.client")

APPLICATION_NAME = "trio-orchestrator-client"


class AsyncioStore:
    """Named statements over an asyncpg pool, on the running asyncio loop.

    Args:
        dsn: a ``postgresql://`` URL.
        schema: the schema holding the orchestrator's objects; every
            connection has it as its ``search_path``.
        size: the most connections the pool opens (the notification
            listener's connection is extra).
        connect_timeout: seconds to wait for a new connection.
    """

    def __init__(self, dsn: str, schema: str, size: int, connect_timeout: float) -> None:
        if size < 1:
            raise ValueError(f"pool_size must be at least 1, got {size}")
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self._size = size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        #: Statements run, by name (as the trio store counts them).
        self.statements: dict[str, int] = {}

    def channel(self, name: str) -> str:
        """The notification channel ``name`` of this schema."""
        return f"{self.schema}_{name}"

    def _connect_options(self) -> dict[str, Any]:
        return {
            "timeout": self._connect_timeout,
            "server_settings": {"search_path": self.schema, "application_name": APPLICATION_NAME},
        }

    # -- connections -------------------------------------------------------

    async def open(self) -> None:
        """Create the pool; its first connection is made before this returns.

        Raises:
            DatabaseUnavailable: the server cannot be reached.
        """
        if self._pool is not None:
            raise RuntimeError("this store is already open")
        with translated_errors():
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._size,
                init=init_connection,
                reset=_keep_session,
                **self._connect_options(),
            )

    async def connect(self) -> asyncpg.Connection:
        """A new connection outside the pool, set up as the pool's are.

        Raises:
            DatabaseUnavailable: the server cannot be reached.
        """
        with translated_errors():
            conn: asyncpg.Connection = await asyncpg.connect(self.dsn, **self._connect_options())
            try:
                await init_connection(conn)
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool, waiting up to ``timeout`` seconds for borrowed connections."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except TimeoutError:
            logger.warning("connections still busy after %.1fs; closing them abruptly", timeout)
            pool.terminate()
        except BaseException:
            pool.terminate()
            raise

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def fetch(self, name: str, *args: Any) -> list[Row]:
        """Run statement ``name``; all rows."""
        rows: list[Row] = await self._run("fetch", name, args)
        return rows

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        """Run statement ``name``; the first row, if any."""
        row: Row | None = await self._run("fetchrow", name, args)
        return row

    async def _run(self, method: str, name: str, args: tuple[Any, ...]) -> Any:
        pool = self._pool
        if pool is None:
            raise DatabaseUnavailable("the client is not open")
        self.statements[name] = self.statements.get(name, 0) + 1
        sql = query(name)
        for attempt in (1, 2):
            with translated_errors():
                conn: asyncpg.Connection = await pool.acquire()
            try:
                with translated_errors():
                    return await getattr(conn, method)(sql, *args)
            except DatabaseUnavailable as exc:
                # As in the trio store: the connection is dropped, and so are
                # its idle siblings, which a server restart or a mass
                # termination broke too.
                _terminate(conn)
                await pool.expire_connections()
                if attempt == 1 and may_retry(name, exc):
                    continue
                raise
            finally:
                await pool.release(conn)
        raise AssertionError("unreachable")

    # -- jobs (the ProducerPort protocol) -------------------------------------

    async def submit(
        self,
        *,
        kind: str,
        queue: str,
        owner_user_id: str,
        owner_org_id: str,
        priority: int,
        max_attempts: int,
        delay: float,
        job_ids: Sequence[uuid.UUID],
        payloads_json: Sequence[str],
        unique_keys: Sequence[str | None],
        trace_context: Mapping[str, str] | None = None,
    ) -> list[Row]:
        """Insert queued jobs of one kind, in one statement (``submit_jobs``)."""
        return await self.fetch(
            "submit_jobs", kind, queue, owner_user_id, owner_org_id, priority, max_attempts,
            float(delay), list(job_ids), list(payloads_json), list(unique_keys),
            None if trace_context is None else dict(trace_context),
        )  # fmt: skip

    async def get_job(self, job_id: uuid.UUID, org_id: str) -> Row | None:
        return await self.fetchrow("get_job", job_id, org_id)

    async def get_jobs(self, job_ids: Sequence[uuid.UUID]) -> list[Row]:
        return await self.fetch("get_jobs", list(job_ids))

    async def list_jobs(
        self, org_id: str, *, status: str | None, kind: str | None, queue: str | None, owner: str | None, limit: int
    ) -> list[Row]:
        return await self.fetch("list_jobs", org_id, status, kind, queue, owner, None, None, limit)

    async def cancel_queued(
        self, job_id: uuid.UUID, *, started_at: datetime | None, completed_at: datetime, by: str
    ) -> Row | None:
        return await self.fetchrow("cancel_queued", job_id, started_at, completed_at, by)

    async def request_cancel(self, job_id: uuid.UUID, *, by: str) -> bool:
        return await self.fetchrow("request_cancel", job_id, by) is not None


class Watch(Hints):
    """Interest in some jobs, on asyncio; :meth:`wait_changed` returns on each hint.

    The asyncio twin of :class:`orchestrator._waiters.Watch`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._event = asyncio.Event()

    def _wake(self) -> None:
        self._event.set()

    async def wait_changed(self, timeout: float) -> set[uuid.UUID] | None:
        """Wait for hints that jobs may have ended, or ``timeout`` seconds.

        Returns:
            The ids hinted at since the last call, or ``None`` when every
            watched job should be re-read: the timeout passed with no hint,
            or a hint named no job.
        """
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        else:
            # One commit ends many jobs: let the rest of its notifications
            # arrive before the caller reads.
            await asyncio.sleep(0)
        self._event.clear()
        return self._take()


class DoneListener:
    """LISTEN on the schema's ``done`` channel, on a dedicated connection.

    Each notification (payload: a job id) pokes the waiters of that job. A
    dropped connection is reopened with backoff, and every waiter re-reads
    then, since what was announced meanwhile is lost; waiters also poll, so
    a missed notification only delays them.
    """

    def __init__(self, store: AsyncioStore, waiters: Waiters[Watch]) -> None:
        self._store = store
        self._waiters = waiters
        self._task: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()
        self._closed = False
        self.connected = False

    async def ensure_started(self) -> None:
        """Start listening, if not yet; return after the first attempt to connect.

        A failed first attempt is not an error: waiters poll meanwhile, and
        the listener keeps trying to connect in the background.
        """
        if self._closed:
            return
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="orchestrator-client-listener")
        await self._tried.wait()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        # asyncpg may still deliver notifications it read before the
        # connection closed: after close they are dropped here.
        if self._closed:
            return
        for job_id in parse_job_ids(payload):
            self._waiters.notify(job_id)

    async def _run(self) -> None:
        delay, ceiling = 0.05, 5.0
        first = True
        while not self._closed:
            lost = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._store.connect()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                with translated_errors():
                    await conn.add_listener(self._store.channel(DONE_CHANNEL), self._on_notification)
                self.connected = True
                if not first:
                    # Whatever ended while we were deaf: re-read.
                    self._waiters.notify_all()
                first = False
                self._tried.set()
                delay = 0.05
                await lost.wait()
                logger.warning("notification connection lost; reconnecting in %.2fs", delay)
            except (DatabaseUnavailable, StoreError) as exc:
                logger.warning("cannot listen for finished jobs (%s); retrying in %.2fs", exc, delay)
            except Exception:
                # Waiters still poll; keep trying rather than die quietly.
                logger.exception("listening for finished jobs failed; retrying in %.2fs", delay)
            finally:
                self.connected = False
                self._tried.set()
                if conn is not None and not conn.is_closed():
                    await _close_quietly(conn)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(ceiling, delay * 2)

    async def close(self) -> None:
        """Stop listening; later notifications are ignored."""
        self._closed = True
        self._tried.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to undo.

    asyncpg's default reset sends ``RESET ALL; UNLISTEN *; CLOSE ALL`` and
    unlocks advisory locks on every release: a second round trip per
    statement. The pool's connections only ever run one named statement
    at a time (no ``SET``, ``LISTEN``, cursor, advisory lock or open
    transaction: the listener has a connection of its own), and asyncpg
    still rolls back a transaction left open and drops listeners before
    calling this.
    """


def _terminate(conn: asyncpg.Connection) -> None:
    """Drop a broken connection (a pooled one the pool already let go of is left alone)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


async def _close_quietly(conn: asyncpg.Connection, timeout: float = 1.0) -> None:
    """Close ``conn`` politely if that is quick, else drop it."""
    try:
        await conn.close(timeout=timeout)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()
