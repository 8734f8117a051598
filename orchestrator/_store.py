"""The store: every conversation with PostgreSQL.

This is the only module that imports asyncpg or trio_asyncio, and it imports
trio_asyncio only when a store is opened: importing it patches asyncio for
the whole process, which a host application must not pay for by merely
importing the package. Statements come from ``sql/queries.sql`` by name.
asyncpg's errors are translated into the package's own exceptions here.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import asyncpg
import trio

from ._database_url import check_database_url
from ._errors import DatabaseUnavailable, OrchestratorError, StoreError
from ._groups import NurseryEdge, peel, reraise
from ._inline import run_inline
from ._metrics import Metrics
from ._migrations import Migration
from ._queries import query
from ._validation import UndecodableJSON

T = TypeVar("T")
logger = logging.getLogger("orchestrator.store")
Row = Mapping[str, Any]

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: Statements that only read, safe to run again after a dropped connection.
READ_STATEMENTS = frozenset(
    {
        "get_job", "get_job_any", "get_jobs", "list_jobs", "next_due", "applied_migrations",
        "job_counts", "job_series", "ping", "list_tokens", "explain_job",
    }
)  # fmt: skip

#: The lifecycle's hot statements, run with generic plans: planned once per
#: connection instead of on every call. Under the default ``plan_cache_mode``
#: PostgreSQL never switches them to a generic plan (it costs the claim for
#: ten queues where the custom plan sees one), so it spent about 15% of each
#: call planning. Every other statement keeps the default: a filtered listing
#: needs a plan for the filters it was given. Their generic plans are checked
#: on a large table in tests/integration/test_generic_plans.py.
GENERIC_PLAN_STATEMENTS = frozenset({"claim_jobs", "apply_transitions", "apply_transitions_and_claim"})

#: Notification channels, each prefixed with the schema name.
JOBS_CHANNEL = "jobs"
DONE_CHANNEL = "done"
CANCEL_CHANNEL = "cancel"
#: Ids of jobs inserted or changed (state, progress), for the event stream.
EVENTS_CHANNEL = "events"


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it is a plain lower-case identifier.

    Raises:
        ValueError: naming the bad schema.
    """
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One guarded write: move ``job_id`` from ``expected`` to ``next``.

    ``None`` fields leave the column as it is (``completed_at`` excepted,
    which is always written: it is ``None`` for every non-terminal state).
    """

    job_id: uuid.UUID
    token: int
    expected: str
    next: str
    started_at: datetime | None = None
    completed_at: datetime | None = None
    run_at: datetime | None = None
    progress: float | None = None
    result: Any = None
    error: Any = None
    attempt: int | None = None


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (
            OSError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.AdminShutdownError,
            asyncpg.CrashShutdownError,
            # The client's protocol state got out of step with the server
            # (seen when a backend is terminated mid-conversation).
            asyncpg.InternalClientError,
        ),
    )


def translate_error(exc: BaseException) -> OrchestratorError | None:
    """The package's exception for an asyncpg or socket error, if it is one."""
    if isinstance(exc, OrchestratorError):
        return exc
    if _is_connection_error(exc):
        return DatabaseUnavailable(f"PostgreSQL is unreachable: {type(exc).__name__}: {exc}")
    if isinstance(exc, asyncpg.PostgresError):
        return StoreError(
            f"PostgreSQL rejected a statement: {type(exc).__name__}: {exc}",
            sqlstate=getattr(exc, "sqlstate", None),
            constraint=getattr(exc, "constraint_name", None),
        )
    return None


def parse_job_ids(payload: str) -> list[uuid.UUID]:
    """The job ids in a notification payload (comma-separated); bad ones are skipped."""
    ids = []
    for part in payload.split(","):
        try:
            ids.append(uuid.UUID(part))
        except ValueError:
            continue
    return ids


def may_retry(name: str, exc: DatabaseUnavailable) -> bool:
    """Whether statement ``name`` may run again on a fresh connection.

    A connection the server closed while it sat in a pool (a restart, a
    terminated backend) fails on first use. Running the statement once more
    cannot run anything twice when it was never sent, or when it only reads.
    """
    unsent = isinstance(exc.__cause__, (asyncpg.InterfaceError, asyncpg.InternalClientError))
    return unsent or name in READ_STATEMENTS


