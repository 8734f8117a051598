"""``orchestrator bench``: throughput, latency and scale figures, printed, never asserted.

The command line (``_cli.cmd_bench``) hands everything after ``bench`` to
:func:`main`; :func:`add_arguments` and :func:`run` are the same in two steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from typing import Any

import trio

from .._errors import DatabaseUnavailable
from ._options import add_arguments as add_arguments
from ._options import build_parser, check_scale_options
from ._peers import PeersUnavailable
from ._ours import Settings, nan_to_none, run_ours
from ._render import Progress, comparison_table

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 6
DATABASE_URL_ENV = "ORCHESTRATOR_DATABASE_URL"


def mask_url(url: str | None) -> str:
    """``url`` with its password replaced by ``***``."""
    if not url:
        return "(none)"
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparseable URL)"
    if password:
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    return urllib.parse.urlunsplit(parts)


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        jobs=args.jobs,
        batch=args.batch,
        concurrency=args.concurrency,
        lat_reps=args.lat_reps,
        lat_warmup=args.lat_warmup,
        lat_gap=args.lat_gap,
        cancel_reps=args.cancel_reps,
        worker=args.worker,
        schema=args.schema,
        analyze=args.analyze,
    )


async def _run(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    from ._server import BenchServer, default_server_dir, start_server

    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    server: BenchServer | None = None
    if not url:
        progress.section("starting the benchmark's PostgreSQL")
        server = await trio.to_thread.run_sync(start_server, args.server_dir or default_server_dir())
        url = server.url
    args.resolved_url = url
    out: dict[str, Any] = {"server": {"url": mask_url(url), "own": server is not None}}
    try:
        s = settings_from(args)
        if not args.scale_only:
            from ._options import default_shared_dir
            from ._peers import check_peers, run_floor, run_peer

            peers_dir = args.peers_dir or default_shared_dir("bench", "peers")
            names = (args.peer_names or ["procrastinate", "pgqueuer"]) if args.peers else []
            if names:
                check_peers(peers_dir)
            runs: list[dict[str, Any]] = []
            peers: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
            for r in range(args.runs):
                progress.section(f"run {r + 1}/{args.runs} trio_orchestrator")
                runs.append(nan_to_none(await run_ours(url, s, progress)))
                for name in names:  # interleaved with ours, on the same server
                    progress.section(f"run {r + 1}/{args.runs} {name}")
                    peers[name].append(await run_peer(name, peers_dir, url, s))
            out["runs"] = runs
            if peers:
                out["peers"] = peers
            if args.sql_floor:
                progress.section("SQL floor")
                floor = await run_floor(args.floor_script or default_shared_dir("bench", "floor", "sql_floor.py"), url, s)
                ours = sorted(r["process_jobs_s"] for r in runs)[len(runs) // 2]
                out["floor"] = [{**f, "ours_fraction": ours / f["jobs_per_s"]} for f in floor]
        if args.scale or args.scale_only:
            from ._scale import run_scale

            out["scale"] = await run_scale(url, s, args, progress)
    finally:
        if server is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(server.stop)
    return out


def render(out: dict[str, Any]) -> str:
    parts = [f"server: {out['server']['url']}"]
    if out.get("runs"):
        parts.append(comparison_table(out["runs"], out.get("peers", {})))
    if out.get("floor"):
        parts.append("SQL floor (ours = processing jobs/s as a fraction of it)\n" + "\n".join(
            f"  {f['mode']:6} {f['jobs_per_s']:>8,} jobs/s  ours {f['ours_fraction']:.2f}" for f in out["floor"]))
    if out.get("scale"):
        from ._scale import render_scale

        parts.append(render_scale(out["scale"]))
    return "\n\n".join(parts)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed options describe; print the figures; the exit code."""
    progress = Progress(args.progress)
    args.resolved_url = None
    try:
        out = trio.run(_run, args, progress)
    except PeersUnavailable as exc:
        progress.done()
        print(f"orchestrator bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (DatabaseUnavailable, BaseExceptionGroup) as exc:
        leaf = _sole(exc)
        progress.done()
        if isinstance(leaf, DatabaseUnavailable):
            print(f"orchestrator: database unavailable ({mask_url(args.resolved_url)}): {leaf}", file=sys.stderr)
            return EXIT_DATABASE
        raise
    progress.done()
    print(json.dumps(out) if args.json else render(out))
    sys.stdout.flush()
    return EXIT_OK


def _sole(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: list[str] | None = None) -> int:
    """``orchestrator bench [options]``: parse (bad values exit 2, one line), run."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        check_scale_options(parser, args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run(args)
