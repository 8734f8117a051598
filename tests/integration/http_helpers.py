"""Serving an orchestrator over HTTP in the test's trio run, with real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from orchestrator import Orchestrator, Principal
from orchestrator._http import serve_http
from orchestrator._tokens import create_token


@dataclass
class Served:
    """A running orchestrator behind a real HTTP server."""

    orch: Orchestrator
    url: str
    hub: Any = None
    tokens: dict[str, str] = field(default_factory=dict)

    async def token(self, who: Principal, **kwargs: Any) -> str:
        key = f"{who.user_id}@{who.org_id}:{who.role}"
        if key not in self.tokens or kwargs:
            secret, _info = await create_token(self.orch.store, who, **kwargs)
            if kwargs:
                return secret
            self.tokens[key] = secret
        return self.tokens[key]

    async def client(self, who: Principal | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {await self.token(who)}"} if who is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@asynccontextmanager
async def serving(orch: Orchestrator, *, work: bool = True, **options: Any) -> AsyncIterator[Served]:
    """``orch`` running (a worker unless ``work=False``) and served on a free port."""
    async with orch.running(work=work):
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            [url] = await nursery.start(lambda task_status: serve_http(
                orch, "127.0.0.1:0", shutdown_trigger=stop.wait, task_status=task_status, **options
            ))  # fmt: skip
            try:
                yield Served(orch, url)
            finally:
                stop.set()


async def read_events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` pairs of a server-sent event stream; comments as ``("", comment)``."""
    name, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "":
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
