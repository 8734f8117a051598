"""The ``orchestrator`` command line (also ``python -m orchestrator``).

Commands: ``migrate``, ``run`` (the worker daemon), ``submit``, ``status``,
``cancel``, ``jobs``, ``wait``, ``demo``, ``bench``. See ``orchestrator
--help`` and ``orchestrator COMMAND --help``.

Exit codes:

    0  success
    1  other error (a rejected statement, a timeout, a bug)
    2  bad usage or bad input: a malformed argument, job id or JSON payload,
       a payload failing validation, an unknown job kind, a bad --app
    3  not authorised (NotAuthorized)
    4  not found: no such job in the organisation (JobNotFound)
    5  the job failed (``wait``), or ``cancel`` was refused because the job
       had already ended
    6  the database is unavailable
    130 interrupted (Ctrl-C) while not running the daemon

``wait`` shows the job's progress while it waits: one line redrawn in place
on a terminal (state, attempt, a progress bar), one line per change of state
otherwise; ``--json`` prints only the final record. ``jobs`` filters by
state, kind, queue and owner.

Settings: a flag wins over its ``ORCHESTRATOR_*`` environment variable,
which wins over the ``--app`` object's own setting (see ``_app.py``).

Errors are one line on stderr naming what was wrong (a JSON log record with
``--log-format json``); ``--log-level DEBUG`` adds the traceback. Nothing
here imports trio_asyncio: the store does, when it opens.

The daemon (``run``) stops on SIGTERM or SIGINT: it stops claiming, gives
running jobs ``--shutdown-grace`` seconds, then the library puts the rest
back in the queue, and it exits 0. A second signal cuts the grace short
(``Orchestrator.hurry_shutdown``); the jobs are still put back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import time
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TextIO, TypeVar

import trio
from pydantic import ValidationError

from ._app import (
    CONCURRENCY_ENV,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    QUEUES_ENV,
    SCHEMA_ENV,
    SHUTDOWN_GRACE_ENV,
    AppLoadError,
    SettingError,
    apply_worker_settings,
    env_setting,
    load_app,
    parse_concurrency,
    parse_queues,
    parse_shutdown_grace,
)
from ._errors import (
    DatabaseUnavailable,
    InvalidJobId,
    JobNotFound,
    NotAuthorized,
    OrchestratorError,
    UnknownJobKind,
)
from ._lifecycle import JobState
from ._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from ._models import CancelOutcome, JobRecord, Principal, parse_job_id
from ._orchestrator import DATABASE_URL_ENV, Orchestrator

logger = logging.getLogger("orchestrator.cli")

T = TypeVar("T")

USER_ENV = "ORCHESTRATOR_USER"
ORG_ENV = "ORCHESTRATOR_ORG"
ROLE_ENV = "ORCHESTRATOR_ROLE"
DEFAULT_SCHEMA = "orchestrator"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_AUTHORIZED = 3
EXIT_NOT_FOUND = 4
EXIT_JOB_FAILED = 5
EXIT_DATABASE = 6
EXIT_INTERRUPTED = 130

#: The database URL the current command resolved, for error messages.
_database_url: str | None = None


class CliError(Exception):
    """An error with its exit code and a one-line message."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# -- small helpers ------------------------------------------------------------


def redact_url(url: str | None) -> str:
    """``url`` with any password replaced by ``***``."""
    if not url:
        return "(none)"
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{netloc[-1]}")
    return urllib.parse.urlunsplit(parts)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_message(exc: ValidationError, context: str) -> str:
    """One line naming every field that failed and why."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "(the whole value)"
        problem = f"{where}: {error.get('msg', 'invalid')}"
        if error.get("type") != "missing" and "input" in error:
            problem += f" (got {_short_repr(error['input'])})"
        problems.append(problem)
    return f"{context}: " + "; ".join(problems)


def _argument(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """``parse`` as an argparse ``type``: its ValueError's message is shown."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


_positive_int = _argument(parse_concurrency, "positive integer")
_non_negative_float = _argument(parse_shutdown_grace, "seconds")
_queue_spec = _argument(parse_queues, "queues")


