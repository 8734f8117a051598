"""A daemon that traces: ``--app tests.acceptance.tracing_app:orch``.

It installs the global tracer provider, as an application does, with an
exporter writing each finished span as a JSON line to the file named by
``TRACING_APP_SPANS`` (the test reads it after the daemon stops).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from orchestrator import JobContext, Orchestrator


class JsonLinesExporter(SpanExporter):
    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps({
                    "name": span.name,
                    "trace_id": span.context.trace_id,
                    "span_id": span.context.span_id,
                    "parent_id": span.parent.span_id if span.parent is not None else None,
                    "attributes": dict(span.attributes or {}),
                }) + "\n")  # fmt: skip
        return SpanExportResult.SUCCESS


provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["TRACING_APP_SPANS"])))
trace.set_tracer_provider(provider)

orch = Orchestrator(poll_interval=0.2, prune_interval=None)


@orch.job("ship")
async def ship(ctx: JobContext, payload: dict[str, Any]) -> str:
    with trace.get_tracer("the-app").start_as_current_span("shipping"):
        return "shipped"
