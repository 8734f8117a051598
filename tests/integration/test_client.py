"""The plain-asyncio producer client, against trio workers on a real PostgreSQL.

pytest runs these tests under trio; the client runs on a plain asyncio loop
(a ``SelectorEventLoop``, not trio_asyncio's) in a thread of its own, driven
from the test through :class:`AsyncioThread`. A trio worker, when a test
needs one, is an ``Orchestrator`` running in the test itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import pytest
import trio
from pydantic import BaseModel, ValidationError

from orchestrator import (
    DatabaseUnavailable,
    InvalidInput,
    InvalidJobId,
    JobContext,
    JobNotFound,
    JobState,
    NotAuthorized,
    Orchestrator,
    UnknownJobKind,
)
from orchestrator.client import Client, ClientNotOpen, MissingDatabaseUrl
from tests.integration.helpers import (
    ALICE,
    BOB,
    CAROL_ADMIN,
    MALLORY_ADMIN,
    Size,
    job_rows,
    make_orchestrator,
    one_row,
)
from tests.pg import fetch

T = TypeVar("T")

#: Seconds any one step on the asyncio side may take before the test fails.
STEP_TIMEOUT = 30.0


class AsyncioThread:
    """A plain asyncio event loop running in its own thread, driven from trio.

    Errors the loop reports to its exception handler (a callback that
    raised, a task destroyed while pending) are collected in ``errors``.
    """

    def __init__(self) -> None:
        self.loop = asyncio.SelectorEventLoop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self._thread = threading.Thread(target=self._run, name="asyncio-client", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=STEP_TIMEOUT)
        assert not self._thread.is_alive(), "the asyncio loop did not stop"

    def spawn(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; its result arrives later."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def __call__(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception)."""
        return await self.result(self.spawn(coro), timeout)

    async def result(self, future: concurrent.futures.Future[T], timeout: float = STEP_TIMEOUT) -> T:
        """The result of a future :meth:`spawn` returned, waiting from trio."""
        try:
            value: T = await trio.to_thread.run_sync(future.result, timeout, abandon_on_cancel=True)
            return value
        finally:
            future.cancel()


@pytest.fixture
def aio() -> Iterator[AsyncioThread]:
    thread = AsyncioThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
    assert not thread.errors, f"the asyncio loop reported errors: {thread.errors}"


@asynccontextmanager
async def opened(aio: AsyncioThread, client: Client) -> AsyncIterator[Client]:
    """``client`` opened on the asyncio loop for the block."""
    await aio(client.open())
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await aio(client.close())


async def poll_until(condition: Callable[[], Awaitable[T]], what: str, timeout: float = STEP_TIMEOUT) -> T:
    """Re-check the async ``condition()`` until it is truthy; return its value.

    Raises:
        AssertionError: saying ``what`` did not happen within ``timeout`` seconds.
    """
    with trio.move_on_after(timeout):
        while True:
            value = await condition()
            if value:
                return value
            await trio.sleep(0.02)
    raise AssertionError(f"{what} (waited {timeout}s)")


#: The client's LISTEN connections to the current database.
LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
    " AND application_name = 'trio-orchestrator-client' AND query LIKE 'LISTEN%'"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- submit, get, list ---------------------------------------------------------


