"""trio-orchestrator in the peer benchmark harness (shared/bench/peers).

Same phases and figures as bench_procrastinate.py / bench_pgqueuer.py (see
peerbench_common.py and that folder's README.md); run it beside them:

    PEERS="procrastinate pgqueuer trio_orchestrator" run_all.sh

(with this file copied or symlinked into the harness folder), or alone:

    N=5000 python bench/bench_trio_orchestrator.py

Driver side (enqueue): ``orchestrator.client.Client``, the plain-asyncio
producer (asyncpg pool, no trio-asyncio), on the harness's asyncio loop.
``submit`` and ``submit_many`` are one ``submit_jobs`` statement each (one
job / one batch). Payload: the sequence number, as an ``int`` job type.
Job ids are UUIDs; the harness only passes them to ``one_done_sql``.

Schema: ``python -m orchestrator --database-url DSN migrate`` in a
subprocess (our migrations into the ``orchestrator`` schema).

Worker side: the harness runs ``run_worker`` in an asyncio loop; our worker
is trio, so ``trio.run`` runs in a thread (``loop.run_in_executor``) with an
``Orchestrator(dsn, concurrency=CONCURRENCY)`` whose ``noop`` handler calls
``on_start(seq)``. When the harness's asyncio ``stop`` event is set, a
``trio.Event`` is set through ``trio.from_thread.run_sync`` (with the trio
token), and ``running()`` is left normally (stop claiming, wait for running
jobs, close). ``started()`` is called right after ``running()`` is entered:
the store's first connection, the migration check, the LISTEN connection
and the node registration are done, the writer and dispatcher tasks have
been started (the dispatcher's first claim statement may already be on its
way, a fraction of a millisecond earlier).

Completion = the ``apply_transitions`` UPDATE that sets ``status =
'completed'`` on the job's row in ``orchestrator.job_status``: its commit
time, ``pg_xact_commit_timestamp(xmin)`` (nothing updates a completed row
afterwards). Without track_commit_timestamp, ``completed_at`` (stamped by
the worker just before that write) is used and the rows are counted inexact.

Extra env:
  TRIO_POLL          Orchestrator poll_interval, s (default 1.0, the library's)
  TRIO_POOL          Orchestrator pool_size (default 4, the library's)
  TRIO_CLIENT_POOL   Client pool_size for the enqueuer (default 4, the library's)
  PEERBENCH_DIR      where peerbench_common.py is when this file is not beside
                     it (default /work/shared/bench/peers)
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from importlib.metadata import version
from typing import Any, Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
for _d in (os.environ.get("PEERBENCH_DIR", "/work/shared/bench/peers"), _HERE):
    if os.path.isfile(os.path.join(_d, "peerbench_common.py")) and _d not in sys.path:
        sys.path.insert(0, _d)

import peerbench_common as common  # noqa: E402
from orchestrator import Principal  # noqa: E402
from orchestrator.client import Client  # noqa: E402

KIND = "noop"
SCHEMA = "orchestrator"
OWNER = Principal(user_id="bench", org_id="bench")

_ON = "current_setting('track_commit_timestamp') = 'on'"
_DONE_TS = f"""(CASE WHEN {_ON}
                   THEN extract(epoch FROM pg_xact_commit_timestamp(j.xmin))
                   ELSE extract(epoch FROM j.completed_at) END)::float8"""


class TrioOrchestratorPeer(common.Peer):
    name = "trio_orchestrator"
    default_loop = "asyncio"  # the driver and the worker's host loop; the worker itself runs on trio

    reset_sql = f"TRUNCATE {SCHEMA}.job_status"
    count_done_sql = f"SELECT count(*) FROM {SCHEMA}.job_status WHERE status = 'completed'"
    last_done_sql = f"""
        SELECT max({_DONE_TS}), count(*) FILTER (WHERE NOT {_ON})
          FROM {SCHEMA}.job_status j WHERE j.status = 'completed'"""
    one_done_sql = f"""
        SELECT {_DONE_TS} FROM {SCHEMA}.job_status j
         WHERE j.job_id = %s AND j.status = 'completed'"""

    def versions(self) -> dict[str, str]:
        return {p: version(p) for p in ("trio-orchestrator", "trio", "trio-asyncio", "asyncpg", "pydantic")}

    def variant(self, cfg: common.Config) -> dict[str, Any]:
        return {"poll_interval": self._poll(), "pool": self._pool()}

    @staticmethod
    def _poll() -> float:
        return common.env_float("TRIO_POLL", 1.0)

    @staticmethod
    def _pool() -> int:
        return common.env_int("TRIO_POOL", 4)

    # -- driver side -------------------------------------------------------

    async def open(self, dsn: str, cfg: common.Config) -> None:
        self.dsn = dsn
        self.client: Client | None = None

    async def install_schema(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "orchestrator", "--database-url", self.dsn, "--schema", SCHEMA, "migrate",
            stdout=asyncio.subprocess.DEVNULL,
        )
        if await proc.wait() != 0:
            raise RuntimeError(f"orchestrator migrate exited with {proc.returncode}")
        # The client is opened after the schema exists (it reads nothing at
        # open, but this keeps the order of a real deployment).
        self.client = await Client(
            self.dsn, schema=SCHEMA, pool_size=common.env_int("TRIO_CLIENT_POOL", 4), job_types={KIND: int}
        ).open()

    async def enqueue_one(self, seq: int) -> Any:
        job = await self.client.submit(KIND, seq, owner=OWNER)
        return job.id  # a uuid.UUID; psycopg adapts it for one_done_sql

    async def enqueue_many(self, seqs: list[int]) -> list[Any]:
        jobs = await self.client.submit_many(KIND, seqs, owner=OWNER)
        return [j.id for j in jobs]

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    # -- worker side -------------------------------------------------------

    async def run_worker(
        self,
        dsn: str,
        cfg: common.Config,
        on_start: Callable[[int], None],
        stop: asyncio.Event,
        started: Callable[[], None],
    ) -> None:
        poll, pool = self._poll(), self._pool()
        lock = threading.Lock()
        # Shared between the two threads, under `lock`: the trio side's token
        # and stop event once it runs; `stopping` once the asyncio side wants it.
        shared: dict[str, Any] = {"token": None, "event": None, "stopping": False}

        def run_trio() -> None:
            import trio

            from orchestrator import Orchestrator
            from orchestrator._jobs import JobContext

            async def main() -> None:
                orch = Orchestrator(dsn, schema=SCHEMA, concurrency=cfg.concurrency, poll_interval=poll, pool_size=pool)

                @orch.job(KIND)
                async def noop(ctx: JobContext, payload: int) -> None:
                    on_start(payload)  # writes one dict entry (atomic under the GIL)

                stop_event = trio.Event()
                with lock:
                    shared["token"] = trio.lowlevel.current_trio_token()
                    shared["event"] = stop_event
                    if shared["stopping"]:
                        stop_event.set()
                async with orch.running():
                    started()
                    await stop_event.wait()

            trio.run(main)

        def request_stop() -> None:
            import trio

            with lock:
                shared["stopping"] = True
                token, event = shared["token"], shared["event"]
            if token is not None:
                try:
                    trio.from_thread.run_sync(event.set, trio_token=token)
                except trio.RunFinishedError:
                    pass

        loop = asyncio.get_running_loop()
        worker = loop.run_in_executor(None, run_trio)
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({worker, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not worker.done():
            # from_thread.run_sync blocks until the trio side ran it: keep it off the loop.
            await loop.run_in_executor(None, request_stop)
        stopper.cancel()
        await worker  # re-raises what the trio side raised


if __name__ == "__main__":
    common.main(TrioOrchestratorPeer(), os.path.abspath(__file__))
