"""The ``orchestrator`` command line's entry point: parse, run the command, exit.

Errors are one line on stderr naming what was wrong (a JSON log record with
``--log-format json``); ``--log-level DEBUG`` adds the traceback. Nothing in
the command line imports trio_asyncio: the store does, when it opens.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType

from .._app import SettingError
from .._logging import JsonFormatter, configure_logging
from ._commands import cmd_bench, cmd_cancel, cmd_demo, cmd_jobs, cmd_migrate, cmd_status, cmd_submit, cmd_wait
from ._daemon import cmd_run
from ._ops_commands import cmd_config, cmd_explain, cmd_prune
from ._schedule_commands import cmd_schedules
from ._session import settings_from
from ._token_commands import cmd_token
from ._exits import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, describe_error, meaningful_error, one_line
from ._parser import build_parser

logger = logging.getLogger("orchestrator.cli")

COMMANDS: Mapping[str, Callable[[argparse.Namespace, list[str]], int]] = MappingProxyType(
    {
        "migrate": cmd_migrate,
        "run": cmd_run,
        "submit": cmd_submit,
        "status": cmd_status,
        "cancel": cmd_cancel,
        "jobs": cmd_jobs,
        "wait": cmd_wait,
        "demo": cmd_demo,
        "bench": cmd_bench,
        "token": cmd_token,
        "explain": cmd_explain,
        "prune": cmd_prune,
        "config": cmd_config,
        "schedules": cmd_schedules,
    }
)


def _log_settings(args: argparse.Namespace) -> tuple[str, str]:
    """The log level and format: the flag, else the environment, else the
    ``--config`` file, else the default.

    Raises:
        SettingError: a value is not one of the choices (naming where it came from).
    """
    settings = settings_from(args, ["log_level", "log_format"])
    return settings.log_level or ("INFO" if args.command == "run" else "WARNING"), settings.log_format


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
        leaf = meaningful_error(exc)
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
        _report_error(one_line(message), code, exc, log_format)
        return code
