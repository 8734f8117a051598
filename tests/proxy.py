"""A TCP proxy in front of the test PostgreSQL that a test can cut: the
database "goes away" for the nodes behind it, and only for them."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

import trio


@dataclass
class CuttableProxy:
    """Forwards 127.0.0.1:``port`` to the server of ``url`` until :meth:`cut`.

    Cut, it drops every connection through it and closes new ones at once,
    as a network partition or a dead server looks to a client.
    """

    url: str
    port: int = 0
    is_cut: bool = False
    _scopes: set[trio.CancelScope] = field(default_factory=set)

    def proxied_url(self) -> str:
        """``url`` through this proxy."""
        parts = urllib.parse.urlsplit(self.url)
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{parts.path}"

    async def _upstream(self) -> trio.abc.Stream:
        parts = urllib.parse.urlsplit(self.url)
        socket_dir = urllib.parse.parse_qs(parts.query).get("host", [None])[0]
        if socket_dir is not None and socket_dir.startswith("/"):
            return await trio.open_unix_socket(f"{socket_dir}/.s.PGSQL.{parts.port or 5432}")
        return await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 5432)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listener.socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, [listener])

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if self.is_cut:
                return
            async with await self._upstream() as upstream:
                with trio.CancelScope() as scope:
                    self._scopes.add(scope)
                    try:
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                            nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
                    finally:
                        self._scopes.discard(scope)

    def cut(self) -> None:
        self.is_cut = True
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self.is_cut = False


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, done: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()
