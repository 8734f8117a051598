"""OpenTelemetry spans for submissions and attempts, when the ``otel`` extra
is installed; nothing at all otherwise.

A submission gets a ``submit <kind>`` span (kind PRODUCER) in the caller's
current trace: a web request's, say. Its context (the W3C ``traceparent``
and ``tracestate`` carrier) is stored with the jobs (``trace_context``,
migration 0012). Each attempt, on whichever node claims it, gets a
``run <kind>`` span (kind CONSUMER) whose parent is that stored context, and
the handler runs inside it, so the handler's own spans and log correlation
continue the submitter's trace. The attempt span ends when the job leaves
the node, with the outcome (``completed``, ``failed``, ``retried``,
``cancelled``, ``released``, ``lease lost``...).

``opentelemetry`` is imported only by :func:`load_tracing`, which the
orchestrator and the client call when they start, never at
``import orchestrator`` time; without the package, or with
``tracing=False`` (``ORCHESTRATOR_TRACING=false``), they get ``None`` and
the hot path pays one ``is None`` test per job. Spans go to the global
tracer provider unless one is given; with the API alone (no SDK
configured) they are OpenTelemetry's no-op spans.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._claimed import ClaimedJob

logger = logging.getLogger("orchestrator.tracing")

#: The instrumentation scope's name.
SCOPE = "trio-orchestrator"
#: ``messaging.system`` of every span.
SYSTEM = "trio-orchestrator"
#: The longest trace-context entry kept from a stored row or a request
#: header (W3C allows 512 characters of tracestate per entry list).
MAX_CARRIER_TEXT = 1024


@dataclass
class Submission:
    """The submit span's state, for the code that writes the jobs.

    Attributes:
        trace_context: what to store with the jobs; ``None`` when there is
            nothing to continue (tracing off, or a non-recording span with
            no valid context).
    """

    span: Any = None
    trace_context: dict[str, str] | None = None

    def stored(self, records: Sequence[Any]) -> None:
        """The jobs (``JobRecord``) were written: a single job's id goes on the span."""
        if self.span is not None and len(records) == 1:
            self.span.set_attribute("orchestrator.job.id", str(records[0].id))


