"""Prometheus metrics: one registry per Orchestrator, fed from a few hook points.

Each :class:`Metrics` owns a :class:`prometheus_client.CollectorRegistry` of
its own, never the process-wide default one, so two orchestrators in one
process (or one test) keep their figures apart. Every name starts with
``orchestrator_``; labels are only bounded, operator-chosen values (job
kind, queue, state, statement name, outcome), never a payload, job id,
user or organisation.

Where the figures come from:

- the worker's :class:`~orchestrator._summary.Summary` (claims, attempts
  ending, rescues, lease losses, and the jobs the dispatcher moves with
  statements of its own: unusable and malformed rows failed, unstarted
  claims given back): counters and the run-time and queue-wait
  histograms. Per job that costs one dict lookup of a cached
  :class:`_JobSeries` (the ``labels()`` children of its kind and queue) and
  an increment or two.
- ``Orchestrator.cancel``: queued jobs cancelled by one statement.
- the store's ``_run``: statement latency and database errors, by
  statement name; reconnects.
- the writer: rows per batch.
- scrape time (:class:`_Live`): running jobs and actors, mailbox depth, and
  the queue depth as last read (see :meth:`Metrics.run_queue_depth`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from ._errors import InvalidInput, OrchestratorError
from ._validation import check_name

if TYPE_CHECKING:
    from ._claimed import ClaimedJob
    from ._dispatcher import Dispatcher
    from ._store import Row, Store
    from ._writer import TransitionWriter

logger = logging.getLogger("orchestrator.metrics")

#: The media type of a scrape's answer.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Seconds between queue-depth reads; one node per interval recomputes.
QUEUE_DEPTH_INTERVAL = 15.0

_NS = "orchestrator"
# Jobs run from milliseconds to hours; the defaults stop at 10 s.
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_STATEMENT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500)
#: The state a job is left in by each way an attempt ends (Summary's events).
_ENDED_STATE = {
    "completed": "completed", "failed": "failed", "cancelled": "cancelled", "retried": "queued", "released": "queued",
}  # fmt: skip
#: The state a rescue leaves a job in, by its outcome (``queued``: a job
#: claimed but never started only loses its lease, which moves nothing).
_RESCUED_STATE = {"retry": "queued", "cancelled": "cancelled", "failed": "failed", "invalid": "failed"}
#: The label of a kind or queue that is not a valid name (a malformed row
#: written before migration 0004): such text never reaches a label.
INVALID_LABEL = "(invalid)"


def _label(value: Any) -> str:
    try:
        return check_name("label", value)
    except InvalidInput:
        return INVALID_LABEL


class _JobSeries:
    """The children of one (kind, queue), looked up once and kept."""

    __slots__ = ("run_time", "queue_wait", "claimed", "retries", "transitions")

    def __init__(self, metrics: Metrics, kind: str, queue: str) -> None:
        self.run_time = metrics.run_time.labels(kind, queue)
        self.queue_wait = metrics.queue_wait.labels(kind, queue)
        self.claimed = metrics.claimed_jobs.labels(kind, queue)
        self.retries = metrics.retries.labels(kind, queue)
        self.transitions = {
            state: metrics.transitions.labels(kind, queue, state)
            for state in ("active", "queued", "completed", "failed", "cancelled")
        }


class Metrics:
    """One orchestrator's metrics, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.transitions = Counter(
            "transitions", "Job transitions made on this node, by the state they led to.",
            ["kind", "queue", "state"], namespace=_NS, registry=r,
        )  # fmt: skip
        self.run_time = Histogram(
            "run_time_seconds", "Attempts' run time, from start to the end this node wrote.",
            ["kind", "queue"], namespace=_NS, registry=r, buckets=_DURATION_BUCKETS,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "queue_wait_seconds", "Wait from a job being due (enqueued, or its delay or backoff over) to its start.",
            ["kind", "queue"], namespace=_NS, registry=r, buckets=_DURATION_BUCKETS,
        )  # fmt: skip
        self.claims = Counter("claims", "Claim statements run.", namespace=_NS, registry=r)
        self.claimed_jobs = Counter("claimed_jobs", "Jobs claimed.", ["kind", "queue"], namespace=_NS, registry=r)
        self.retries = Counter("retries", "Failed attempts put back for another.", ["kind", "queue"], namespace=_NS, registry=r)
        self.rescues = Counter(
            "rescued_jobs", "Jobs of dead nodes this node moved on, by outcome.", ["outcome"], namespace=_NS, registry=r
        )
        self.lease_losses = Counter(
            "lease_losses", "Jobs whose lease this node found lost (their handler was cancelled).", namespace=_NS, registry=r
        )
        self.database_errors = Counter(
            "database_errors", "Statements that failed: 'unavailable' (unreachable) or 'rejected' by PostgreSQL.",
            ["statement", "error"], namespace=_NS, registry=r,
        )  # fmt: skip
        self.reconnects = Counter(
            "database_reconnects", "Connections opened to replace dropped ones.", ["connection"], namespace=_NS, registry=r
        )
        self.batch_rows = Histogram(
            "writer_batch_rows", "Transitions written per writer statement.", namespace=_NS, registry=r,
            buckets=_BATCH_BUCKETS,
        )  # fmt: skip
        self.statement_seconds = Histogram(
            "statement_seconds", "Statement latency, by statement name.", ["statement"], namespace=_NS, registry=r,
            buckets=_STATEMENT_BUCKETS,
        )  # fmt: skip
        self._series: dict[tuple[str, str], _JobSeries] = {}
        self._statements: dict[str, Any] = {}
        self._live = _Live()
        r.register(self._live)

    def series(self, kind: str, queue: str) -> _JobSeries:
        key = (kind, queue)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _JobSeries(self, kind, queue)
        return series

    # -- hooks -------------------------------------------------------------

    def claimed(self, jobs: Iterable[ClaimedJob]) -> None:
        """One claim statement ran and started ``jobs`` (``active``)."""
        self.claims.inc()
        for job in jobs:
            series = self.series(job.kind, job.queue)
            series.claimed.inc()
            series.transitions["active"].inc()
            due = max(job.run_at, job.created_at)
            # The clocks of nodes may disagree (a retry's run_at is stamped by
            # the node that failed it): never a negative wait.
            series.queue_wait.observe(max(0.0, (job.started_at - due).total_seconds()))

    def ended(self, event: str, kind: str, queue: str, run_time: float) -> None:
        """An attempt ended with ``event`` (see :meth:`Summary.ended`)."""
        series = self.series(kind, queue)
        series.transitions[_ENDED_STATE[event]].inc()
        series.run_time.observe(run_time)
        if event == "retried":
            series.retries.inc()

    def moved(self, rows: Iterable[Row], state: str) -> None:
        """Jobs moved to ``state`` by a statement outside the writer (a
        cancel of a queued job, a row failed as unusable or malformed, an
        unstarted claim given back); each row has the job's kind and queue."""
        for row in rows:
            self.series(_label(row["kind"]), _label(row["queue"])).transitions[state].inc()

    def rescued(self, rows: Sequence[Row]) -> None:
        """Jobs of dead nodes this node moved on (each row has its
        ``outcome``, kind and queue)."""
        for row in rows:
            self.rescues.labels(row["outcome"]).inc()
            state = _RESCUED_STATE.get(row["outcome"])
            if state is not None:
                self.series(_label(row["kind"]), _label(row["queue"])).transitions[state].inc()

    def statement(self, name: str, seconds: float) -> None:
        child = self._statements.get(name)
        if child is None:
            child = self._statements[name] = self.statement_seconds.labels(name)
        child.observe(seconds)

    def database_error(self, name: str, error: str) -> None:
        self.database_errors.labels(name, error).inc()

    def reconnected(self, connection: str) -> None:
        self.reconnects.labels(connection).inc()

    # -- scrape-time figures -----------------------------------------------

    def watch_worker(self, dispatcher: Dispatcher | None, writer: TransitionWriter | None) -> None:
        """Read running jobs, actors and mailboxes from these at scrape time
        (``None``: no worker runs)."""
        self._live.dispatcher = dispatcher
        self._live.writer = writer

    def set_queue_depth(self, depths: Iterable[Row]) -> None:
        """The live jobs by queue and state, as the database last counted them."""
        self._live.set_depths({(d["queue"], d["state"]): int(d["jobs"]) for d in depths})

    async def refresh_queue_depth(self, store: Store, interval: float) -> bool:
        """Read the stored queue depth, recounting it first if no node did in
        the last ``interval`` seconds (one statement); whether this call recounted."""
        row = await store.fetchrow("queue_depth", float(interval))
        if row is None:
            return False
        self.set_queue_depth(row["depths"])
        return bool(row["refreshed"])

    async def run_queue_depth(self, store: Store, interval: float = QUEUE_DEPTH_INTERVAL) -> None:
        """Refresh the queue depth every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.refresh_queue_depth(store, interval)
            except OrchestratorError as exc:
                # The gauge keeps its last figures; the next round tries again.
                logger.warning("could not read the queue depth: %s", exc)
            await trio.sleep(interval)

    def scrape(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)


class _Live(Collector):
    """Gauges read when scraped, so the hot path pays nothing for them."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None
        self.writer: TransitionWriter | None = None
        self._depths: dict[tuple[str, str], int] = {}

    def set_depths(self, depths: dict[tuple[str, str], int]) -> None:
        # A queue and state seen once and now empty reads 0, not absent.
        self._depths = {**dict.fromkeys(self._depths, 0), **depths}

    def collect(self) -> Iterable[Metric]:
        dispatcher, writer = self.dispatcher, self.writer
        running = GaugeMetricFamily(f"{_NS}_running_jobs", "Jobs this node runs now.")
        running.add_metric([], dispatcher.running if dispatcher else 0)
        actors = GaugeMetricFamily(f"{_NS}_running_actors", "Job actors alive on this node.")
        actors.add_metric([], dispatcher.actors if dispatcher else 0)
        mailbox = GaugeMetricFamily(
            f"{_NS}_mailbox_depth", "Messages waiting: in the job actors' mailboxes, in the writer's queue.", labels=["mailbox"]
        )
        mailbox.add_metric(["jobs"], dispatcher.mailbox_depth if dispatcher else 0)
        mailbox.add_metric(["writer"], writer.pending if writer else 0)
        depth = GaugeMetricFamily(
            f"{_NS}_queue_depth", "Live jobs by queue and state, as last counted (cluster-wide).", labels=["queue", "state"]
        )
        for (queue, state), jobs in sorted(self._depths.items()):
            depth.add_metric([queue, state], jobs)
        return [running, actors, mailbox, depth]

    def describe(self) -> Iterable[Metric]:
        return []