async def test_submit_get_and_list_from_asyncio(database_url: str, aio: AsyncioThread) -> None:
    orch = make_orchestrator(database_url)
    client = Client.from_orchestrator(orch)

    async def scenario() -> tuple[Any, ...]:
        async with client:
            job = await client.submit("double", {"w": 3}, owner=ALICE)
            by_id = await client.get(job.id, by=ALICE)
            by_text = await client.get(str(job.id), by=BOB)
            batch = await client.submit_many("gated", [{"w": 1}, {"w": 2}], owner=BOB, priority=7, delay=3600)
            everything = await client.list(by=ALICE)
            queued_doubles = await client.list(by=ALICE, state="queued", kind="double")
            bobs = await client.list(by=ALICE, owner="bob")
            limited = await client.list(by=ALICE, limit=1)
            active = await client.list(by=ALICE, state=JobState.ACTIVE)
            return (
                job,
                by_id,
                by_text,
                batch,
                everything,
                queued_doubles,
                bobs,
                limited,
                active,
                client.store.statements,
            )

    job, by_id, by_text, batch, everything, queued_doubles, bobs, limited, active, statements = await aio(scenario())
    assert (job.kind, job.state, job.payload, job.attempt, job.max_attempts) == (
        "double",
        JobState.QUEUED,
        {"w": 3},
        1,
        1,
    )
    assert (job.owner.user_id, job.owner.org_id, job.queue, job.priority) == ("alice", "acme", "default", 0)
    assert job.started_at is None and job.completed_at is None and job.run_at >= job.created_at
    assert by_id == job and by_text == job
    assert [j.payload for j in batch] == [{"w": 1}, {"w": 2}]
    assert {j.priority for j in batch} == {7} and all(j.owner.user_id == "bob" for j in batch)
    assert {j.id for j in everything} == {job.id, *(j.id for j in batch)}
    assert [j.id for j in queued_doubles] == [job.id]
    assert {j.id for j in bobs} == {j.id for j in batch}
    assert len(limited) == 1 and active == []
    assert statements["submit_jobs"] == 2, "submit_many must insert in one statement"
    rows = await job_rows(database_url)
    assert {r["job_id"] for r in rows} == {job.id, *(j.id for j in batch)}
    assert all(r["status"] == "queued" for r in rows)


async def test_defaults_come_from_the_orchestrators_definitions(database_url: str, aio: AsyncioThread) -> None:
    orch = Orchestrator(database_url, schema="orchestrator", poll_interval=0.5)

    @orch.job("urgent", queue="fast", priority=5, max_attempts=3)
    async def urgent(ctx: JobContext, payload: Size) -> None:
        return None

    client = Client.from_orchestrator(orch)
    assert (client.database_url, client.schema, client.poll_interval, client.kinds) == (
        database_url, "orchestrator", 0.5, ["urgent"],
    )  # fmt: skip
    async with opened(aio, client):
        default = await aio(client.submit("urgent", {"w": 1}, owner=ALICE))
        chosen = await aio(client.submit("urgent", {"w": 1}, owner=ALICE, queue="slow", priority=-1, max_attempts=1))
    assert (default.queue, default.priority, default.max_attempts) == ("fast", 5, 3)
    assert (chosen.queue, chosen.priority, chosen.max_attempts) == ("slow", -1, 1)


async def test_a_bad_payload_names_the_field_and_writes_nothing(database_url: str, aio: AsyncioThread) -> None:
    class Resize(BaseModel):
        width: int
        height: int

    typed = Client(database_url, job_types={"resize": Resize})
    registered = Client.from_orchestrator(make_orchestrator(database_url))
    async with opened(aio, typed), opened(aio, registered):
        with pytest.raises(ValidationError, match="height") as one:
            await aio(typed.submit("resize", {"width": 10, "height": "tall"}, owner=ALICE))
        with pytest.raises(ValidationError, match="w"):
            await aio(registered.submit("double", {"w": "wide"}, owner=ALICE))
        with pytest.raises(ValidationError, match="width"):
            await aio(typed.submit_many("resize", [{"width": 1, "height": 1}, {"height": 1}], owner=ALICE))
        with pytest.raises(ValueError, match="delay"):
            await aio(typed.submit("resize", {"width": 1, "height": 1}, owner=ALICE, delay=-1))
    assert one.value.errors()[0]["loc"] == ("height",)
    assert await job_rows(database_url) == []


