"""Figures of the actor runtime alone (``actors/``), no database.

Run in a subprocess of its own so that its memory is measured from a clean
start (``python -m orchestrator._bench._actors_probe spawn|tell N``; prints
one JSON object):

- ``spawn N [soon|await] [nursery|bare]``: N idle actors under one
  supervisor; seconds (wall and CPU) to spawn them all and the growth of the
  resident set size while they live. ``soon`` (the default) starts them with
  ``spawn_soon`` and waits until every ``on_start`` ran, as the dispatcher
  starts job actors; ``await`` awaits ``spawn`` one actor at a time.
  ``nursery`` (the default) is a plain ``Actor`` with a nursery of its own,
  like a job actor; ``bare`` sets ``uses_nursery = False``.
- ``tell N``: N messages through ``ActorRef.tell`` to one actor that counts
  them; messages per second from the first tell to the last receive.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

import trio
import trio.testing

from actors import Actor, open_supervisor

from ._proc import rss_bytes


class _Idle(Actor[Any]):
    async def receive(self, message: Any) -> None:
        return None


class _BareIdle(_Idle):
    uses_nursery = False


class _Counter(Actor[int]):
    def __init__(self, expected: int, done: trio.Event) -> None:
        self.expected = expected
        self.seen = 0
        self.done = done

    async def receive(self, message: int) -> None:
        self.seen += 1
        if self.seen >= self.expected:
            self.done.set()


async def spawn_idle(n: int, how: str = "soon", kind: str = "nursery") -> dict[str, Any]:
    factory = {"nursery": _Idle, "bare": _BareIdle}[kind]
    gc.collect()
    rss0 = rss_bytes() or 0
    with trio.CancelScope() as scope:
        async with open_supervisor("bench-idle") as supervisor:
            t0 = time.perf_counter()
            c0 = time.process_time()
            if how == "await":
                for i in range(n):
                    await supervisor.spawn(factory, name="idle")
            else:
                for i in range(n):
                    supervisor.spawn_soon(factory, name="idle")
                # Until every on_start has run and every actor waits for mail.
                await trio.testing.wait_all_tasks_blocked()
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - c0
            gc.collect()
            rss1 = rss_bytes() or 0
            alive = len(supervisor.children)
            # Tearing 100,000 actors down one stop message at a time is not the figure.
            scope.cancel()
    grown = rss1 - rss0
    return {
        "actors": n,
        "spawn": how,
        "actor": kind,
        "alive": alive,
        "spawn_s": elapsed,
        "spawn_cpu_s": cpu,
        "rss_growth_bytes": grown,
        "rss_bytes_per_actor": grown / n if n else 0.0,
        "rss_total_bytes": rss1,
    }


async def tell_many(n: int) -> dict[str, Any]:
    done = trio.Event()
    with trio.CancelScope() as scope:
        async with open_supervisor("bench-tell") as supervisor:
            ref = await supervisor.spawn(lambda: _Counter(n, done), name="counter", mailbox_size=1024)
            t0 = time.perf_counter()
            for i in range(n):
                await ref.tell(i)
            await done.wait()
            elapsed = time.perf_counter() - t0
            scope.cancel()
    return {"messages": n, "tell_s": elapsed, "tells_per_s": n / elapsed}


def main(argv: list[str]) -> int:
    what, n, rest = argv[0], int(argv[1]), argv[2:]
    if what == "spawn":
        how, kind = (*rest, "soon", "nursery")[:2]
        figures = trio.run(spawn_idle, n, how, kind)
    else:
        figures = trio.run(tell_many, n)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