def _schema(args: argparse.Namespace, fallback: str = DEFAULT_SCHEMA) -> str:
    from ._store import check_schema_name

    schema = args.schema or os.environ.get(SCHEMA_ENV) or fallback
    try:
        return check_schema_name(schema)
    except ValueError as exc:
        raise CliError(f"bad --schema: {exc}", EXIT_USAGE) from None


def _principal(args: argparse.Namespace) -> Principal:
    user = args.user or os.environ.get(USER_ENV)
    org = args.org or os.environ.get(ORG_ENV)
    role = args.role or os.environ.get(ROLE_ENV) or "member"
    missing = [flag for flag, value in (("--user", user), ("--org", org)) if not value]
    if missing:
        raise CliError(
            f"who is acting? give {' and '.join(missing)} (or set {USER_ENV} / {ORG_ENV})",
            EXIT_USAGE,
        )
    if role not in ("member", "admin"):
        raise CliError(f"role {role!r} must be 'member' or 'admin' (from --role or {ROLE_ENV})", EXIT_USAGE)
    try:
        return Principal.model_validate({"user_id": user, "org_id": org, "role": role})
    except ValidationError as exc:
        raise CliError(validation_message(exc, "bad principal"), EXIT_USAGE) from None


def _job_id(text: str) -> str:
    """Check a job id before connecting anywhere."""
    try:
        return str(parse_job_id(text))
    except InvalidJobId as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _plain_orchestrator(args: argparse.Namespace) -> Orchestrator:
    """An orchestrator with no handlers: enough to read, wait and cancel."""
    return Orchestrator(args.database_url, schema=_schema(args))


def _apply_global_settings(orch: Orchestrator, args: argparse.Namespace) -> None:
    """Settings given on the command line win over the environment, which
    wins over the app's own."""
    database_url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if database_url:
        orch.database_url = database_url
    orch.schema = _schema(args, fallback=orch.schema)


async def resolve_database(orch: Orchestrator) -> str:
    """The URL ``orch`` will use, starting the embedded server if needed.

    Raises:
        DatabaseUnavailable: the embedded PostgreSQL could not start.
    """
    global _database_url
    _database_url = orch.database_url or os.environ.get(DATABASE_URL_ENV) or None
    try:
        url = await orch.resolve_database_url()
    except Exception as exc:
        raise DatabaseUnavailable(f"the embedded PostgreSQL could not start: {_one_line(str(exc))}") from exc
    _database_url = url
    return url


@asynccontextmanager
async def _session(orch: Orchestrator, *, work: bool = False) -> AsyncIterator[Orchestrator]:
    await resolve_database(orch)
    async with orch.running(work=work):
        yield orch


# -- output ---------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="microseconds") if moment is not None else "-"


def _progress(value: float) -> str:
    return f"{value * 100:.0f}%"


def _compact(value: Any) -> str:
    if value is None:
        return "-"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)


def render_record(record: JobRecord) -> str:
    """A job as aligned ``field  value`` lines."""
    fields = [
        ("id", str(record.id)),
        ("kind", record.kind),
        ("state", record.state.value + (" (cancel requested)" if record.cancel_requested and not record.is_terminal else "")),
        ("attempt", f"{record.attempt}/{record.max_attempts}"),
        ("progress", _progress(record.progress)),
        ("owner", f"{record.owner.user_id} ({record.owner.org_id})"),
        ("queue", record.queue),
        ("priority", str(record.priority)),
        ("run_at", _when(record.run_at)),
        ("created_at", _when(record.created_at)),
        ("started_at", _when(record.started_at)),
        ("completed_at", _when(record.completed_at)),
        ("payload", _compact(record.payload)),
        ("result", _compact(record.result)),
        ("error", _compact(record.error)),
    ]
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in fields)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def render_jobs(records: Sequence[JobRecord]) -> str:
    if not records:
        return "no jobs"
    rows = [
        [
            str(r.id),
            r.kind,
            r.queue,
            r.state.value,
            f"{r.attempt}/{r.max_attempts}",
            _progress(r.progress),
            r.owner.user_id,
            r.created_at.isoformat(timespec="seconds"),
        ]
        for r in records
    ]
    return render_table(["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PROGRESS", "OWNER", "CREATED"], rows)