async def test_an_unknown_kind_is_refused_unless_the_client_knows_no_kinds(
    database_url: str, aio: AsyncioThread
) -> None:
    registered = Client.from_orchestrator(make_orchestrator(database_url))
    typed = Client(database_url, job_types={"resize": Size})
    untyped = Client(database_url)
    async with opened(aio, registered), opened(aio, typed), opened(aio, untyped):
        with pytest.raises(UnknownJobKind, match="'resize'.*registered: double, gated"):
            await aio(registered.submit("resize", {"w": 1}, owner=ALICE))
        with pytest.raises(UnknownJobKind, match="'double'.*registered: resize"):
            await aio(typed.submit("double", {"w": 1}, owner=ALICE))
        # With no type to say how, nothing but JSON data is stored: a UUID
        # would come back as a string, so it is refused, not converted.
        with pytest.raises(InvalidInput, match=r"payload\['not json'\]: must be JSON data"):
            await aio(untyped.submit("anything", {"not json": object()}, owner=ALICE))
        with pytest.raises(InvalidInput, match=r"payload\.id: must be JSON data.*UUID"):
            await aio(untyped.submit("anything", {"id": uuid.UUID(int=1)}, owner=ALICE))
        assert await job_rows(database_url) == []
        anything = await aio(untyped.submit("anything", {"id": str(uuid.UUID(int=1)), "n": [1, 2.5]}, owner=ALICE))
    assert untyped.kinds is None
    assert (anything.kind, anything.payload) == ("anything", {"id": str(uuid.UUID(int=1)), "n": [1, 2.5]})
    assert [r["job_id"] for r in await job_rows(database_url)] == [anything.id]


async def test_unique_key_returns_the_existing_job(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, job_types={"double": Size})
    async with opened(aio, client):
        first = await aio(client.submit("double", {"w": 1}, owner=ALICE, unique_key="report-7"))
        again = await aio(client.submit("double", {"w": 2}, owner=BOB, unique_key="report-7"))
        mixed = await aio(
            client.submit_many("double", [{"w": 3}, {"w": 4}], owner=ALICE, unique_keys=["report-7", "report-8"])
        )
        other_org = await aio(client.submit("double", {"w": 5}, owner=MALLORY_ADMIN, unique_key="report-7"))
        await aio(client.cancel(first.id, by=ALICE))
        after_end = await aio(client.submit("double", {"w": 6}, owner=ALICE, unique_key="report-7"))
    assert again.id == first.id and again.payload == {"w": 1}
    assert mixed[0].id == first.id and mixed[1].id != first.id
    assert other_org.id != first.id
    assert after_end.id != first.id, "a unique key is free again once its job ended"
    assert len(await job_rows(database_url)) == 4


# -- tenancy and cancellation ------------------------------------------------------


async def test_another_organisation_sees_nothing(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, job_types={"double": Size})
    async with opened(aio, client):
        job = await aio(client.submit("double", {"w": 1}, owner=ALICE))
        with pytest.raises(JobNotFound, match="evil-corp"):
            await aio(client.get(job.id, by=MALLORY_ADMIN))
        with pytest.raises(JobNotFound):
            await aio(client.cancel(job.id, by=MALLORY_ADMIN))
        with pytest.raises(JobNotFound):
            await aio(client.wait(job.id, by=MALLORY_ADMIN, timeout=5))
        with pytest.raises(JobNotFound):
            await aio(client.get(uuid.uuid4(), by=ALICE))
        with pytest.raises(InvalidJobId, match="'nope'"):
            await aio(client.get("nope", by=ALICE))
        assert await aio(client.list(by=MALLORY_ADMIN)) == []
    row = await one_row(database_url, job.id)
    assert row["status"] == "queued" and row["cancel_requested_at"] is None


async def test_the_owner_cancels_a_queued_job(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, job_types={"double": Size})
    async with opened(aio, client):
        job = await aio(client.submit("double", {"w": 1}, owner=ALICE))
        outcome = await aio(client.cancel(job.id, by=ALICE))
        again = await aio(client.cancel(str(job.id), by=ALICE))
        final = await aio(client.wait(job.id, by=ALICE, timeout=5))
    assert (outcome.job_id, outcome.cancelled, outcome.state, outcome.reason) == (
        job.id, True, JobState.CANCELLED, None,
    )  # fmt: skip
    assert (again.cancelled, again.state, again.reason) == (False, JobState.CANCELLED, "already cancelled")
    assert final.state is JobState.CANCELLED and final.cancel_requested
    row = await one_row(database_url, job.id)
    assert row["status"] == "cancelled" and row["started_at"] is None
    assert row["completed_at"] > row["created_at"]


