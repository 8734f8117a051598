"""The embedded PostgreSQL: started on demand, reused, stopped by its starter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from orchestrator._embedded import _server_running

SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from orchestrator import Orchestrator, Principal

    orch = Orchestrator(poll_interval=0.1)  # no URL: the embedded server

    @orch.job("echo")
    async def echo(ctx, payload: int) -> int:
        return payload

    async def main():
        alice = Principal(user_id="alice", org_id="acme")
        async with orch.running():
            job = await orch.submit("echo", int(sys.argv[1]), owner=alice)
            final = await orch.wait(job.id, by=alice)
            jobs = await orch.list(by=alice)
        print(final.state.value, final.result, len(jobs), orch.database_url)

    trio.run(main)
    """
)


@pytest.fixture
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("embedded"))
    return root / "pgdata"


def run_script(embedded_dir: Path, value: int) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ORCHESTRATOR_DATABASE_URL"}
    env["ORCHESTRATOR_EMBEDDED_DIR"] = str(embedded_dir)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(value)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


async def test_the_embedded_server_is_started_reused_and_stopped_by_its_starter(embedded_dir: Path) -> None:
    first = await trio.to_thread.run_sync(run_script, embedded_dir, 7)
    assert first[:3] == ["completed", "7", "1"]
    assert first[3] == f"postgresql://postgres:@/postgres?host={embedded_dir}"
    assert (embedded_dir / "PG_VERSION").exists()
    assert not _server_running(embedded_dir), "the process that started the server left it running"

    # A second run reuses the data directory: the first job is still there.
    second = await trio.to_thread.run_sync(run_script, embedded_dir, 8)
    assert second[:3] == ["completed", "8", "2"]
    assert not _server_running(embedded_dir)


async def test_a_process_that_attaches_leaves_the_server_to_its_starter(embedded_dir: Path) -> None:
    from orchestrator._embedded import start_embedded, stop_embedded

    await trio.to_thread.run_sync(start_embedded, embedded_dir)
    try:
        attached = await trio.to_thread.run_sync(run_script, embedded_dir, 1)
        assert attached[:3] == ["completed", "1", "1"]
        assert _server_running(embedded_dir), "an attached process stopped a server it did not start"
    finally:
        await trio.to_thread.run_sync(stop_embedded, embedded_dir)
    assert not _server_running(embedded_dir)
