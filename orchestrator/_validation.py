"""The validation boundary: every value a job is made of, checked once.

The library, the asyncio client and (through them) the command line and
HTTP all submit through :func:`check_submission`; the SQL function
``submit_job`` (migration 0004) applies the same rules in SQL, and CHECK
constraints on ``job_status`` are the last line. A refused value raises
:class:`~orchestrator.InvalidInput` naming the field, saying what is
allowed and quoting at most a short prefix of what was given; nothing is
written.

The rules exist so that nothing a producer sends can stop a worker: every
accepted job is a row every worker can decode, schedule and store the
outcome of. Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from ._errors import InvalidInput, quote_prefix

#: Longest kind, queue, user or organisation id, in characters.
MAX_NAME_CHARS = 128
#: Longest unique key, in characters. With the names above the unique index
#: entry stays under PostgreSQL's B-tree limit (2,704 bytes) in any script.
MAX_UNIQUE_KEY_CHARS = 256
#: Longest delay: 100 years, so ``run_at`` stays far inside every range
#: (PostgreSQL's, Python's ``datetime``, the CHECK constraint's year 9000).
MAX_DELAY_SECONDS = 100 * 365 * 86_400
#: ``priority`` is a PostgreSQL ``integer``.
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1
#: Attempts of one job at most.
MAX_ATTEMPTS_LIMIT = 1_000
#: Longest per-attempt timeout: 30 days.
MAX_TIMEOUT_SECONDS = 30 * 86_400
#: Default payload limits: encoded size and nesting depth.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
DEFAULT_MAX_PAYLOAD_DEPTH = 64
#: Most jobs ``list`` returns at once.
MAX_LIST_LIMIT = 1_000
#: Python's ``int`` to ``str`` conversion refuses more than 4,300 digits.
_MAX_INT_BITS = 14_000
#: Floats this large are all integers; stored as their exact digits so that
#: JSONB (which prints numbers without exponent) gives back an equal number.
_EXACT_FLOAT_LIMIT = 2.0**53

# Control characters (C0, DEL, C1) and lone surrogates: not in names.
_NAME_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# NUL and lone surrogates cannot be stored in JSONB (nor in text).
_TEXT_FORBIDDEN = re.compile("[\x00\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """How large and how deep a payload may be.

    Attributes:
        max_bytes: the payload's JSON encoding, at most.
        max_depth: nested objects and arrays, at most.
    """

    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_depth: int = DEFAULT_MAX_PAYLOAD_DEPTH

    def __post_init__(self) -> None:
        check_int("max_payload_bytes", self.max_bytes, 2, 1024**3)
        check_int("max_payload_depth", self.max_depth, 1, 512)


class UndecodableJSON(str):
    """A stored JSON value Python cannot decode, kept as its raw text.

    Rows written before the boundary (or by hand) may hold JSON nested
    deeper than Python's parser goes, or integers longer than it converts.
    Reading them gives this string instead of failing; a worker fails such
    a job with :attr:`reason` rather than running it.
    """

    reason: str

    def __new__(cls, text: str, reason: str) -> UndecodableJSON:
        self = super().__new__(cls, text)
        self.reason = reason
        return self


@dataclass(frozen=True, slots=True)
class Submission:
    """The checked options of one ``submit_many`` call."""

    kind: str
    queue: str
    priority: int
    max_attempts: int
    delay: float
    unique_keys: list[str | None]


def _refuse(field: str, reason: str) -> InvalidInput:
    if len(field) > 120:
        # A path hundreds of levels deep names nothing a reader can use whole.
        field = f"{field[:60]}...{field[-40:]}"
    return InvalidInput(field, reason)


def check_name(field: str, value: Any, *, limit: int = MAX_NAME_CHARS) -> str:
    """A kind, queue, user or organisation id: a non-empty string of at most
    ``limit`` characters, without control characters.

    Raises:
        InvalidInput: naming ``field``.
    """
    if not isinstance(value, str):
        raise _refuse(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise _refuse(field, "must not be empty")
    if len(value) > limit:
        raise _refuse(field, f"must be at most {limit} characters, got {len(value)}: {quote_prefix(value)}")
    bad = _NAME_FORBIDDEN.search(value)
    if bad is not None:
        raise _refuse(
            field,
            f"must not contain control characters or lone surrogates, found U+{ord(bad.group()):04X} "
            f"at position {bad.start()}: {quote_prefix(value)}",
        )
    return value


def check_optional_name(field: str, value: Any, *, limit: int = MAX_NAME_CHARS) -> str | None:
    """As :func:`check_name`, or ``None``."""
    return None if value is None else check_name(field, value, limit=limit)


def check_int(field: str, value: Any, low: int, high: int) -> int:
    """An ``int`` (not a ``bool``) within ``[low, high]``.

    Raises:
        InvalidInput: naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(field, f"must be an integer, got {type(value).__name__} {quote_prefix(value)}")
    if not low <= value <= high:
        raise _refuse(field, f"must be between {low:,} and {high:,}, got {quote_prefix(value)}")
    return int(value)