async def test_a_non_owner_is_refused_and_nothing_changes(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, job_types={"double": Size})
    async with opened(aio, client):
        job = await aio(client.submit("double", {"w": 1}, owner=ALICE))
        before = await job_rows(database_url)
        with pytest.raises(NotAuthorized, match="'bob' may not cancel"):
            await aio(client.cancel(job.id, by=BOB))
        assert await job_rows(database_url) == before
        by_admin = await aio(client.cancel(job.id, by=CAROL_ADMIN))
    assert by_admin.cancelled and by_admin.state is JobState.CANCELLED
    assert (await one_row(database_url, job.id))["status"] == "cancelled"


# -- with a trio worker ------------------------------------------------------------


async def test_a_trio_worker_runs_what_the_client_submits(database_url: str, aio: AsyncioThread) -> None:
    orch = make_orchestrator(database_url)
    # A long poll: only the done notification can wake the waits in time.
    client = Client.from_orchestrator(orch, poll_interval=600)
    async with orch.running(), opened(aio, client):
        job = await aio(client.submit("double", {"w": 3}, owner=ALICE))
        final = await aio(client.wait(job.id, by=ALICE, timeout=20))
        batch = await aio(client.submit_many("double", [{"w": 4}, {"w": 5}], owner=ALICE))
        finals = await aio(client.wait_many([j.id for j in reversed(batch)], by=ALICE, timeout=20))
    assert (final.state, final.result, final.attempt) == (JobState.COMPLETED, {"w": 6}, 1)
    assert final.created_at < final.started_at < final.completed_at
    assert [(j.id, j.state, j.result) for j in finals] == [
        (batch[1].id, JobState.COMPLETED, {"w": 10}),
        (batch[0].id, JobState.COMPLETED, {"w": 8}),
    ]


async def test_cancelling_a_running_job_from_the_client_reaches_the_trio_worker(
    database_url: str, aio: AsyncioThread
) -> None:
    orch = make_orchestrator(database_url, poll_interval=600)
    client = Client.from_orchestrator(orch)
    async with orch.running(), opened(aio, client):
        job = await aio(client.submit("gated", {"w": 1}, owner=ALICE))
        with trio.fail_after(STEP_TIMEOUT):
            await orch.gate.started.wait()
        with pytest.raises(NotAuthorized):
            await aio(client.cancel(job.id, by=BOB))
        assert (await aio(client.get(job.id, by=ALICE))).state is JobState.ACTIVE
        outcome = await aio(client.cancel(job.id, by=ALICE))
        final = await aio(client.get(job.id, by=ALICE))
    assert (outcome.cancelled, outcome.state, outcome.reason) == (True, JobState.CANCELLED, None)
    assert orch.gate.cancelled, "the handler on the trio worker was not interrupted"
    assert final.state is JobState.CANCELLED and final.cancel_requested
    row = await one_row(database_url, job.id)
    assert row["created_at"] < row["started_at"] < row["completed_at"]


async def test_cancelling_a_job_that_already_completed_says_so(database_url: str, aio: AsyncioThread) -> None:
    orch = make_orchestrator(database_url)
    client = Client.from_orchestrator(orch)
    async with orch.running(), opened(aio, client):
        job = await aio(client.submit("double", {"w": 1}, owner=ALICE))
        await aio(client.wait(job.id, by=ALICE, timeout=20))
        outcome = await aio(client.cancel(job.id, by=ALICE))
    assert (outcome.cancelled, outcome.state, outcome.reason) == (False, JobState.COMPLETED, "already completed")


# -- waiting -----------------------------------------------------------------------