def _show(record: JobRecord, as_json: bool) -> None:
    if as_json:
        _print_json(record.model_dump(mode="json"))
    else:
        print(render_record(record))


# -- commands -------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, extras: list[str]) -> int:
    schema = _schema(args)

    async def migrate() -> list[str]:
        from ._migrations import load_migrations
        from ._store import open_store

        url = await resolve_database(Orchestrator(args.database_url, schema=schema))
        async with open_store(url, schema=schema, size=1) as store:
            return await store.migrate(load_migrations())

    applied = trio.run(migrate)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"schema {schema!r} is up to date")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, extras: list[str]) -> int:
    orch = load_app(args.app)
    _apply_global_settings(orch, args)
    apply_worker_settings(
        orch, concurrency=args.concurrency, queues=args.queues, shutdown_grace=args.shutdown_grace
    )
    if not orch.registry.kinds:
        raise CliError(f"--app {args.app!r} registers no job kinds: a worker needs at least one @orch.job", EXIT_USAGE)
    if isinstance(orch.queues, Mapping):
        for queue, limit in orch.queues.items():
            if int(limit) > orch.concurrency:
                logger.warning(
                    "queue %s: its limit %d is above this worker's concurrency %d, so at most %d of its jobs run at once",
                    queue,
                    limit,
                    orch.concurrency,
                    orch.concurrency,
                )
    if orch.queues is not None and not set(orch.queues) & set(orch.registry.queues):
        logger.warning(
            "none of the queues %s has a job kind registered by %s (their queues: %s): this worker will claim nothing",
            ",".join(orch.queues),
            args.app,
            ",".join(orch.registry.queues),
        )
    return trio.run(serve, orch, args.app)


def _render_limits(limits: Mapping[str, int]) -> str:
    return ",".join(f"{queue}={limit}" for queue, limit in limits.items())


async def serve(orch: Orchestrator, app: str = "") -> int:
    """Run a worker until SIGINT or SIGTERM; then stop cleanly; return 0.

    The first signal stops claiming: running jobs get ``orch.shutdown_grace``
    seconds to finish (leaving ``orch.running()`` does that), then the
    library puts the rest back in the queue. A task keeps receiving signals
    throughout; the second one calls ``orch.hurry_shutdown()``, which cuts
    the grace short (the jobs are still put back). A signal before the worker
    has started cancels the start-up.
    """
    stop = trio.Event()
    started = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            startup = trio.CancelScope()

            async def on_signals() -> None:
                received = 0
                async for signum in signals:
                    received += 1
                    name = signal.Signals(signum).name
                    fields = {"node": orch.node_id, "signal": name}
                    if received == 1:
                        stop.set()
                        if not started:
                            logger.info(
                                "received %s: worker %s stops before it started",
                                name,
                                orch.node_id,
                                extra={"event": "worker.stopping", **fields},
                            )
                            startup.cancel()
                            continue
                        running = orch.dispatcher.running if orch.dispatcher is not None else 0
                        logger.info(
                            "received %s: stopping worker %s: no more claims; %d running job(s) get up to %gs to "
                            "finish, then go back to the queue (signal again to stop at once)",
                            name,
                            orch.node_id,
                            running,
                            orch.shutdown_grace,
                            extra={
                                "event": "worker.stopping",
                                "running": running,
                                "shutdown_grace": orch.shutdown_grace,
                                **fields,
                            },
                        )
                    elif received == 2:
                        running = orch.dispatcher.running if orch.dispatcher is not None else 0
                        logger.info(
                            "received %s (second signal): worker %s stops at once; %d running job(s) go back to the "
                            "queue now",
                            name,
                            orch.node_id,
                            running,
                            extra={"event": "worker.hurrying", "running": running, **fields},
                        )
                        orch.hurry_shutdown()
                    else:
                        logger.info(
                            "received %s: worker %s is already stopping, putting its running jobs back in the queue",
                            name,
                            orch.node_id,
                            extra={"event": "worker.hurrying", **fields},
                        )

            nursery.start_soon(on_signals)
            with startup:
                url = await resolve_database(orch)
                async with orch.running():
                    started = True
                    limits = orch.queue_limits()
                    logger.info(
                        "worker %s started: app=%s kinds=%s queues=%s concurrency=%d shutdown_grace=%gs "
                        "schema=%s database=%s",
                        orch.node_id,
                        app or "-",
                        ",".join(orch.registry.kinds),
                        _render_limits(limits),
                        orch.concurrency,
                        orch.shutdown_grace,
                        orch.schema,
                        redact_url(url),
                        extra={
                            "event": "worker.started",
                            "node": orch.node_id,
                            "app": app or None,
                            "kinds": list(orch.registry.kinds),
                            "queues": limits,
                            "concurrency": orch.concurrency,
                            "shutdown_grace": orch.shutdown_grace,
                            "schema": orch.schema,
                            "database": redact_url(url),
                        },
                    )
                    # Leaving running() drains: no more claims, the grace,
                    # then the release of whatever still runs.
                    await stop.wait()
            nursery.cancel_scope.cancel()
    logger.info("worker %s stopped", orch.node_id, extra={"event": "worker.stopped", "node": orch.node_id})
    return EXIT_OK


