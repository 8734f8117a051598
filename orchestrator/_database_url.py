"""Database URLs: shown without their password."""

from __future__ import annotations

import urllib.parse

__all__ = ["redact_url"]


def redact_url(url: str | None) -> str:
    """``url`` with any password replaced by ``***``."""
    if not url:
        return "(none)"
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return "(unparseable URL)"
    if password:
        netloc = parts.netloc.rsplit("@", 1)
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{netloc[-1]}")
    return urllib.parse.urlunsplit(parts)