async def test_wait_times_out_on_a_job_that_does_not_end(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, poll_interval=0.05)
    async with opened(aio, client):
        job = await aio(client.submit("nobody-runs-this", {}, owner=ALICE))
        with pytest.raises(TimeoutError):
            await aio(client.wait(job.id, by=ALICE, timeout=0.3))
    assert (await one_row(database_url, job.id))["status"] == "queued"


async def test_wait_falls_back_to_polling_without_notifications(database_url: str, aio: AsyncioThread) -> None:
    # Statements announce through notify_job_ids (migration 0007): silence it.
    await fetch(
        database_url,
        "CREATE OR REPLACE FUNCTION orchestrator.notify_job_ids(channel text, ids uuid[])"
        " RETURNS integer LANGUAGE sql AS 'SELECT 0'",
    )
    client = Client(database_url, poll_interval=0.05)
    async with opened(aio, client):
        job = await aio(client.submit("x", {}, owner=ALICE))
        waiting = aio.spawn(client.wait(job.id, by=ALICE, timeout=STEP_TIMEOUT))
        outcome = await aio(client.cancel(job.id, by=ALICE))
        final = await aio.result(waiting)
    assert outcome.cancelled and final.state is JobState.CANCELLED


async def test_wait_reconnects_its_listener_and_rereads(database_url: str, aio: AsyncioThread) -> None:
    # Polls are rare, so the wait can only end through the listener.
    client = Client(database_url, poll_interval=600)
    async with opened(aio, client):
        job = await aio(client.submit("x", {}, owner=ALICE))
        waiting = aio.spawn(client.wait(job.id, by=ALICE, timeout=STEP_TIMEOUT))
        [first] = await poll_until(lambda: fetch(database_url, LISTENERS), "the client never listened")
        await fetch(database_url, "SELECT pg_terminate_backend($1)", first["pid"])

        async def relistened() -> bool:
            pids = {r["pid"] for r in await fetch(database_url, LISTENERS)}
            return bool(pids) and first["pid"] not in pids

        await poll_until(relistened, "the client did not listen again")
        await aio(client.cancel(job.id, by=ALICE))
        final = await aio.result(waiting)
    assert final.state is JobState.CANCELLED


async def test_closing_ends_waits_and_tolerates_late_notifications(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, poll_interval=600)
    await aio(client.open())
    job = await aio(client.submit("x", {}, owner=ALICE))
    waiting = aio.spawn(client.wait(job.id, by=ALICE, timeout=STEP_TIMEOUT))

    async def notify_while_closing() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            # Separate statements: the server folds repeats within one.
            for n in range(100):
                await conn.execute("SELECT pg_notify('orchestrator_done', $1)", str(uuid.UUID(int=n)))
            closing = asyncio.ensure_future(client.close())
            for n in range(100):
                await conn.execute("SELECT pg_notify('orchestrator_done', $1)", str(uuid.uuid4()))
                await conn.execute("SELECT pg_notify('orchestrator_done', $1)", str(job.id))
            await closing
        finally:
            await conn.close()

    await poll_until(lambda: fetch(database_url, LISTENERS), "the client never listened")
    await aio(notify_while_closing())
    with pytest.raises(ClientNotOpen, match="closed"):
        await aio.result(waiting)
    with pytest.raises(ClientNotOpen, match="closed"):
        await aio(client.get(job.id, by=ALICE))
    assert (await one_row(database_url, job.id))["status"] == "queued"


async def test_a_client_must_be_open(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url)
    with pytest.raises(ClientNotOpen, match="async with Client"):
        await aio(client.submit("x", {}, owner=ALICE))
    async with opened(aio, client):
        with pytest.raises(RuntimeError, match="opens once"):
            await aio(client.open())
    await aio(client.close())
    assert not client.is_open


# -- configuration and the database ------------------------------------------------