@dataclass
class Tracing:
    """Starts this orchestrator's spans on one tracer.

    Args:
        tracer: an OpenTelemetry ``Tracer``.
        node: the node id put on attempt spans (``None`` for producers).
    """

    tracer: Any
    node: str | None = None
    _api: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from opentelemetry import context, propagate, trace

        self._api = _Api(trace, propagate, context)

    @contextlib.contextmanager
    def submitting(self, kind: str, queue: str, count: int) -> Iterator[Submission]:
        """A ``submit <kind>`` span around writing ``count`` jobs.

        An exception inside is recorded on the span, which ends with status
        ERROR, and goes on. A span that records nothing (no SDK configured,
        or sampled out) stores no context: its attempts are root spans.
        """
        api = self._api
        span = self.tracer.start_span(f"submit {kind}", kind=api.trace.SpanKind.PRODUCER)
        if not span.is_recording():
            yield Submission()
            return
        span.set_attributes({
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "orchestrator.job.kind": kind,
            "orchestrator.job.queue": queue,
            **({} if count == 1 else {"messaging.batch.message_count": count}),
        })  # fmt: skip
        with api.trace.use_span(span, end_on_exit=True):
            carrier: dict[str, str] = {}
            api.propagate.inject(carrier)
            yield Submission(span, carrier or None)

    def start_attempt(self, job: ClaimedJob) -> Any:
        """A started ``run <kind>`` span for this attempt, child of the
        submission's stored context (a root span when there is none).

        ``None`` when the span would record nothing (the API's no-op tracer,
        or a sampler said no): the attempt then costs no more span work.
        The attributes are set after the start, so that a no-op span costs
        no formatting (a sampler sees only the span's name and kind).
        """
        api = self._api
        parent = api.context.Context()
        carrier = usable_carrier(job.trace_context)
        if carrier:
            try:
                parent = api.propagate.extract(carrier)
            except Exception:  # a row someone else wrote must not stop a worker
                logger.warning("job %s: unusable trace context ignored", job.id, exc_info=True)
        span = self.tracer.start_span(f"run {job.kind}", context=parent, kind=api.trace.SpanKind.CONSUMER)
        if not span.is_recording():
            return None
        job_id = str(job.id)
        span.set_attributes({
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job_id,
            "orchestrator.job.id": job_id,
            "orchestrator.job.kind": job.kind,
            "orchestrator.job.queue": job.queue,
            "orchestrator.job.attempt": job.attempt,
            "orchestrator.job.max_attempts": job.max_attempts,
            **({} if self.node is None else {"orchestrator.node": self.node}),
        })  # fmt: skip
        return span

    def current(self, span: Any) -> contextlib.AbstractContextManager[Any]:
        """Make ``span`` current (for the handler's own spans); it does not
        end on exit."""
        manager: contextlib.AbstractContextManager[Any] = self._api.trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )
        return manager

    def end_attempt(self, span: Any, outcome: str, error: Mapping[str, Any] | None = None) -> None:
        """End an attempt span with the attempt's ``outcome``; a failed or
        retried attempt ends with status ERROR and the handler's error."""
        span.set_attribute("orchestrator.job.outcome", outcome)
        if outcome in ("failed", "retried") and isinstance(error, Mapping):
            api = self._api
            span.set_attribute("error.type", str(error.get("type", "error")))
            span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, str(error.get("message", ""))))
        span.end()

    @contextlib.contextmanager
    def continuing(self, headers: Mapping[str, str]) -> Iterator[None]:
        """Continue the trace of an HTTP request's ``traceparent`` header,
        unless a span is current already (an instrumented server's)."""
        api = self._api
        carrier = usable_carrier({k: headers[k] for k in ("traceparent", "tracestate") if k in headers})
        if not carrier or api.trace.get_current_span().get_span_context().is_valid:
            yield
            return
        token = api.context.attach(api.propagate.extract(carrier))
        try:
            yield
        finally:
            api.context.detach(token)


@dataclass(frozen=True)
class _Api:
    trace: Any
    propagate: Any
    context: Any


def usable_carrier(value: Any) -> dict[str, str] | None:
    """The string entries of a stored or received trace context, bounded;
    ``None`` when nothing usable is left (a row may hold anything)."""
    if not isinstance(value, Mapping):
        return None
    carrier = {
        k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str) and len(v) <= MAX_CARRIER_TEXT
    }
    return carrier or None


def load_tracing(enabled: bool = True, tracer_provider: Any = None, node: str | None = None) -> Tracing | None:
    """This orchestrator's tracing, or ``None``: turned off, or the
    ``opentelemetry`` package is not installed (the ``otel`` extra).

    Args:
        tracer_provider: where spans go (default: the global provider, as
            ``opentelemetry.trace.get_tracer`` finds it when spans start).
        node: the node id for attempt spans.
    """
    if not enabled:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        if tracer_provider is not None:
            logger.warning("a tracer provider was given, but the opentelemetry package is not installed")
        return None
    try:
        version = metadata.version("trio-orchestrator")
    except metadata.PackageNotFoundError:
        version = None
    return Tracing(trace.get_tracer(SCOPE, version, tracer_provider=tracer_provider), node)


def submitting(
    tracing: Tracing | None, kind: str, queue: str, count: int
) -> contextlib.AbstractContextManager[Submission]:
    """:meth:`Tracing.submitting`, or an empty :class:`Submission` without
    tracing (no generator frame on every untraced submit)."""
    if tracing is None:
        return contextlib.nullcontext(Submission())
    return tracing.submitting(kind, queue, count)
