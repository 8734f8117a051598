"""Test helpers for talking to PostgreSQL directly (setup and inspection)."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import trio


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement on its own connection (from trio); all rows."""
    import trio_asyncio

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    if trio_asyncio.current_loop.get() is not None:
        return await trio_asyncio.aio_as_trio(run)()
    async with trio_asyncio.open_loop():
        return await trio_asyncio.aio_as_trio(run)()


def fetch_sync(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return trio.run(fetch, url, sql, *args)


@asynccontextmanager
async def connections_refused(admin_url: str, database_url: str) -> AsyncIterator[None]:
    """The database of ``database_url`` refuses connections and its open
    ones are terminated, for the block (``admin_url``: another database)."""
    name = urllib.parse.urlsplit(database_url).path.lstrip("/")
    await fetch(admin_url, f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    await fetch(admin_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    try:
        yield
    finally:
        await fetch(admin_url, f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def with_settings(url: str, **settings: str) -> str:
    """``url`` with these server settings (asyncpg sends unknown query parameters as settings)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query) + list(settings.items())
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, the root first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def job_status_reads(plan: dict[str, Any]) -> list[str]:
    """How an EXPLAIN (FORMAT JSON) plan reads job_status: each index used, or "Seq Scan"."""
    found = []
    for node in plan_nodes(plan):
        if node.get("Relation Name") == "job_status" and node["Node Type"] == "Seq Scan":
            found.append("Seq Scan")
        if node.get("Index Name", "").startswith("job_status"):  # bitmap index scans name no relation
            found.append(node["Index Name"])
    return found


def job_status_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's nodes that read job_status."""
    return [node for node in plan_nodes(plan) if node.get("Relation Name") == "job_status"]


def rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's reads of job_status produced or filtered out, over all their loops."""
    return sum(
        (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
        for node in job_status_scans(plan)
    )
