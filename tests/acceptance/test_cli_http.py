"""``orchestrator token ...`` and ``orchestrator run --http`` as real processes."""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path

import httpx
import trio

from tests.acceptance.test_cli import ALICE, MALLORY_ADMIN, background_worker, cli, count_jobs, one_error_line, stop_with
from tests.pg import fetch

LISTENING = re.compile(r"http=(http://[^\s,]+)")


async def listening_address(log: Path) -> str:
    """The address the daemon logged it serves on (it binds port 0)."""
    with trio.fail_after(60):
        while not (found := LISTENING.search(log.read_text(errors="replace"))):
            await trio.sleep(0.05)
    return found.group(1)


async def test_token_create_list_revoke(database_url: str) -> None:
    created = await cli(database_url, "token", "create", *ALICE, "--name", "laptop", "--expires-in", "3600", "--json")
    assert created.code == 0, created
    token = created.json()
    plain = await cli(database_url, "token", "create", *MALLORY_ADMIN)
    assert plain.code == 0 and plain.out.strip().startswith("orch_") and len(plain.out.strip().splitlines()) == 1
    listed = await cli(database_url, "token", "list", "--org", "acme", "--json")
    table = await cli(database_url, "token", "list", "--org", "acme")
    revoked = await cli(database_url, "token", "revoke", token["id"])
    unknown = await cli(database_url, "token", "revoke", str(uuid.uuid4()))
    bad = await cli(database_url, "token", "create", *ALICE, "--expires-in", "-5")
    assert token["token"].startswith("orch_") and token["user_id"] == "alice" and token["name"] == "laptop"
    assert [t["id"] for t in listed.json()] == [token["id"]]
    assert "token" not in listed.json()[0] and token["token"] not in listed.out + table.out
    assert "laptop" in table.out and token["id"] in table.out
    assert revoked.code == 0 and f"token {token['id']} revoked" in revoked.out
    assert unknown.code == 4 and "no token" in one_error_line(unknown)
    assert bad.code == 2 and "--expires-in: must be a positive number of seconds" in bad.err
    [row] = await fetch(database_url, "SELECT revoked_at FROM orchestrator.api_tokens WHERE token_id = $1", uuid.UUID(token["id"]))
    assert row["revoked_at"] is not None


async def test_run_serves_http_beside_the_worker(database_url: str, tmp_path: Path) -> None:
    token = (await cli(database_url, "token", "create", *ALICE)).out.strip()
    log = tmp_path / "worker.log"
    async with background_worker(database_url, log, "--http", "127.0.0.1:0") as worker:
        url = await listening_address(log)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            health = await client.get("/healthz")
            job = (await client.post("/api/jobs", json={"kind": "resize", "payload": {"width": 3, "height": 4}})).json()
            done = (await client.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 30})).json()
            dashboard = await client.get("/")
        await stop_with(worker, signal.SIGTERM)
    assert health.json()["status"] == "ok"
    assert done["state"] == "completed" and done["result"] == {"pixels": 12}
    assert "trio-orchestrator" in dashboard.text
    assert worker.returncode == 0


async def test_a_no_work_daemon_serves_the_api_and_runs_nothing(database_url: str, tmp_path: Path) -> None:
    token = (await cli(database_url, "token", "create", *ALICE)).out.strip()
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    async with background_worker(database_url, web_log, "--http", "127.0.0.1:0", "--no-work") as web:
        url = await listening_address(web_log)
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            job = (await client.post("/api/jobs", json={"kind": "resize", "payload": {"width": 2, "height": 2}})).json()
            still = (await client.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 0.5})).json()
            nodes = await fetch(database_url, "SELECT node_id FROM orchestrator.nodes")
            # A worker elsewhere runs it; the web tier answers the wait.
            async with background_worker(database_url, worker_log) as worker:
                done = (await client.get(f"/api/jobs/{job['id']}/wait", params={"timeout": 30})).json()
                await stop_with(worker, signal.SIGTERM)
        await stop_with(web, signal.SIGTERM)
    assert still["state"] == "queued" and nodes == []
    assert done["state"] == "completed"
    assert web.returncode == 0 and "--no-work" in web_log.read_text()


async def test_bad_http_options_are_refused_before_starting(database_url: str) -> None:
    no_http = await cli(database_url, "run", "--app", "tests.acceptance.cli_app:orch", "--no-work")
    bad_bind = await cli(database_url, "run", "--app", "tests.acceptance.cli_app:orch", "--http", "localhost")
    assert no_http.code == 2 and "--http" in one_error_line(no_http)
    assert bad_bind.code == 2 and "HOST:PORT" in one_error_line(bad_bind)
    assert await count_jobs(database_url) == 0