def check_seconds(field: str, value: Any, *, high: float, allow_zero: bool = True) -> float:
    """A finite number of seconds (not a ``bool``) in ``[0, high]``
    (``(0, high]`` without ``allow_zero``).

    Raises:
        InvalidInput: naming ``field``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(field, f"must be a number of seconds, got {type(value).__name__} {quote_prefix(value)}")
    seconds = float(value) if not isinstance(value, int) or abs(value) < 2**1000 else math.inf
    low = "0" if allow_zero else "more than 0"
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero) or seconds > high:
        raise _refuse(field, f"must be {low} and at most {high:,.0f} seconds, got {quote_prefix(value)}")
    return seconds


def check_delay(value: Any) -> float:
    """Seconds before a job may run: finite, from 0 to 100 years."""
    return check_seconds("delay", value, high=MAX_DELAY_SECONDS)


def check_priority(value: Any) -> int:
    """A job's priority: an integer in PostgreSQL's ``integer`` range."""
    return check_int("priority", value, PRIORITY_MIN, PRIORITY_MAX)


def check_max_attempts(value: Any) -> int:
    """Attempts a job gets: from 1 to 1,000."""
    return check_int("max_attempts", value, 1, MAX_ATTEMPTS_LIMIT)


def check_timeout(value: Any) -> float | None:
    """A per-attempt timeout: ``None``, or more than 0 and at most 30 days."""
    return None if value is None else check_seconds("timeout", value, high=MAX_TIMEOUT_SECONDS, allow_zero=False)


def check_list_limit(value: Any) -> int:
    """How many jobs one ``list`` returns: from 1 to 1,000."""
    return check_int("limit", value, 1, MAX_LIST_LIMIT)


def check_submission(
    *,
    kind: Any,
    queue: Any,
    priority: Any,
    max_attempts: Any,
    delay: Any,
    unique_keys: Sequence[Any] | None,
    count: int,
) -> Submission:
    """Check every option of a submission of ``count`` payloads.

    Raises:
        InvalidInput: naming the first bad option.
    """
    if unique_keys is None:
        keys: list[str | None] = [None] * count
    else:
        keys = [check_optional_name("unique_key", k, limit=MAX_UNIQUE_KEY_CHARS) for k in unique_keys]
        if len(keys) != count:
            raise _refuse("unique_keys", f"needs one key (or None) per payload: {len(keys)} keys for {count} payloads")
    return Submission(
        kind=check_name("kind", kind),
        queue=check_name("queue", queue),
        priority=check_priority(priority),
        max_attempts=check_max_attempts(max_attempts),
        delay=check_delay(delay),
        unique_keys=keys,
    )


def encode_payload(adapter: TypeAdapter[Any], payload: Any, limits: PayloadLimits, *, field: str = "payload") -> str:
    """The payload as the JSON text to store, after the handler's type.

    Encoded once: the text whose size is checked is the text stored.

    What is stored must be what the handler gets back, so nothing is
    dropped or changed on the way: NaN and infinities, NUL characters and
    lone surrogates (which JSONB cannot hold), and (for an untyped payload)
    anything that is not plain JSON data are refused rather than turned into
    something else.

    Raises:
        InvalidInput: naming the offending field, e.g. ``payload.tags[2]``.
        pydantic.ValidationError: the payload does not fit the handler's
            type (naming the field, as pydantic does).
    """
    if adapter.core_schema.get("type") == "any":
        # Untyped: the strict walk's copy is the JSON data to store, as
        # pydantic's dump of it would be.
        stored = check_json(field, payload, limits, strict=True)
    else:
        check_json(field, payload, limits, strict=False)
        try:
            data = adapter.dump_python(adapter.validate_python(payload), mode="json")
        except ValidationError:
            raise
        except (PydanticSerializationError, UnicodeError, ValueError, TypeError, RecursionError) as exc:
            raise _refuse(field, f"cannot be stored as JSON: {type(exc).__name__}: {_first_line(exc)}") from None
        stored = check_json(field, data, limits, strict=True)
    text = json.dumps(stored, ensure_ascii=False, separators=(",", ":"))
    # Bytes, as PostgreSQL counts them; only text with non-ASCII characters
    # is longer in UTF-8 than in characters.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > limits.max_bytes:
        raise _refuse(field, f"must encode to at most {limits.max_bytes:,} bytes of JSON, got {size:,}")
    return text


def check_json(field: str, value: Any, limits: PayloadLimits, *, strict: bool) -> Any:
    """Walk ``value`` (without recursion) and refuse what JSONB cannot hold.

    With ``strict`` only JSON data is allowed (dicts with string keys,
    lists and tuples, strings, ints, floats, bools, ``None``), and a copy
    fit for storage is returned. Without it, other objects (a pydantic
    model given as the payload, say) are let through to the handler's type,
    and ``value`` itself is returned.

    Raises:
        InvalidInput: naming the path of the offending value.
    """
    # Each entry: (value, path, depth, container to fill, key in it).
    root: list[Any] = [None]
    stack: list[tuple[Any, str, int, Any, Any]] = [(value, field, 0, root, 0)]
    nodes = 0
    while stack:
        item, path, depth, parent, slot = stack.pop()
        nodes += 1
        if nodes > limits.max_bytes:
            raise _refuse(field, f"must encode to at most {limits.max_bytes:,} bytes of JSON")
        copy: Any = item
        if item is None or isinstance(item, bool):
            pass
        elif isinstance(item, str):
            _check_text(path, item)
        elif isinstance(item, int):
            if item.bit_length() > _MAX_INT_BITS:
                raise _refuse(path, "integers must have at most 4,000 digits")
            copy = int(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise _refuse(path, f"must be a finite number; JSON has no {item!r}")
            if abs(item) >= _EXACT_FLOAT_LIMIT:
                copy = int(item)
        elif isinstance(item, (dict, list, tuple)):
            if depth >= limits.max_depth:
                raise _refuse(path, f"nests deeper than {limits.max_depth} levels")
            if isinstance(item, dict):
                # Keys first, so the copy keeps the given order.
                copy = {k: None for k in item if isinstance(k, str)}
                for key, inner in item.items():
                    if not isinstance(key, str):
                        if strict:
                            raise _refuse(path, f"object keys must be strings, got {type(key).__name__} {quote_prefix(key)}")
                        continue
                    _check_text(f"{path} key {quote_prefix(key)}", key)
                    stack.append((inner, f"{path}.{key}" if _PLAIN_KEY.match(key) else f"{path}[{key!r}]", depth + 1, copy, key))
            else:
                copy = [None] * len(item)
                for index, inner in enumerate(item):
                    stack.append((inner, f"{path}[{index}]", depth + 1, copy, index))
        elif strict:
            raise _refuse(path, f"must be JSON data (object, array, string, number, boolean, null), got {type(item).__name__}")
        parent[slot] = copy
    return root[0] if strict else value


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


def _check_text(path: str, text: str) -> None:
    bad = _TEXT_FORBIDDEN.search(text)
    if bad is not None:
        what = "NUL" if bad.group() == "\x00" else f"a lone surrogate U+{ord(bad.group()):04X}"
        raise _refuse(path, f"strings cannot hold {what} (found at position {bad.start()}): {quote_prefix(text)}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""
