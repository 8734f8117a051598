"""A worker whose PostgreSQL goes away (a partition, for it alone), on a
real server behind a proxy the test cuts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from orchestrator import JobContext, Orchestrator, Principal
from tests.pg import fetch
from tests.proxy import CuttableProxy

ALICE = Principal(user_id="alice", org_id="acme")
LEASE = 3.0


@asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(url)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        yield proxy
        nursery.cancel_scope.cancel()


class Holding:
    """A handler that runs until cancelled, noting when (by the wall clock)."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.stopped = trio.Event()
        self.stopped_at = 0.0

    async def __call__(self, ctx: JobContext, payload: Any) -> None:
        self.started.set()
        try:
            await trio.sleep_forever()
        finally:
            self.stopped_at = time.time()
            self.stopped.set()


def worker_and_producer(url: str, proxied: str, handler: Holding) -> tuple[Orchestrator, Orchestrator]:
    worker = Orchestrator(proxied, node_id="cut-off", lease_seconds=LEASE, poll_interval=0.2, prune_interval=None)
    producer = Orchestrator(url, node_id="producer", prune_interval=None)
    for orch in (worker, producer):
        orch.job("hold", max_attempts=2)(handler)
    return worker, producer


async def lease_of(url: str, job_id: Any) -> Any:
    [row] = await fetch(
        url,
        "SELECT status::text AS status, lease_node, lease_token, extract(epoch FROM lease_expires_at) AS expires"
        " FROM orchestrator.job_status WHERE job_id = $1",
        job_id,
    )
    return row


async def test_a_worker_cut_off_stops_its_handler_before_its_lease_runs_out(database_url: str) -> None:
    handler = Holding()
    async with proxy_to(database_url) as proxy:
        worker, producer = worker_and_producer(database_url, proxy.proxied_url(), handler)
        async with producer.running(work=False):
            async with worker.running():
                job = await producer.submit("hold", {}, owner=ALICE)
                with trio.fail_after(30):
                    await handler.started.wait()
                proxy.cut()
                with trio.fail_after(10 * LEASE):
                    await handler.stopped.wait()
                lease = await lease_of(database_url, job.id)
                # Stopped by the node's own clock, before anyone else may
                # take the job; nothing was written (it could not be).
                assert lease["status"] == "active" and lease["lease_node"] == "cut-off"
                assert handler.stopped_at < float(lease["expires"]), "the handler outlived its lease"
                proxy.restore()


async def test_leaving_running_while_postgresql_is_away_ends_within_its_bounds(database_url: str) -> None:
    handler = Holding()
    async with proxy_to(database_url) as proxy:
        worker, producer = worker_and_producer(database_url, proxy.proxied_url(), handler)
        async with producer.running(work=False):
            job = await producer.submit("hold", {}, owner=ALICE)
            with trio.fail_after(120):
                async with worker.running():
                    with trio.fail_after(30):
                        await handler.started.wait()
                    proxy.cut()
                # Left: the handler was interrupted, its release could not be
                # written, and the job is left leased for a rescuer.
            assert handler.stopped.is_set()
            lease = await lease_of(database_url, job.id)
            assert lease["status"] == "active" and lease["lease_node"] == "cut-off"