def _read_payload(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"PAYLOAD_JSON is not valid JSON: {exc} (in {_short_repr(text)})", EXIT_USAGE) from None


def cmd_submit(args: argparse.Namespace, extras: list[str]) -> int:
    orch = load_app(args.app)
    _apply_global_settings(orch, args)
    owner = _principal(args)
    payload = _read_payload(args.payload)
    # Check the kind and the payload before touching any database.
    definition = orch.registry.get(args.kind)
    try:
        definition.validate(payload)
    except ValidationError as exc:
        raise CliError(validation_message(exc, f"invalid payload for job kind {args.kind!r}"), EXIT_USAGE) from None

    async def submit() -> JobRecord:
        async with _session(orch):
            return await orch.submit(
                args.kind,
                payload,
                owner=owner,
                delay=args.delay,
                priority=args.priority,
                max_attempts=args.max_attempts,
                queue=args.queue,
            )

    record = trio.run(submit)
    if args.json:
        _print_json(record.model_dump(mode="json"))
    else:
        print(record.id)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = _job_id(args.job_id)
    by = _principal(args)
    orch = _plain_orchestrator(args)

    async def status() -> JobRecord:
        async with _session(orch):
            return await orch.get(job_id, by=by)

    _show(trio.run(status), args.json)
    return EXIT_OK


#: Seconds between reads of the job while ``wait`` shows its progress.
WAIT_POLL_INTERVAL = 0.25


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def _encodable(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class WaitDisplay:
    """What ``wait`` shows while it waits.

    On a terminal (``live``), one line redrawn in place: the job's kind and
    id, state, attempt, a progress bar and the time waited. Otherwise (a
    pipe, a file, a CI log) one line per change of state or attempt, and
    nothing else, so the output reads as a log.
    """

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self.start = time.monotonic()
        self._seen: tuple[JobState, int] | None = None
        self._open_line = False
        fancy = _encodable(out, "█░")
        self._full, self._empty = ("█", "░") if fancy else ("#", "-")

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.start:.1f}s"

    def bar(self, progress: float, width: int = 20) -> str:
        progress = min(1.0, max(0.0, progress))
        filled = round(progress * width)
        return f"[{self._full * filled}{self._empty * (width - filled)}] {progress * 100:3.0f}%"

    def change_line(self, record: JobRecord) -> str:
        """The line a change of state prints (not on a terminal)."""
        text = f"{'+' + self._elapsed():>8}  {record.state.value:<9}  attempt {record.attempt}/{record.max_attempts}"
        if record.state is JobState.QUEUED and record.attempt > 1 and record.error:
            text += f"  (retrying; the last attempt failed: {_compact(record.error)})"
        elif record.state is JobState.FAILED and record.error:
            text += f"  error: {_compact(record.error)}"
        return text

    def live_line(self, record: JobRecord) -> str:
        """The line redrawn on a terminal."""
        progress = 1.0 if record.state is JobState.COMPLETED else record.progress
        return (
            f"{record.kind} {str(record.id)[:8]}  {record.state.value:<9}  "
            f"attempt {record.attempt}/{record.max_attempts}  {self.bar(progress)}  {self._elapsed()}"
        )

    def update(self, record: JobRecord) -> None:
        if self.live:
            width = shutil.get_terminal_size((80, 24)).columns
            line = self.live_line(record)[: max(1, width - 1)]
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()
            self._open_line = True
            return
        key = (record.state, record.attempt)
        if key != self._seen:
            self._seen = key
            print(self.change_line(record), file=self.out, flush=True)

    def close(self) -> None:
        """End a line left open on the terminal (done, or interrupted)."""
        if self._open_line:
            self.out.write("\n")
            self.out.flush()
            self._open_line = False


