"""The SQL statements, read once from ``sql/queries.sql``.

Each statement starts with a ``-- name: NAME`` header, as in Procrastinate;
code refers to statements by name and never builds SQL from strings.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str) -> dict[str, str]:
    """Split a file of named statements into ``{name: sql}``.

    Raises:
        ValueError: a name appears twice, or a header has no statement.
    """
    headers = list(_HEADER.finditer(text))
    queries: dict[str, str] = {}
    for header, following in zip(headers, headers[1:] + [None]):
        end = following.start() if following is not None else len(text)
        body = text[header.end() : end].strip()
        name = header.group("name")
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        if not _strip_comments(body):
            raise ValueError(f"query {name!r} has no statement")
        queries[name] = body
    return queries


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--")).strip()


@functools.cache
def queries() -> dict[str, str]:
    """All statements by name, loaded on first use."""
    text = resources.files("orchestrator").joinpath("sql/queries.sql").read_text(encoding="utf-8")
    return parse_queries(text)


def query(name: str) -> str:
    """The statement called ``name``.

    Raises:
        KeyError: no statement has that name.
    """
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no SQL statement named {name!r} in sql/queries.sql") from None