async def test_connections_the_server_dropped_are_replaced(database_url: str, aio: AsyncioThread) -> None:
    client = Client(database_url, job_types={"double": Size})
    kill = (
        "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'trio-orchestrator-client'"
    )

    async def gone(pids: list[int]) -> bool:
        return not await fetch(database_url, "SELECT 1 FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids)

    async with opened(aio, client):
        job = await aio(client.submit("double", {"w": 1}, owner=ALICE))
        assert await fetch(database_url, kill), "the client has no connection to drop"
        # A read right away: it may meet the dying connection, and is retried.
        assert (await aio(client.get(job.id, by=ALICE))).id == job.id
        killed = [r["pid"] for r in await fetch(database_url, kill)]
        # A write is not retried once sent (it may have run), so it goes
        # after the server has closed the old connections.
        await poll_until(lambda: gone(killed), "the terminated backends did not exit")
        second = await aio(client.submit("double", {"w": 2}, owner=ALICE))
    assert {r["job_id"] for r in await job_rows(database_url)} == {job.id, second.id}


async def test_a_pooled_connection_goes_back_without_a_reset_round_trip(
    database_url: str, aio: AsyncioThread
) -> None:
    # asyncpg's default reset (RESET ALL, UNLISTEN *, ...) is a second round
    # trip on every release; the pool's connections keep no session state
    # to undo, so the statement they ran last is the client's own.
    client = Client(database_url, job_types={"double": Size}, pool_size=1)
    async with opened(aio, client):
        await aio(client.submit("double", {"w": 1}, owner=ALICE))
        [backend] = await fetch(
            database_url,
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'trio-orchestrator-client' AND state = 'idle'",
        )
    assert "RESET" not in backend["query"].upper(), backend["query"]
    assert "INSERT INTO job_status" in backend["query"], backend["query"]


async def test_an_unreachable_database_raises_database_unavailable(aio: AsyncioThread) -> None:
    client = Client(f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", connect_timeout=5)
    with pytest.raises(DatabaseUnavailable, match="unreachable"):
        await aio(client.open())
    assert not client.is_open


def test_the_url_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRATOR_DATABASE_URL", raising=False)
    with pytest.raises(MissingDatabaseUrl, match="ORCHESTRATOR_DATABASE_URL.*embedded"):
        Client()
    monkeypatch.setenv("ORCHESTRATOR_DATABASE_URL", "postgresql://env/db")
    assert Client().database_url == "postgresql://env/db"
    assert Client("postgresql://arg/db").database_url == "postgresql://arg/db"
    with pytest.raises(ValueError, match="schema name"):
        Client(schema="Robert'); DROP TABLE students;--")


# -- no trio_asyncio in the host process ------------------------------------------

ROUND_TRIP = """
import asyncio, sys
from orchestrator import JobState, Principal
from orchestrator.client import Client

assert "trio_asyncio" not in sys.modules, "importing the client imported trio_asyncio"

async def main(url):
    alice = Principal(user_id="alice", org_id="acme")
    async with Client(url, poll_interval=600) as client:
        job = await client.submit("double", {"w": 2}, owner=alice)
        assert (await client.get(job.id, by=alice)).id == job.id
        assert [j.id for j in await client.list(by=alice)] == [job.id]
        waiting = asyncio.create_task(client.wait(job.id, by=alice, timeout=30))
        outcome = await client.cancel(job.id, by=alice)
        final = await waiting
        assert outcome.cancelled and final.state is JobState.CANCELLED, (outcome, final)

asyncio.run(main(sys.argv[1]))
assert "trio_asyncio" not in sys.modules, "using the client imported trio_asyncio"
print("round trip ok")
"""


async def test_the_client_never_imports_trio_asyncio(database_url: str) -> None:
    imported = await trio.run_process(
        [sys.executable, "-c", "import orchestrator.client, sys; assert 'trio_asyncio' not in sys.modules"],
        capture_stderr=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr.decode()
    used = await trio.run_process(
        [sys.executable, "-c", ROUND_TRIP, database_url], capture_stdout=True, capture_stderr=True, check=False
    )
    assert used.returncode == 0, used.stderr.decode()
    assert used.stdout.decode().strip() == "round trip ok"
    [row] = await job_rows(database_url)
    assert row["status"] == "cancelled"
