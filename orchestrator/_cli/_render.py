"""Jobs on the terminal: records, tables, progress bars, the live ``wait`` line.

Shared by ``status``, ``jobs``, ``wait`` and the demo. Characters a stream
cannot encode (a pipe in the C locale, an old console) fall back to ASCII.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from .._lifecycle import JobState
from .._models import JobRecord


@dataclass(frozen=True, slots=True)
class Glyphs:
    """The characters a display draws with."""

    full: str
    empty: str
    ok: str
    bad: str
    arrow: str
    ellipsis: str
    micro: str


FANCY = Glyphs(full="█", empty="░", ok="✓", bad="✗", arrow="→", ellipsis="…", micro="µs")
PLAIN = Glyphs(full="#", empty="-", ok="ok", bad="FAIL", arrow="->", ellipsis="~", micro="us")


def encodable(out: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(out, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def glyphs_for(out: TextIO, needed: str = "█░✓✗→…µ") -> Glyphs:
    """:data:`FANCY` when ``out`` can encode every character of ``needed``, else :data:`PLAIN`."""
    return FANCY if encodable(out, needed) else PLAIN


def is_terminal(out: TextIO) -> bool:
    """Whether ``out`` is a terminal that may be redrawn in place."""
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


def bar_cells(progress: float, width: int, glyphs: Glyphs) -> str:
    """``width`` cells, the first ``progress`` of them full."""
    filled = round(min(1.0, max(0.0, progress)) * width)
    return glyphs.full * filled + glyphs.empty * (width - filled)


def percent(progress: float) -> str:
    """``progress`` as a right-aligned percentage, ``" 50%"``."""
    return f"{progress * 100:3.0f}%"


_ESCAPE = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z])")
RESET = "\x1b[0m"


def clip(line: str, width: int, ellipsis: str = "…") -> str:
    """``line`` cut to ``width`` visible columns (escape sequences take none)."""
    kept: list[str] = []
    visible = 0
    for i, piece in enumerate(_ESCAPE.split(line)):
        if i % 2:  # an escape sequence
            kept.append(piece)
            continue
        if visible + len(piece) > width:
            kept.append(piece[: max(0, width - visible - len(ellipsis))] + ellipsis)
            if "\x1b[" in line:
                kept.append(RESET)
            return "".join(kept)
        kept.append(piece)
        visible += len(piece)
    return "".join(kept)


# -- records and tables ----------------------------------------------------------


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _when(moment: datetime | None) -> str:
    return moment.isoformat(timespec="microseconds") if moment is not None else "-"


def _progress(value: float) -> str:
    return f"{value * 100:.0f}%"


def compact(value: Any) -> str:
    """``value`` as JSON on one line, ``-`` for none."""
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
        ("payload", compact(record.payload)),
        ("result", compact(record.result)),
        ("error", compact(record.error)),
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
            r.queue,
            r.state.value,
            f"{r.attempt}/{r.max_attempts}",
            _progress(r.progress),
            r.owner.user_id,
            r.created_at.isoformat(timespec="seconds"),
        ]
        for r in records
    ]
    return render_table(["ID", "KIND", "QUEUE", "STATE", "ATTEMPT", "PROGRESS", "OWNER", "CREATED"], rows)


def show(record: JobRecord, as_json: bool) -> None:
    if as_json:
        print_json(record.model_dump(mode="json"))
    else:
        print(render_record(record))


# -- wait ------------------------------------------------------------------------


class WaitDisplay:
    """What ``wait`` shows while it waits.

    On a terminal (``live``), one line redrawn in place: the job's kind and
    id, state, attempt, a progress bar and the time waited. Otherwise (a
    pipe, a file, a CI log) one line per change of state or attempt, and
    nothing else, so the output reads as a log.
    """

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        self.live = live
        self.start = time.monotonic()
        self._seen: tuple[JobState, int] | None = None
        self._open_line = False
        self._glyphs = glyphs_for(out, FANCY.full + FANCY.empty)

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.start:.1f}s"

    def bar(self, progress: float, width: int = 20) -> str:
        progress = min(1.0, max(0.0, progress))
        return f"[{bar_cells(progress, width, self._glyphs)}] {percent(progress)}"

    def change_line(self, record: JobRecord) -> str:
        """The line a change of state prints (not on a terminal)."""
        text = f"{'+' + self._elapsed():>8}  {record.state.value:<9}  attempt {record.attempt}/{record.max_attempts}"
        if record.state is JobState.QUEUED and record.attempt > 1 and record.error:
            text += f"  (retrying; the last attempt failed: {compact(record.error)})"
        elif record.state is JobState.FAILED and record.error:
            text += f"  error: {compact(record.error)}"
        return text

    def live_line(self, record: JobRecord) -> str:
        """The line redrawn on a terminal."""
        progress = 1.0 if record.state is JobState.COMPLETED else record.progress
        return (
            f"{record.kind} {str(record.id)[:8]}  {record.state.value:<9}  "
            f"attempt {record.attempt}/{record.max_attempts}  {self.bar(progress)}  {self._elapsed()}"
        )

    def update(self, record: JobRecord) -> None:
        if self.live:
            width = shutil.get_terminal_size((80, 24)).columns
            line = self.live_line(record)[: max(1, width - 1)]
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()
            self._open_line = True
            return
        key = (record.state, record.attempt)
        if key != self._seen:
            self._seen = key
            print(self.change_line(record), file=self.out, flush=True)

    def close(self) -> None:
        """End a line left open on the terminal (done, or interrupted)."""
        if self._open_line:
            self.out.write("\n")
            self.out.flush()
            self._open_line = False
