"""Database URLs: checked for their form, and shown without their password."""

from __future__ import annotations

import urllib.parse

from ._errors import InvalidInput, quote_prefix

__all__ = ["SCHEMES", "check_database_url", "redact_url"]


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


SCHEMES = ("postgresql", "postgres")


def check_database_url(url: str) -> str:
    """Return ``url`` if it is a well-formed ``postgresql://`` (or ``postgres://``) URL.

    Only the form is checked, never whether the server answers. Messages
    show a short prefix of the URL, its password hidden.

    Raises:
        InvalidInput: field ``database_url``, saying what is wrong.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("database_url", "must be a postgresql:// URL, got an empty value")
    shown = quote_prefix(redact_url(url), limit=60)
    if any(char.isspace() or not char.isprintable() for char in url):
        raise InvalidInput("database_url", f"must not contain spaces or control characters, got {shown}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what checks it
    except ValueError as exc:
        raise InvalidInput("database_url", f"is not a well-formed URL ({exc}): {shown}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInput("database_url", f"must start with postgresql:// or postgres://, got {shown}")
    return url
