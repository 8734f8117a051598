"""The memory of a daemon holding sleeping jobs (``orchestrator bench --scale``).

One real daemon (``orchestrator run``, concurrency N) on a fresh database:
its resident set size once it is up and idle, then with N ``sleep`` jobs
(an hour each) claimed and their handlers asleep. The jobs go back to the
queue when the daemon stops (shutdown grace 0), and the database is dropped.
"""

from __future__ import annotations

from typing import Any

import trio

from ._app import build
from ._daemon import open_daemon
from ._db import open_bench_db
from ._ours import OWNER, Progress, Settings, fresh_database, wait_listening
from ._proc import rss_bytes

SLEEP_SECONDS = 3600.0
HOLD_TIMEOUT = 300.0
#: After the last claim, the time the daemon gets to spawn the last actors and
#: let their handlers reach their sleep before its memory is read.
SETTLE_SECONDS = 2.0


async def sleeping_daemon(url: str, s: Settings, n: int, progress: Progress) -> dict[str, Any]:
    """RSS of a daemon idle, and holding ``n`` sleeping jobs; the figures (bytes)."""
    async with fresh_database(url, "orchestrator_sleepers") as db_url:
        producer = build(db_url, schema=s.schema)
        async with producer.running(work=False), open_bench_db(db_url, s.schema) as db:
            async with open_daemon(db_url, db, schema=s.schema, concurrency=n) as daemon:
                await wait_listening(db, daemon.check_alive)
                await trio.sleep(SETTLE_SECONDS)
                idle = rss_bytes(daemon.pid)
                progress(f"submitting {n} sleeping jobs")
                for first in range(0, n, s.batch):
                    await producer.submit_many("sleep", [SLEEP_SECONDS] * min(s.batch, n - first), owner=OWNER)
                with trio.fail_after(HOLD_TIMEOUT):
                    while (active := int(await db.fetchval("count_active"))) < n:
                        daemon.check_alive()
                        progress(f"{active}/{n} jobs active")
                        await trio.sleep(0.1)
                await trio.sleep(SETTLE_SECONDS)
                daemon.check_alive()
                holding = rss_bytes(daemon.pid)
    if idle is None or holding is None:
        raise RuntimeError("cannot read the daemon's RSS from /proc")
    return {
        "jobs": n,
        "idle_rss_bytes": idle,
        "holding_rss_bytes": holding,
        "growth_bytes_per_job": (holding - idle) / n,
    }
