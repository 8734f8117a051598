"""The commands that talk to a database and end: migrate, submit, status, wait,
cancel, jobs, demo, and bench (which hands its arguments to ``_bench``).

Each ``cmd_*`` takes the parsed arguments (and, for bench, the rest of the
command line) and returns the exit code; errors it raises are mapped to one
by ``_exits``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import trio
from pydantic import ValidationError

from .._app import load_app
from .._errors import DatabaseUnavailable, quote_prefix
from .._lifecycle import JobState
from .._migrations import load_migrations
from .._models import JobRecord, Principal
from .._orchestrator import DATABASE_URL_ENV, Orchestrator
from .._store import open_store
from ._demo import run_demo
from ._exits import EXIT_ERROR, EXIT_JOB_FAILED, EXIT_OK, EXIT_USAGE, CliError, validation_message
from ._render import WaitDisplay, compact, is_terminal, print_json, render_jobs, show
from ._session import (
    apply_global_settings,
    job_id_from,
    naming_database,
    plain_orchestrator,
    principal_from,
    resolve_database,
    run_session,
    settings_from,
)


def cmd_migrate(args: argparse.Namespace, extras: list[str]) -> int:
    settings = settings_from(args)
    schema = settings.schema

    async def migrate() -> list[str]:
        url = await resolve_database(Orchestrator(settings.database_url, schema=schema))
        with naming_database(url):
            async with open_store(url, schema=schema, size=1) as store:
                return await store.migrate(load_migrations())

    applied = trio.run(migrate)
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"schema {schema!r} is up to date")
    return EXIT_OK


def _read_payload(text: str) -> Any:
    """The payload parsed; what JSON cannot be, refused as ``payload`` (exit 2)."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"invalid payload: PAYLOAD_JSON is not valid JSON: {exc} (in {quote_prefix(text)})", EXIT_USAGE) from None
    except RecursionError:
        raise CliError(f"invalid payload: PAYLOAD_JSON is nested too deeply (in {quote_prefix(text)})", EXIT_USAGE) from None
    except ValueError as exc:  # an integer longer than Python converts
        raise CliError(f"invalid payload: PAYLOAD_JSON holds a number Python cannot read: {exc}", EXIT_USAGE) from None


def cmd_submit(args: argparse.Namespace, extras: list[str]) -> int:
    orch = load_app(args.app)
    apply_global_settings(orch, args, args.app)
    owner = principal_from(args)
    payload = _read_payload(args.payload)
    # Check the kind and the payload before touching any database.
    definition = orch.registry.get(args.kind)
    try:
        definition.validate(payload)
    except ValidationError as exc:
        raise CliError(validation_message(exc, f"invalid payload for job kind {args.kind!r}"), EXIT_USAGE) from None
    except RecursionError:
        raise CliError(f"invalid payload for job kind {args.kind!r}: nested too deeply", EXIT_USAGE) from None

    record = run_session(
        orch,
        lambda: orch.submit(
            args.kind,
            payload,
            owner=owner,
            delay=args.delay,
            priority=args.priority,
            max_attempts=args.max_attempts,
            queue=args.queue,
        ),
    )
    if args.json:
        print_json(record.model_dump(mode="json"))
    else:
        print(record.id)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = job_id_from(args.job_id)
    by = principal_from(args)
    orch = plain_orchestrator(args)

    show(run_session(orch, lambda: orch.get(job_id, by=by)), args.json)
    return EXIT_OK


#: Seconds between reads of the job while ``wait`` shows its progress.
WAIT_POLL_INTERVAL = 0.25


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
    job_id = job_id_from(args.job_id)
    by = principal_from(args)
    orch = plain_orchestrator(args)
    # --json is for scripts: the final record and nothing else.
    display = None if args.json else WaitDisplay(sys.stdout, live=is_terminal(sys.stdout))

    record = run_session(orch, lambda: watch_job(orch, job_id, by=by, timeout=args.timeout, display=display))
    if display is not None:
        print()  # the progress above, the job below
    show(record, args.json)
    if record.state is JobState.FAILED:
        print(f"orchestrator: job {record.id} failed: {compact(record.error)}", file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, extras: list[str]) -> int:
    job_id = job_id_from(args.job_id)
    by = principal_from(args)
    orch = plain_orchestrator(args)

    outcome = run_session(orch, lambda: orch.cancel(job_id, by=by))
    if args.json:
        print_json(outcome.model_dump(mode="json"))
    elif outcome.cancelled:
        print(f"job {outcome.job_id} cancelled")
    if not outcome.cancelled:
        print(f"orchestrator: job {outcome.job_id} was not cancelled: {outcome.reason or outcome.state.value}", file=sys.stderr)
        return EXIT_JOB_FAILED
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, extras: list[str]) -> int:
    by = principal_from(args)
    orch = plain_orchestrator(args)

    records = run_session(
        orch,
        lambda: orch.list(by=by, state=args.state, kind=args.kind, queue=args.queue, owner=args.owner, limit=args.limit),
    )
    if args.json:
        print_json([r.model_dump(mode="json") for r in records])
    else:
        print(render_jobs(records))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, extras: list[str]) -> int:
    settings = settings_from(args)
    schema = settings.schema

    async def demo() -> int:
        url = await resolve_database(Orchestrator(settings.database_url, schema=schema))
        with naming_database(url):
            return await run_demo(url, schema=schema, live=args.live)

    return trio.run(demo)


def cmd_bench(args: argparse.Namespace, extras: list[str]) -> int:
    try:
        from .. import _bench
    except ModuleNotFoundError as exc:
        if exc.name != "orchestrator._bench":
            raise
        print("orchestrator: the benchmark is not available in this build (no orchestrator._bench)", file=sys.stderr)
        return EXIT_ERROR
    if args.database_url:
        # A --database-url before `bench` reaches the benchmark too.
        os.environ[DATABASE_URL_ENV] = args.database_url
    code = _bench.main(extras)
    return int(code or 0)


