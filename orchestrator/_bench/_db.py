"""The benchmark's own SQL (``bench.sql``), run on a store's connections.

The orchestrator's statements stay in ``orchestrator/sql/queries.sql`` and
are counted in ``Store.statements``; these are the benchmark's setup and
measurement statements, counted apart (``BenchDb.statements``) so that they
can be told from the orchestrator's in the per-job figures.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from .._queries import parse_queries
from .._store import Store, open_store


@functools.cache
def bench_queries() -> dict[str, str]:
    text = resources.files("orchestrator").joinpath("_bench/bench.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, user, query kept)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


class BenchDb:
    """One connection's worth of benchmark statements on one database."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.statements = 0

    async def fetch(self, name: str, *args: Any) -> list[Any]:
        self.statements += 1
        async with self.store.connection() as conn:
            rows: list[Any] = await self.store._aio(conn.fetch, bench_queries()[name], *args)
            return rows

    async def fetchval(self, name: str, *args: Any) -> Any:
        rows = await self.fetch(name, *args)
        return rows[0][0] if rows else None

    async def execute_built(self, name: str, *args: Any) -> None:
        """Run the statement that statement ``name`` builds (CREATE/DROP DATABASE)."""
        statement = await self.fetchval(name, *args)
        async with self.store.connection() as conn:
            await self.store._aio(conn.execute, statement)


@asynccontextmanager
async def open_bench_db(url: str, schema: str = "orchestrator") -> AsyncIterator[BenchDb]:
    """A one-connection store on ``url`` for the benchmark's statements.

    Raises:
        DatabaseUnavailable: the server cannot be reached.
    """
    async with open_store(url, schema=schema, size=1) as store:
        yield BenchDb(store)