async def _poll_for_display(
    orch: Orchestrator, job_id: str, by: Principal, display: WaitDisplay, interval: float
) -> None:
    while True:
        await trio.sleep(interval)
        try:
            display.update(await orch.get(job_id, by=by))
        except DatabaseUnavailable:
            pass  # wait() rides out the outage; the display just pauses


async def watch_job(
    orch: Orchestrator,
    job_id: str,
    *,
    by: Principal,
    timeout: float | None,
    display: WaitDisplay | None,
    interval: float = WAIT_POLL_INTERVAL,
) -> JobRecord:
    """Wait for the job to end, showing its progress on ``display``.

    ``orch.wait`` returns as soon as the job's end is announced; meanwhile a
    task reads the job every ``interval`` seconds for the display.

    Raises:
        CliError: ``timeout`` seconds passed first (exit 1).
        JobNotFound, NotAuthorized: as ``orch.get``.
    """
    timed_out = False
    record: JobRecord | None = None
    try:
        if display is not None:
            record = await orch.get(job_id, by=by)
            display.update(record)
        if record is None or not record.is_terminal:
            async with trio.open_nursery() as nursery:
                if display is not None:
                    nursery.start_soon(_poll_for_display, orch, job_id, by, display, interval)
                try:
                    record = await orch.wait(job_id, by=by, timeout=timeout)
                except TimeoutError:
                    timed_out = True
                nursery.cancel_scope.cancel()
        if timed_out or record is None:
            raise CliError(f"job {job_id} did not finish within {timeout:g} s", EXIT_ERROR)
        if display is not None:
            display.update(record)
        return record
    finally:
        if display is not None:
            display.close()


def cmd_wait(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = _job_id(args.job_id)
    by = _principal(args)
    orch = _plain_orchestrator(args)
    # --json is for scripts: the final record and nothing else.
    display = None if args.json else WaitDisplay(sys.stdout, live=_is_terminal(sys.stdout))

    async def wait() -> JobRecord:
        async with _session(orch):
            return await watch_job(orch, job_id, by=by, timeout=args.timeout, display=display)

    record = trio.run(wait)
    if display is not None:
        print()  # the progress above, the job below
    _show(record, args.json)
    if record.state is JobState.FAILED:
        print(f"orchestrator: job {record.id} failed: {_compact(record.error)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = _job_id(args.job_id)
    by = _principal(args)
    orch = _plain_orchestrator(args)

    async def cancel() -> CancelOutcome:
        async with _session(orch):
            return await orch.cancel(job_id, by=by)

    outcome = trio.run(cancel)
    if args.json:
        _print_json(outcome.model_dump(mode="json"))
    elif outcome.cancelled:
        print(f"job {outcome.job_id} cancelled")
    if not outcome.cancelled:
        print(f"orchestrator: job {outcome.job_id} was not cancelled: {outcome.reason or outcome.state.value}", file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, extras: list[str]) -> int:
    by = _principal(args)
    orch = _plain_orchestrator(args)

    async def jobs() -> list[JobRecord]:
        async with _session(orch):
            return await orch.list(
                by=by, state=args.state, kind=args.kind, queue=args.queue, owner=args.owner, limit=args.limit
            )

    records = trio.run(jobs)
    if args.json:
        _print_json([r.model_dump(mode="json") for r in records])
    else:
        print(render_jobs(records))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, extras: list[str]) -> int:
    from ._demo import run_demo

    schema = _schema(args)

    async def demo() -> int:
        url = await resolve_database(Orchestrator(args.database_url, schema=schema))
        return await run_demo(url, schema=schema, live=args.live)

    return trio.run(demo)


def cmd_bench(args: argparse.Namespace, extras: list[str]) -> int:
    try:
        from . import _bench
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}._bench":
            raise
        print("orchestrator: the benchmark is not available in this build (no orchestrator._bench)", file=sys.stderr)
        return EXIT_ERROR
    if args.database_url:
        # A --database-url before `bench` reaches the benchmark too.
        os.environ[DATABASE_URL_ENV] = args.database_url
    code = _bench.main(extras)
    return int(code or 0)


