"""Shared fixtures: a real PostgreSQL, a migrated template, a database per test.

``ORCHESTRATOR_TEST_DATABASE_URL`` names a server to use; without it the
embedded PostgreSQL is started once per session (in a per-user directory
reused across sessions) and stopped at the end.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from tests.pg import fetch, fetch_sync, with_database

TEST_URL_ENV = "ORCHESTRATOR_TEST_DATABASE_URL"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a database on the test server, for admin statements."""
    url = os.environ.get(TEST_URL_ENV)
    if url:
        yield url
        return
    from orchestrator._embedded import start_embedded, stop_embedded

    # One server per test session: sessions running side by side (a developer
    # and CI, say) must not stop each other's server.
    root = Path(tempfile.mkdtemp(prefix="trio-orchestrator-tests-"))
    data_dir = root / "pgdata"
    url = start_embedded(data_dir)
    # Durability buys nothing in tests and costs every commit a flush.
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        fetch_sync(url, f"ALTER SYSTEM SET {setting} = off")
    fetch_sync(url, "SELECT pg_reload_conf()")
    try:
        yield url
    finally:
        stop_embedded(data_dir)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_server: str) -> Iterator[str]:
    """A database migrated from zero, cloned by every test."""
    from orchestrator._migrations import load_migrations
    from orchestrator._store import open_store

    name = f"orch_template_{os.getpid()}"
    fetch_sync(pg_server, f"DROP DATABASE IF EXISTS {name}")
    fetch_sync(pg_server, f"CREATE DATABASE {name}")
    url = with_database(pg_server, name)

    async def migrate() -> None:
        async with open_store(url) as store:
            await store.migrate(load_migrations())

    trio.run(migrate)
    try:
        yield name
    finally:
        fetch_sync(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def database_url(pg_server: str, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test alone."""
    name = f"orch_test_{os.getpid()}_{next(_counter)}"
    await fetch(pg_server, f"CREATE DATABASE {name} TEMPLATE {template_database}")
    try:
        yield with_database(pg_server, name)
    finally:
        with trio.CancelScope(shield=True):
            await fetch(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def empty_database_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = f"orch_empty_{os.getpid()}_{next(_counter)}"
    await fetch(pg_server, f"CREATE DATABASE {name}")
    try:
        yield with_database(pg_server, name)
    finally:
        with trio.CancelScope(shield=True):
            await fetch(pg_server, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
