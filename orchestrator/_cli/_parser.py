"""The ``orchestrator`` command line's arguments, and its help.

The global options may come before or after the command. Everything after
``bench`` goes to the benchmark's own parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from .._app import (
    CONCURRENCY_ENV,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    QUEUES_ENV,
    SCHEMA_ENV,
    SHUTDOWN_GRACE_ENV,
    parse_concurrency,
    parse_queues,
    parse_shutdown_grace,
)
from .._errors import InvalidInput
from .._retention import TERMINAL_STATES, parse_duration
from .._tokens import parse_positive_seconds
from .._lifecycle import JobState
from .._logging import LOG_FORMATS, LOG_LEVELS
from .._orchestrator import DATABASE_URL_ENV
from ._session import DEFAULT_SCHEMA, ORG_ENV, ROLE_ENV, USER_ENV

T = TypeVar("T")


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
_positive_float = _argument(parse_positive_seconds, "seconds")
_non_negative_float = _argument(parse_shutdown_grace, "seconds")
_queue_spec = _argument(parse_queues, "queues")


def _duration(text: str) -> float:
    """A duration (``7d``, ``12h``, ``90s``...) as an argparse ``type``."""
    try:
        return parse_duration(text, "duration")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


_EXIT_CODES_HELP = """\
exit codes:
  0    success (for run: stopped by SIGTERM or SIGINT, running jobs finished or requeued)
  1    other error (such as wait --timeout running out)
  2    bad usage or input (argument, setting, database URL, job id, JSON, payload, unknown kind, --app)
  3    not authorised (not the job's owner nor an admin of its organisation)
  4    job not found (in your organisation)
  5    the job failed (wait), or cancel refused because the job had already ended
  6    database unavailable (a well-formed URL whose server does not answer)
  130  interrupted (Ctrl-C) outside run
"""

_ENVIRONMENT_HELP = f"""\
environment (a flag wins over its variable, a variable over the --config file, the file over the
--app object's setting; every setting has its ORCHESTRATOR_* variable and a flag of `run`, the
variable's name in lower case with dashes: ORCHESTRATOR_LEASE_SECONDS is --lease-seconds; see
`orchestrator config show`):
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
  At INFO (the default for run), one summary line per 10 s of activity
  (logger orchestrator.summary, event worker.summary): jobs claimed,
  completed, failed, retried, cancelled, released and rescued, and the p50
  run time; warnings for rescued jobs and lost leases. --log-level DEBUG adds
  one record per job lifecycle event (logger orchestrator.job); off, they
  cost nothing. --log-format json writes one JSON object per line: ts, level,
  logger, message, and the event's fields (event, job_id, kind, queue,
  attempt, state, previous_state; the summary's counts and p50_run_ms).
"""


#: The daemon's settings with a flag of ``run`` that takes its text as
#: the environment's variable does (``_settings`` parses both).
_SETTING_FLAGS = (
    ("node_id", "ID", "this node's id in the nodes table and in leases (default: hostname-pid-random)"),
    ("poll_interval", "DURATION", "longest wait between claims when no notification comes: 500ms, 1s, ... "
     "(default: 1s)"),
    ("lease_seconds", "DURATION", "how long a claim holds without a heartbeat (one every third of it) "
     "before a live node rescues the job (default: 30s)"),
    ("pool_size", "N", "PostgreSQL connections of this process, 1 to 100 (default: 4; a prune round opens "
     "one more for its duration)"),
    ("max_payload_bytes", "BYTES", "largest payload submit accepts, as JSON (default: 1 MiB)"),
    ("max_payload_depth", "N", "deepest nesting of a payload submit accepts (default: 64)"),
    ("retention_completed", "DURATION", "age after which completed jobs are pruned, or 'never' (default: 7d)"),
    ("retention_failed", "DURATION", "age after which failed jobs are pruned, or 'never' (default: 30d)"),
    ("retention_cancelled", "DURATION", "age after which cancelled jobs are pruned, or 'never' (default: 30d)"),
    ("prune_batch", "N", "rows one prune statement deletes, at most (default: 1000)"),
    ("metrics_interval", "DURATION", "how often the queue-depth gauge is read (one count per interval "
     "across the cluster), or 'never' (default: 15s)"),
)  # fmt: skip
#: The settings with a flag of ``run``, each spelled ``--name-with-dashes``
#: (``work`` and ``tracing`` as ``--work``/``--no-work``, ``--tracing``/``--no-tracing``).
RUN_SETTING_FLAGS = (
    "concurrency", "queues", "shutdown_grace", "http", "http_body_limit", "prune_interval", "metrics",
    *(name for name, _, _ in _SETTING_FLAGS),
)  # fmt: skip


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
        "--config",
        metavar="FILE",
        default=default(None),
        help="a TOML file of settings (`concurrency = 20`, `retention_completed = \"7d\"`...): flags and "
        "ORCHESTRATOR_* variables win over it, it wins over the --app object's own settings; see `config show`",
    )
    group.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=str.upper,
        choices=LOG_LEVELS,
        default=default(None),
        help=(
            f"logging level on stderr (default: ${LOG_LEVEL_ENV}, else INFO for run, WARNING otherwise);"
            " run logs a summary line per interval at INFO and one record per job event at DEBUG"
        ),
    )
    group.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default(None),
        help=f"log lines as text, or one JSON object per line (default: ${LOG_FORMAT_ENV}, else text)",
    )


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one short line on stderr, exit 2, as every bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _OneLineErrors(add_help=False)
    _add_global_options(common, suppress=True)

    principal = _OneLineErrors(add_help=False)
    who = principal.add_argument_group("who is acting")
    who.add_argument("--user", metavar="USER", help=f"user id (default: ${USER_ENV})")
    who.add_argument("--org", metavar="ORG", help=f"organisation id (default: ${ORG_ENV})")
    who.add_argument(
        "--role", choices=["member", "admin"], help=f"role in the organisation (default: ${ROLE_ENV}, else member)"
    )

    output = _OneLineErrors(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")

    parser = _OneLineErrors(
        prog="orchestrator",
        description="trio-orchestrator: jobs on PostgreSQL, run by actors on trio.",
        epilog=_EXIT_CODES_HELP + "\n" + _ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, parents: Sequence[_OneLineErrors] = (), epilog: str = ""
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

    run.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="also serve the HTTP API, the event stream, the dashboard at / and /healthz on this address",
    )
    run.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at /metrics on this address (with --http they are at its /metrics too)",
    )
    run.add_argument(
        "--work",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-work claims no jobs: only serve --http (a web tier in front of worker daemons); --work "
        "claims them even if ORCHESTRATOR_WORK or the --config file says not to (default: work)",
    )
    run.add_argument(
        "--tracing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-tracing starts no OpenTelemetry spans even with the otel extra installed; --tracing "
        "starts them even if ORCHESTRATOR_TRACING or the --config file says not to (default: tracing)",
    )
    run.add_argument(
        "--http-body-limit",
        type=_positive_int,
        metavar="BYTES",
        help="largest request body the HTTP API reads; larger ones get 413 (default: 1 MiB)",
    )
    run.add_argument(
        "--prune-interval",
        metavar="DURATION",
        help="how often this worker deletes finished jobs past their retention age: 15m, 1h, ... or 'never' "
        "(default: 1h)",
    )
    # Values are checked with the settings (flags, environment, --config,
    # the app): a bad one exits 2 naming the setting, the flag and the value.
    for name, metavar, text in _SETTING_FLAGS:
        run.add_argument("--" + name.replace("_", "-"), metavar=metavar, help=text)

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

    explain = command(
        "explain",
        "say why a job is where it is: waiting for its run_at, behind other jobs, no worker or every worker full, "
        "running on a node (and its heartbeat), a cancel not yet delivered, retrying, or finished and why",
        [principal, output],
    )
    explain.add_argument("job_id", metavar="JOB_ID")

    prune = command(
        "prune",
        "delete finished jobs older than their retention age (default: completed 7d, failed and cancelled 30d), "
        "in bounded batches, one process at a time; print how many per state",
        [output],
    )
    prune.add_argument(
        "--older-than", type=_duration, metavar="DURATION",
        help="this age for every state instead of the retention ages: 90s, 15m, 12h, 7d, 2w or sums like 1d12h",
    )  # fmt: skip
    prune.add_argument(
        "--state", action="append", choices=TERMINAL_STATES,
        help="only jobs that ended in this state (repeat for several; default: all three)",
    )  # fmt: skip
    prune.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")

    command(
        "schedules",
        "list the periodic schedules the daemons registered: kind, cron, time zone, missed policy, the last "
        "period reached and the next one due (by the database's clock)",
        [output],
    )

    config = command("config", "the effective configuration")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    config_show = config_commands.add_parser(
        "show",
        help="print every setting, its value (secrets masked) and where it came from: flag, environment, "
        "--config file, the --app object, or the default",
        parents=[common, output],
    )
    config_show.add_argument("--app", metavar="MODULE:ATTR", help="include the settings of this Orchestrator")
    # `config show` takes run's flags too (unchecked by argparse), to show what they would make.
    for name in RUN_SETTING_FLAGS:
        config_show.add_argument("--" + name.replace("_", "-"), help=argparse.SUPPRESS)
    config_show.add_argument("--work", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)
    config_show.add_argument("--tracing", action=argparse.BooleanOptionalAction, default=None, help=argparse.SUPPRESS)

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

    token = command("token", "manage the HTTP API's bearer tokens (only their hashes are stored)")
    tokens = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tokens.add_parser(
        "create", help="create a token acting as --user in --org; print it once", parents=[common, principal, output]
    )
    create.add_argument("--name", metavar="NAME", help="what the token is for")
    create.add_argument("--expires-in", type=_positive_float, metavar="SECONDS", help="lifetime (default: no expiry)")
    listing = tokens.add_parser("list", help="list an organisation's tokens, newest first", parents=[common, output])
    listing.add_argument("--org", required=True, metavar="ORG", help="the organisation")
    revoke = tokens.add_parser("revoke", help="revoke a token at once", parents=[common, output])
    revoke.add_argument("token_id", metavar="ID", help="the token's id (from create or list)")

    # Everything after `bench` goes to the benchmark's own parser.
    commands.add_parser("bench", help="measure throughput and latency (see `orchestrator bench --help`)", add_help=False)
    return parser