COMMANDS: dict[str, Callable[[argparse.Namespace, list[str]], int]] = {
    "migrate": cmd_migrate,
    "run": cmd_run,
    "submit": cmd_submit,
    "status": cmd_status,
    "cancel": cmd_cancel,
    "jobs": cmd_jobs,
    "wait": cmd_wait,
    "demo": cmd_demo,
    "bench": cmd_bench,
}


# -- the parser -------------------------------------------------------------------

_EXIT_CODES_HELP = """\
exit codes:
  0    success (for run: stopped by SIGTERM or SIGINT, running jobs finished or requeued)
  1    other error (such as wait --timeout running out)
  2    bad usage or input (argument, setting, job id, JSON, payload validation, unknown kind, --app)
  3    not authorised (not the job's owner nor an admin of its organisation)
  4    job not found (in your organisation)
  5    the job failed (wait), or cancel refused because the job had already ended
  6    database unavailable
  130  interrupted (Ctrl-C) outside run
"""

_ENVIRONMENT_HELP = f"""\
environment (a flag wins over its variable, a variable over the --app object's setting):
  {DATABASE_URL_ENV:<29}  --database-url
  {SCHEMA_ENV:<29}  --schema
  {LOG_LEVEL_ENV:<29}  --log-level
  {LOG_FORMAT_ENV:<29}  --log-format
  {CONCURRENCY_ENV:<29}  run --concurrency
  {QUEUES_ENV:<29}  run --queues
  {SHUTDOWN_GRACE_ENV:<29}  run --shutdown-grace
  {USER_ENV:<29}  --user
  {ORG_ENV:<29}  --org
  {ROLE_ENV:<29}  --role
"""