@contextmanager
def translated_errors() -> Iterator[None]:
    """Re-raise asyncpg errors (also alone inside exception groups) as ours.

    Only around the store's own statements: an error of the caller's code
    is not ours to translate.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = peel(group)
        if isinstance(leaf, BaseExceptionGroup):
            raise
        ours = translate_error(leaf)
        if ours is None or ours is leaf:
            reraise(leaf)
        raise ours from leaf
    except Exception as exc:
        ours = translate_error(exc)
        if ours is None or ours is exc:
            raise
        raise ours from exc


async def init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup shared by both stores: jsonb as Python data, and
    decoders that cannot fail on any value a row may hold."""
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=decode_json, schema="pg_catalog")
    await conn.set_type_codec(
        "timestamptz", encoder=encode_timestamp, decoder=decode_timestamp, schema="pg_catalog", format="tuple"
    )


def decode_json(text: str) -> Any:
    """A jsonb value as Python data; :class:`UndecodableJSON` (the raw text)
    for one Python cannot decode (nested too deep, an integer too long), so
    that reading such a row never fails."""
    try:
        return json.loads(text)
    except (RecursionError, ValueError) as exc:
        return UndecodableJSON(text, f"{type(exc).__name__}: {str(exc)[:200]}")


_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_LATEST = datetime.max.replace(tzinfo=timezone.utc)
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def encode_timestamp(moment: datetime) -> tuple[int]:
    """A timezone-aware datetime as PostgreSQL's microseconds since 2000."""
    return ((moment - _PG_EPOCH) // _MICROSECOND,)


def decode_timestamp(value: tuple[int]) -> datetime:
    """PostgreSQL's microseconds since 2000 as an aware UTC datetime.

    A timestamp outside Python's years 1 to 9999 (``infinity``, a year
    33715 written by hand) is clamped to the nearest end rather than
    raising, so no row can make a read, a claim or a wait fail; the
    validation boundary and migration 0004 keep such values out of live
    jobs.
    """
    try:
        return _PG_EPOCH + value[0] * _MICROSECOND
    except OverflowError:
        return _LATEST if value[0] > 0 else _EARLIEST


class Store:
    """Named statements over a small set of connections, callable from trio.

    Connections are handed out by a trio-side pool: asyncpg's own pool costs
    several round trips through trio-asyncio per checkout.
    """

    def __init__(
        self, dsn: str, schema: str, size: int, connect_timeout: float, metrics: Metrics | None = None
    ) -> None:
        self.dsn = dsn
        self.schema = check_schema_name(schema)
        self._size = size
        self._connect_timeout = connect_timeout
        self._idle: list[asyncpg.Connection] = []
        self._slots = trio.Semaphore(size)
        self._all: list[asyncpg.Connection] = []
        #: Connections whose session runs prepared statements with generic plans.
        self._generic: set[asyncpg.Connection] = set()
        self._loop: Any = None
        #: Statements run, by name: the figure to drive down.
        self.statements: dict[str, int] = {}
        #: Latency, errors and reconnects go here.
        self.metrics = Metrics() if metrics is None else metrics
        # Connections dropped as broken and not yet replaced: the next ones
        # opened count as reconnects.
        self._dropped = 0

    def channel(self, name: str) -> str:
        """The notification channel ``name`` of this schema."""
        return f"{self.schema}_{name}"

    # -- connections -------------------------------------------------------

    async def _aio(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        import trio_asyncio

        with translated_errors():
            # Its own loop, not the innermost one: several stores (two
            # orchestrators in one program) each keep their connections on
            # the loop that opened them.
            result: T = await trio_asyncio.aio_as_trio(fn, loop=self._loop)(*args, **kwargs)
            return result

    async def _execute(self, conn: asyncpg.Connection, method: str, sql: str, *args: Any) -> Any:
        """Run one statement on an open connection, inline in the calling
        task (see :mod:`._inline`): cheaper than :meth:`_aio`'s asyncio task."""
        with translated_errors():
            return await run_inline(getattr(conn, method)(sql, *args))

    async def connect(self, *, pooled: bool = True) -> asyncpg.Connection:
        """A new connection with the schema on its search path (``pooled``:
        one of the pool's, replacing a dropped one if any was).

        Raises:
            DatabaseUnavailable: the server cannot be reached.
        """
        try:
            conn: asyncpg.Connection = await self._aio(
                asyncpg.connect,
                self.dsn,
                timeout=self._connect_timeout,
                server_settings={"search_path": self.schema, "application_name": "trio-orchestrator"},
            )
        except StoreError as exc:
            # Refused at the door (database not accepting connections, too
            # many clients, unknown database, bad credentials): unreachable.
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"PostgreSQL did not answer within {self._connect_timeout}s") from exc
        await self._aio(init_connection, conn)
        self._all.append(conn)
        if self._dropped and pooled:
            self._dropped -= 1
            self.metrics.reconnected("pool")
        return conn

    @asynccontextmanager
    async def connection(self, *, generic: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """Borrow a connection; it goes back to the pool only if healthy.

        Args:
            generic: prefer an idle connection already set for generic plans
                (else one that is not); :meth:`use_plans` sets it.
        """
        async with self._slots:
            conn = self._take_idle(generic) or await self.connect()
            healthy = False
            try:
                yield conn
                healthy = True
            except StoreError:
                # The server refused a statement; the connection is fine.
                healthy = True
                raise
            finally:
                if healthy and not conn.is_closed():
                    self._idle.append(conn)
                else:
                    # Cancelled mid-statement, or broken: asyncpg may still be
                    # winding the operation down, so nobody else may use it.
                    self._forget(conn, dropped=True)
                    conn.terminate()

    def _take_idle(self, generic: bool = False) -> asyncpg.Connection | None:
        # Connections the server closed while idle (a restart, a terminated
        # backend) are dropped here rather than failing the caller.
        while self._idle:
            # The most recently returned one in the wanted plan mode, so that
            # switching modes (a round trip) is rare; else the latest.
            index = next(
                (i for i in range(len(self._idle) - 1, -1, -1) if (self._idle[i] in self._generic) == generic), -1
            )
            conn = self._idle.pop(index)
            if not conn.is_closed():
                return conn
            self._forget(conn, dropped=True)
        return None

    async def use_plans(self, conn: asyncpg.Connection, *, generic: bool) -> None:
        """Set ``conn``'s session for generic plans (or back to the default), if it is not already."""
        if (conn in self._generic) == generic:
            return
        self.statements["set_plan_cache_mode"] = self.statements.get("set_plan_cache_mode", 0) + 1
        await self._execute(conn, "fetchval", query("set_plan_cache_mode"), "force_generic_plan" if generic else "auto")
        if generic:
            self._generic.add(conn)
        else:
            self._generic.discard(conn)

    def _drop_idle(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            self._forget(conn, dropped=True)
            conn.terminate()

    def _forget(self, conn: asyncpg.Connection, *, dropped: bool = False) -> None:
        self._generic.discard(conn)
        if conn in self._all:
            self._all.remove(conn)
            self._dropped += dropped

    async def close(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            for conn in list(self._all):
                try:
                    await self._aio(conn.close, timeout=2)
                except (OrchestratorError, Exception):
                    conn.terminate()
            self._all.clear()
            self._idle.clear()
            self._generic.clear()

    async def fetch(self, name: str, *args: Any) -> list[Row]:
        """Run statement ``name``; all rows."""
        rows: list[Row] = await self._run("fetch", name, args)
        return rows

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        row: Row | None = await self._run("fetchrow", name, args)
        return row

    async def fetchval(self, name: str, *args: Any) -> Any:
        return await self._run("fetchval", name, args)

    async def _run(
        self, method: str, name: str, args: tuple[Any, ...], conn: asyncpg.Connection | None = None
    ) -> Any:
        self.statements[name] = self.statements.get(name, 0) + 1
        began = time.perf_counter()
        try:
            if conn is not None:
                # A pinned connection: no second try on another one.
                await self.use_plans(conn, generic=name in GENERIC_PLAN_STATEMENTS)
                return await self._execute(conn, method, query(name), *args)
            return await self._run_once_more(method, name, args)
        except DatabaseUnavailable:
            self.metrics.database_error(name, "unavailable")
            raise
        except StoreError:
            self.metrics.database_error(name, "rejected")
            raise
        finally:
            self.metrics.statement(name, time.perf_counter() - began)

    async def _run_once_more(self, method: str, name: str, args: tuple[Any, ...]) -> Any:
        sql = query(name)
        generic = name in GENERIC_PLAN_STATEMENTS
        for attempt in (1, 2):
            async with self.connection(generic=generic) as conn:
                sent = False
                try:
                    await self.use_plans(conn, generic=generic)
                    sent = True
                    return await self._execute(conn, method, sql, *args)
                except DatabaseUnavailable as exc:
                    # Whatever broke this connection (a restart, a mass
                    # termination) broke its idle siblings too.
                    conn.terminate()
                    self._drop_idle()
                    if attempt == 1 and (not sent or may_retry(name, exc)):
                        continue
                    raise
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def pinned(self) -> AsyncIterator[Pinned]:
        """A connection of its own for the statements of the block, for what
        lives as long as a session does (a session-level advisory lock).

        It is opened for the block and closed after it, outside the pool, so
        a long block never holds one of the pool's connections: with a pool
        of one, claims and writes still run meanwhile. Closing it releases
        whatever the session still held, whether the block ended normally,
        failed or was cancelled.
        """
        conn = await self.connect(pooled=False)
        try:
            yield Pinned(self, conn)
        except BaseException:
            # Maybe mid-statement: asyncpg may still be winding it down.
            self._forget(conn)
            conn.terminate()
            raise
        self._forget(conn)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            try:
                await self._aio(conn.close, timeout=2)
            except (OrchestratorError, Exception):
                conn.terminate()

    # -- schema ------------------------------------------------------------

    async def migrate(self, migrations: Sequence[Migration]) -> list[str]:
        """Apply the migrations this schema lacks; return their names.

        An advisory lock serialises concurrent runners, so each file is
        applied once; each file runs in its own transaction.
        """
        async with self.connection() as conn:
            await self._aio(conn.execute, query("migration_lock"), self.schema)
            try:
                create_schema = await self._aio(conn.fetchval, query("create_schema_statement"), self.schema)
                await self._aio(conn.execute, create_schema)
                await self._aio(conn.execute, query("create_migrations_table"))
                done = {r["name"] for r in await self._aio(conn.fetch, query("applied_migrations"))}
                applied = []
                for migration in migrations:
                    if migration.name in done:
                        continue
                    await self._aio(_apply_migration, conn, migration)
                    applied.append(migration.name)
                # Types created by a migration (the status enum) were unknown
                # when pooled connections cached their codecs.
                for other in self._all:
                    if not other.is_closed():
                        await self._aio(other.reload_schema_state)
                return applied
            finally:
                with trio.CancelScope(shield=True):
                    if not conn.is_closed():
                        await self._aio(conn.execute, query("migration_unlock"), self.schema)

    async def applied_migrations(self) -> list[str]:
        return [r["name"] for r in await self.fetch("applied_migrations")]

    # -- jobs --------------------------------------------------------------

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
        """Insert queued jobs of one kind, in one statement.

        Returns the rows inserted, and the queued or active rows that a
        unique key matched instead.
        """
        return await self.fetch(
            "submit_jobs", kind, queue, owner_user_id, owner_org_id, priority, max_attempts,
            float(delay), list(job_ids), list(payloads_json), list(unique_keys),
            None if trace_context is None else dict(trace_context),
        )  # fmt: skip

    async def get_job(self, job_id: uuid.UUID, org_id: str) -> Row | None:
        return await self.fetchrow("get_job", job_id, org_id)

    async def get_job_any(self, job_id: uuid.UUID) -> Row | None:
        return await self.fetchrow("get_job_any", job_id)

    async def get_jobs(self, job_ids: Sequence[uuid.UUID]) -> list[Row]:
        return await self.fetch("get_jobs", list(job_ids))

    async def list_jobs(
        self, org_id: str, *, status: str | None, kind: str | None, queue: str | None, owner: str | None, limit: int
    ) -> list[Row]:
        return await self.fetch("list_jobs", org_id, status, kind, queue, owner, None, None, limit)

    async def claim(
        self, *, kinds: Sequence[str], slots: Mapping[str, int], node: str, lease_seconds: float
    ) -> list[Row]:
        """Lease and start due jobs: at most ``slots[queue]`` from each queue.

        The rows come back ``active``, with the columns of
        :class:`~orchestrator._claimed.ClaimedJob`.
        """
        queues = list(slots)
        return await self.fetch(
            "claim_jobs", list(kinds), queues, [slots[q] for q in queues], node, float(lease_seconds)
        )

    async def next_due(self, *, kinds: Sequence[str], queues: Sequence[str]) -> float | None:
        """Seconds until the next waiting job of ``kinds`` in ``queues`` is due
        (negative when one is overdue), by the database's clock; ``None``
        when no job waits."""
        due: float | None = await self.fetchval("next_due", list(kinds), list(queues))
        return due

    async def quarantine_malformed(self, limit: int = 1000) -> list[Row]:
        """Fail live jobs that break migration 0004's rules; the rows failed,
        each with ``job_id`` and ``problem``."""
        return await self.fetch("quarantine_malformed", limit)

    async def fail_unusable(self, failures: Sequence[tuple[uuid.UUID, int, str]]) -> set[uuid.UUID]:
        """Fail claimed jobs this node cannot run: ``(job_id, token, reason)``
        each; returns the ids failed."""
        rows = await self.fetch(
            "fail_unusable", [f[0] for f in failures], [f[1] for f in failures], [f[2] for f in failures]
        )
        return {r["job_id"] for r in rows}

    async def apply_transitions(self, rows: Sequence[TransitionRow]) -> set[uuid.UUID]:
        """Persist many guarded transitions in one statement.

        Returns:
            The ids of the jobs whose transition applied.
        """
        applied = await self.fetch("apply_transitions", *_transition_columns(rows))
        return {r["job_id"] for r in applied}

    async def apply_transitions_and_claim(
        self,
        rows: Sequence[TransitionRow],
        *,
        kinds: Sequence[str],
        slots: Mapping[str, int],
        node: str,
        lease_seconds: float,
    ) -> tuple[set[uuid.UUID], list[Row]]:
        """Persist guarded transitions and, in the same statement, claim (as
        :meth:`claim`) up to ``slots[queue]`` jobs, only if every row that
        takes its job off the node applied.

        Returns:
            The ids of the jobs whose transition applied, and the rows
            claimed (the columns of :class:`~orchestrator._claimed.ClaimedJob`).
        """
        queues = list(slots)
        result = await self.fetch(
            "apply_transitions_and_claim", *_transition_columns(rows),
            list(kinds), queues, [slots[q] for q in queues], node, float(lease_seconds),
        )  # fmt: skip
        applied = {r["job_id"] for r in result if not r["claimed"]}
        return applied, [r for r in result if r["claimed"]]

    async def cancel_queued(
        self, job_id: uuid.UUID, *, started_at: datetime | None, completed_at: datetime, by: str
    ) -> Row | None:
        return await self.fetchrow("cancel_queued", job_id, started_at, completed_at, by)

    async def request_cancel(self, job_id: uuid.UUID, *, by: str) -> bool:
        return await self.fetchrow("request_cancel", job_id, by) is not None

    async def renew_leases(self, node: str, lease_seconds: float, tokens: Sequence[int]) -> dict[uuid.UUID, bool]:
        """Heartbeat: extend the leases ``node`` holds with ``tokens``.

        Returns:
            Each renewed job, mapped to whether its cancellation was requested.
        """
        rows = await self.fetch("renew_leases", node, float(lease_seconds), list(tokens))
        return {r["job_id"]: r["cancel_requested"] for r in rows}

    async def register_node(self, node: str, hostname: str, pid: int) -> None:
        await self.fetch("register_node", node, hostname, pid)

    async def stop_node(self, node: str) -> None:
        await self.fetch("stop_node", node)

    async def rescue_expired(self, limit: int = 1000) -> list[Row]:
        """Requeue, fail or cancel jobs whose lease expired; the rows moved."""
        return await self.fetch("rescue_expired", limit)

    async def release_unstarted(
        self, jobs: Sequence[tuple[uuid.UUID, int, datetime | None]]
    ) -> set[uuid.UUID]:
        """Give back claimed jobs that were never started: ``(job_id, token,
        previous_started_at)`` each; returns the ids released."""
        rows = await self.fetch(
            "release_unstarted", [j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs]
        )
        return {r["job_id"] for r in rows}

    # -- notifications -----------------------------------------------------

    @asynccontextmanager
    async def listen(
        self, names: Sequence[str], *, buffer: int = 4096
    ) -> AsyncIterator[trio.MemoryReceiveChannel[tuple[str, str]]]:
        """Receive ``(name, payload)`` for notifications on this schema's channels.

        Notifications are hints (pollers catch what is missed), so when the
        buffer is full new ones are dropped rather than growing without bound.
        """
        send, receive = trio.open_memory_channel[tuple[str, str]](buffer)
        by_channel = {self.channel(name): name for name in names}

        def on_notification(_conn: Any, _pid: int, channel: str, payload: str) -> None:
            try:
                send.send_nowait((by_channel[channel], payload))
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        conn = await self.connect()
        # A dropped connection ends the iteration, so the caller reconnects.
        conn.add_termination_listener(lambda _conn: send.close())
        try:
            for channel in by_channel:
                await self._aio(conn.add_listener, channel, on_notification)
            async with receive:
                yield receive
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                self._forget(conn)
                try:
                    await self._aio(conn.close, timeout=1)
                except Exception:
                    conn.terminate()


def _loop_exception(loop: Any, context: dict[str, Any]) -> None:
    """The store's asyncio loop's exception handler.

    trio-asyncio's default raises whatever reaches the handler into the
    loop's nursery, which ends the store. A future's failure that nobody
    was left to retrieve is not worth that: asyncpg's connect, cancelled at
    shutdown after its protocol was built, leaves a future that fails when
    the half-open transport closes ("Future exception was never
    retrieved"). Such a garbage future is logged; anything else still goes
    to trio-asyncio's handler.
    """
    if "future" in context and "exception was never retrieved" in str(context.get("message", "")):
        logger.warning("asyncio: %s: %r", context["message"], context.get("exception"))
        return
    loop.default_exception_handler(context)


def _transition_columns(rows: Sequence[TransitionRow]) -> tuple[list[Any], ...]:
    """The transitions as the eleven arrays the statements unnest."""
    return (
        [r.job_id for r in rows],
        [r.token for r in rows],
        [r.expected for r in rows],
        [r.next for r in rows],
        [r.started_at for r in rows],
        [r.completed_at for r in rows],
        [r.run_at for r in rows],
        [r.progress for r in rows],
        [r.result for r in rows],
        [r.error for r in rows],
        [r.attempt for r in rows],
    )


class Pinned:
    """Named statements on one connection of a :class:`Store` (see
    :meth:`Store.pinned`), counted and timed as the store's own."""

    def __init__(self, store: Store, conn: asyncpg.Connection) -> None:
        self._store = store
        self._conn = conn

    async def fetch(self, name: str, *args: Any) -> list[Row]:
        rows: list[Row] = await self._store._run("fetch", name, args, self._conn)
        return rows

    async def fetchrow(self, name: str, *args: Any) -> Row | None:
        row: Row | None = await self._store._run("fetchrow", name, args, self._conn)
        return row

    async def fetchval(self, name: str, *args: Any) -> Any:
        return await self._store._run("fetchval", name, args, self._conn)


async def _apply_migration(conn: asyncpg.Connection, migration: Migration) -> None:
    async with conn.transaction():
        await conn.execute(migration.sql)
        await conn.execute(query("record_migration"), migration.name)


async def retry_unavailable(
    what: str,
    fn: Callable[..., Awaitable[T]],
    *args: Any,
    backoff: tuple[float, float] = (0.05, 5.0),
) -> T:
    """``await fn(*args)``, again and again while the database is unreachable.

    For writes and reads a job's progress depends on: the guarded
    statements make a retried write apply at most once. The pause doubles
    from ``backoff[0]`` up to ``backoff[1]`` seconds, with jitter.
    """
    delay, ceiling = backoff
    while True:
        try:
            return await fn(*args)
        except DatabaseUnavailable as exc:
            logger.warning("database unavailable (%s); retrying %s in %.2fs", exc, what, delay)
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(ceiling, delay * 2)


@asynccontextmanager
async def open_store(
    dsn: str,
    *,
    schema: str = "orchestrator",
    size: int = 4,
    connect_timeout: float = 10.0,
    metrics: Metrics | None = None,
) -> AsyncIterator[Store]:
    """Open an asyncio loop inside trio and a store on ``dsn``.

    The first connection is made before this yields, so an unreachable
    database fails here, with :class:`DatabaseUnavailable`. What the
    block raises comes out as itself (see ``_groups``).

    Raises:
        InvalidInput: ``dsn`` is not a well-formed ``postgresql://`` URL.
        DatabaseUnavailable: the database cannot be reached.
    """
    import trio_asyncio

    check_database_url(dsn)
    store = Store(dsn, schema, size, connect_timeout, metrics)
    edge = NurseryEdge()
    with edge.unwrapping():
        async with trio_asyncio.open_loop() as loop:
            store._loop = loop
            loop.set_exception_handler(_loop_exception)
            try:
                async with store.connection():
                    pass
                with edge.body():
                    yield store
            finally:
                await store.close()
