"""The operations commands: ``explain`` (why a job is where it is),
``prune`` (delete finished jobs past their retention age) and ``config show``
(the effective settings and where each came from).

Each ``cmd_*`` takes the parsed arguments and returns the exit code; errors
it raises are mapped to one by ``_exits``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._explain import Explanation
from .._retention import PruneResult, format_duration
from .._settings import describe_settings, display_value, resolve_settings
from ._exits import EXIT_ERROR, EXIT_OK
from ._render import compact, print_json
from ._session import job_id_from, plain_orchestrator, principal_from, run_session


def render_explanation(explanation: Explanation) -> str:
    """The sentence, then the figures behind it as ``field  value`` lines."""
    data = explanation.model_dump(mode="json", exclude={"message"})
    shown = [(name, value) for name, value in data.items() if value is not None]
    width = max(len(name) for name, _ in shown)
    lines = [explanation.message, ""]
    lines += [f"{name:<{width}}  {value if isinstance(value, str) else compact(value)}" for name, value in shown]
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = job_id_from(args.job_id)
    by = principal_from(args)
    orch = plain_orchestrator(args)

    explanation = run_session(orch, lambda: orch.explain(job_id, by=by))
    if args.json:
        print_json(explanation.model_dump(mode="json"))
    else:
        print(render_explanation(explanation))
    return EXIT_OK


def render_prune(result: PruneResult) -> str:
    """One line per state: how many jobs were (or would be) deleted, and their age."""
    verb = "would delete" if result.dry_run else "deleted"
    width = max((len(s) for s in result.counts), default=0)
    lines = [
        f"{state:<{width}}  {verb} {n} (finished more than {format_duration(result.ages[state])} ago)"
        for state, n in result.counts.items()
    ]
    if result.skipped:
        lines.append("skipped: another process is pruning this schema; run again later")
    return "\n".join(lines) or "nothing to prune: every state is kept forever"


def cmd_prune(args: argparse.Namespace, extras: list[str]) -> int:
    orch = plain_orchestrator(args)
    orch.retention.ages(args.state, args.older_than)  # refuse bad values before connecting

    result = run_session(orch, lambda: orch.prune(older_than=args.older_than, states=args.state, dry_run=args.dry_run))
    if args.json:
        print_json(result.model_dump(mode="json"))
    else:
        print(render_prune(result))
    return EXIT_ERROR if result.skipped else EXIT_OK


def render_settings(rows: list[dict[str, Any]]) -> str:
    """``setting  value  source`` lines, aligned."""
    table = [("setting", "value", "source")] + [
        (r["setting"], display_value(r["setting"], r["value"]), r["source"] + (f" {r['from']}" if r["from"] else ""))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in table)


def cmd_config(args: argparse.Namespace, extras: list[str]) -> int:
    from .._app import load_app
    from ._daemon import daemon_flags

    app = load_app(args.app) if args.app else None
    resolved = resolve_settings(flags=daemon_flags(args), config=args.config, app=app, app_name=args.app or "")
    rows = describe_settings(resolved)
    if args.json:
        print_json({r["setting"]: {k: v for k, v in r.items() if k != "setting"} for r in rows})
    else:
        print(render_settings(rows))
    return EXIT_OK