_RUN_HELP = """\
signals:
  The first SIGTERM or SIGINT stops claiming; running jobs get --shutdown-grace
  seconds to finish, then go back to the queue (attempt unchanged) and the worker
  exits 0. A second signal skips the rest of the grace: the jobs go back now.

logs:
  One record per job lifecycle event (logger orchestrator.job), warnings for
  rescued jobs and lost leases. --log-format json writes one JSON object per
  line: ts, level, logger, message, and the event's fields (event, job_id,
  kind, queue, attempt, state, previous_state).
"""


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    # The same options on the main parser and on every command, so they may
    # come before or after the command; a command's copy defaults to
    # SUPPRESS so it never overwrites a value given before the command.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    group = parser.add_argument_group("global options")
    group.add_argument(
        "--database-url",
        metavar="URL",
        default=default(None),
        help=f"PostgreSQL URL (default: ${DATABASE_URL_ENV}, else the embedded PostgreSQL)",
    )
    group.add_argument(
        "--schema",
        metavar="NAME",
        default=default(None),
        help=f"PostgreSQL schema holding the orchestrator's tables (default: ${SCHEMA_ENV}, else '{DEFAULT_SCHEMA}')",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default(None),
        help=f"logging level on stderr (default: ${LOG_LEVEL_ENV}, else INFO for run, WARNING otherwise)",
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default(None),
        help=f"log lines as text, or one JSON object per line (default: ${LOG_FORMAT_ENV}, else text)",
    )


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)

    principal = argparse.ArgumentParser(add_help=False)
    who = principal.add_argument_group("who is acting")
    who.add_argument("--user", metavar="USER", help=f"user id (default: ${USER_ENV})")
    who.add_argument("--org", metavar="ORG", help=f"organisation id (default: ${ORG_ENV})")
    who.add_argument(
        "--role", choices=["member", "admin"], help=f"role in the organisation (default: ${ROLE_ENV}, else member)"
    )

    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = argparse.ArgumentParser(
        prog="orchestrator",
        description="trio-orchestrator: jobs on PostgreSQL, run by actors on trio.",
        epilog=_EXIT_CODES_HELP + "\n" + _ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, parents: Sequence[argparse.ArgumentParser] = (), epilog: str = ""
    ) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common, *parents],
            epilog=epilog + _EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command("migrate", "apply the database migrations this schema lacks")

    run = command("run", "run a worker daemon until SIGINT or SIGTERM", epilog=_RUN_HELP + "\n" + _ENVIRONMENT_HELP + "\n")
    run.add_argument("--app", required=True, metavar="MODULE:ATTR", help="the Orchestrator to run, e.g. myservice.jobs:orch")
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help=f"jobs run at once (default: ${CONCURRENCY_ENV}, else the app's)",
    )
    run.add_argument(
        "--queues",
        type=_queue_spec,
        metavar="A,B|A=N,B=M",
        help="queues to claim from: 'a,b' (each up to the concurrency) or 'a=2,b=5' (at most N jobs of each at once) "
        f"(default: ${QUEUES_ENV}, else the app's)",
    )
    run.add_argument(
        "--shutdown-grace",
        type=_non_negative_float,
        metavar="S",
        help="seconds running jobs get to finish on SIGTERM/SIGINT before they are put back in the queue "
        f"(default: ${SHUTDOWN_GRACE_ENV}, else the app's)",
    )

    submit = command("submit", "submit a job; print its id", [principal, output])
    submit.add_argument("kind", metavar="KIND", help="the job kind")
    submit.add_argument(
        "payload", metavar="PAYLOAD_JSON", nargs="?", default="{}", help="the payload as JSON, '-' for stdin (default: {})"
    )
    submit.add_argument("--app", required=True, metavar="MODULE:ATTR", help="the Orchestrator whose jobs validate the payload")
    submit.add_argument("--delay", type=_non_negative_float, default=0.0, metavar="S", help="seconds before it may run")
    submit.add_argument("--priority", type=int, metavar="P", help="higher runs first (default: the kind's)")
    submit.add_argument("--max-attempts", type=_positive_int, metavar="N", help="attempts before failing (default: the kind's)")
    submit.add_argument("--queue", metavar="Q", help="queue (default: the kind's)")

    status = command("status", "show a job", [principal, output])
    status.add_argument("job_id", metavar="JOB_ID")

    cancel = command("cancel", "cancel a queued or running job (the owner, or an admin of its organisation)", [principal, output])
    cancel.add_argument("job_id", metavar="JOB_ID")

    jobs = command("jobs", "list the organisation's jobs, newest first", [principal, output])
    jobs.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    jobs.add_argument("--kind", metavar="KIND", help="only jobs of this kind")
    jobs.add_argument("--queue", metavar="QUEUE", help="only jobs in this queue")
    jobs.add_argument("--owner", metavar="USER", help="only jobs submitted by this user (of your organisation)")
    jobs.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="at most N jobs (default: 100)")

    wait = command(
        "wait",
        "wait until a job is completed, failed or cancelled; show its progress meanwhile (redrawn in place on a "
        "terminal, one line per change of state otherwise; nothing with --json), then the job",
        [principal, output],
    )
    wait.add_argument("job_id", metavar="JOB_ID")
    wait.add_argument("--timeout", type=_non_negative_float, metavar="S", help="give up after S seconds (exit 1)")

    demo = command("demo", "run example jobs on the embedded PostgreSQL and show them live")
    demo.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="redraw a live table in place (default: when stdout is a terminal)",
    )

    # Everything after `bench` goes to the benchmark's own parser.
    commands.add_parser("bench", help="measure throughput and latency (see `orchestrator bench --help`)", add_help=False)
    return parser


