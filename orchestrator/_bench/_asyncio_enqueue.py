"""Enqueue one by one from plain asyncio, as a web service would: in a
process of its own, so that the bench's own ``trio_asyncio`` (which patches
asyncio for the whole process, and slows it) is not in the measurement.

``python -m orchestrator._bench._asyncio_enqueue URL SCHEMA N`` prints one
JSON object: ``jobs_s``, and ``trio_asyncio_loaded`` (must be false).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from .._models import Principal
from ..client import Client

#: The bench's owner (``_ours.OWNER``; not imported from there, which pulls in trio).
OWNER = Principal(user_id="bench", org_id="bench")


async def enqueue(url: str, schema: str, n: int) -> float:
    """jobs/s of ``n`` ``Client.submit`` calls, one after another."""
    client = await Client(url, schema=schema, job_types={"noop": int}).open()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await client.submit("noop", i, owner=OWNER)
        return n / (time.perf_counter() - t0)
    finally:
        await client.close()


def main(argv: list[str]) -> None:
    url, schema, n = argv[0], argv[1], int(argv[2])
    jobs_s = asyncio.run(enqueue(url, schema, n))
    print(json.dumps({"jobs_s": jobs_s, "trio_asyncio_loaded": "trio_asyncio" in sys.modules}))


if __name__ == "__main__":
    main(sys.argv[1:])