# -- entry point --------------------------------------------------------------------


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _leaf(exc: BaseException) -> BaseException:
    """The one meaningful exception inside (nested) exception groups."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [e for e in _leaves(exc) if not isinstance(e, trio.Cancelled)]
    for kind in (KeyboardInterrupt, SystemExit):
        for leaf in leaves:
            if isinstance(leaf, kind):
                return leaf
    if leaves and all(type(leaf) is type(leaves[0]) for leaf in leaves):
        return leaves[0]
    return exc


def describe_error(exc: BaseException) -> tuple[int, str]:
    """The exit code and one-line message for ``exc``."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, AppLoadError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, ValidationError):
        return EXIT_USAGE, validation_message(exc, f"invalid {exc.title}")
    if isinstance(exc, (InvalidJobId, UnknownJobKind)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, NotAuthorized):
        return EXIT_NOT_AUTHORIZED, f"not authorised: {exc}"
    if isinstance(exc, JobNotFound):
        return EXIT_NOT_FOUND, f"not found: {exc}"
    if isinstance(exc, DatabaseUnavailable):
        return EXIT_DATABASE, f"database unavailable ({redact_url(_database_url)}): {exc}"
    if isinstance(exc, OrchestratorError):
        return EXIT_ERROR, str(exc)
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, BaseExceptionGroup):
        inner = "; ".join(f"{type(e).__name__}: {e}" for e in _leaves(exc) if not isinstance(e, trio.Cancelled))
        return EXIT_ERROR, f"several errors: {inner}"
    return EXIT_ERROR, f"unexpected error: {type(exc).__name__}: {exc}"


def _log_settings(args: argparse.Namespace) -> tuple[str, str]:
    """The log level and format: the flag, else the environment, else the default.

    Raises:
        SettingError: the environment's value is not one of the choices.
    """

    def choice(choices: Sequence[str], normalise: Callable[[str], str]) -> Callable[[str], str]:
        def parse(text: str) -> str:
            value = normalise(text.strip())
            if value not in choices:
                raise ValueError(f"{text!r} must be one of: {', '.join(choices)}")
            return value

        return parse

    level = args.log_level or env_setting(LOG_LEVEL_ENV, choice(LOG_LEVELS, str.upper))
    log_format = args.log_format or env_setting(LOG_FORMAT_ENV, choice(LOG_FORMATS, str.lower))
    return level or ("INFO" if args.command == "run" else "WARNING"), log_format or "text"


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush does not
    complain about the pipe the reader closed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _report_error(message: str, code: int, exc: BaseException, log_format: str) -> None:
    """The one line on stderr saying what went wrong (a JSON record with --log-format json)."""
    debug = logging.getLogger("orchestrator").isEnabledFor(logging.DEBUG)
    if log_format == "json":
        from ._logging import JsonFormatter

        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            0,
            "%s",
            (message,),
            (type(exc), exc, exc.__traceback__) if debug else None,
            extra={"event": "cli.error", "exit_code": code},
        )
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
        return
    print(f"orchestrator: {message}", file=sys.stderr)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    global _database_url
    _database_url = None
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if args.command != "bench" and extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        level, log_format = _log_settings(args)
    except SettingError as exc:
        print(f"orchestrator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(level, log_format)
    try:
        return COMMANDS[args.command](args, extras)
    except KeyboardInterrupt:
        print("orchestrator: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (Exception, BaseExceptionGroup) as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, KeyboardInterrupt):
            print("orchestrator: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(leaf, SystemExit):
            return leaf.code if isinstance(leaf.code, int) else EXIT_ERROR
        if isinstance(leaf, BrokenPipeError):
            # `orchestrator jobs | head`: the reader left; nothing to say.
            _silence_stdout()
            return EXIT_ERROR
        code, message = describe_error(leaf)
        _report_error(_one_line(message), code, exc, log_format)
        return code
