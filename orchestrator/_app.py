"""The application's ``Orchestrator``: finding it, and configuring it.

``orchestrator run --app myservice.jobs:orch`` imports ``myservice.jobs`` and
takes its ``orch`` attribute (dots in the attribute walk nested objects:
``myservice.app:container.orch``). Each way this can go wrong gets its own
message naming what is wrong.

Settings come from three places; the first that gives one wins:

1. the command line (``--concurrency 20``),
2. the environment (``ORCHESTRATOR_CONCURRENCY=20``),
3. the application's own ``Orchestrator(concurrency=...)``.

The parsers here raise :class:`SettingError` (a ``ValueError``) naming the
variable and what is wrong with its value.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import TypeAlias, TypeVar

from ._orchestrator import DATABASE_URL_ENV, Orchestrator

__all__ = [
    "CONCURRENCY_ENV",
    "DATABASE_URL_ENV",
    "LOG_FORMAT_ENV",
    "LOG_LEVEL_ENV",
    "QUEUES_ENV",
    "SCHEMA_ENV",
    "SHUTDOWN_GRACE_ENV",
    "AppLoadError",
    "QueueSpec",
    "SettingError",
    "apply_worker_settings",
    "env_setting",
    "load_app",
    "parse_concurrency",
    "parse_queues",
    "parse_shutdown_grace",
    "queue_spec_for",
]

CONCURRENCY_ENV = "ORCHESTRATOR_CONCURRENCY"
QUEUES_ENV = "ORCHESTRATOR_QUEUES"
SHUTDOWN_GRACE_ENV = "ORCHESTRATOR_SHUTDOWN_GRACE"
LOG_FORMAT_ENV = "ORCHESTRATOR_LOG_FORMAT"
LOG_LEVEL_ENV = "ORCHESTRATOR_LOG_LEVEL"
SCHEMA_ENV = "ORCHESTRATOR_SCHEMA"

T = TypeVar("T")

#: Queues as given: ``["a", "b"]`` (each limited by the node's concurrency
#: only), or ``{"a": 2, "b": None}`` (``None``: no limit of its own).
QueueSpec: TypeAlias = list[str] | dict[str, int | None]


class AppLoadError(ValueError):
    """``--app`` does not name an ``Orchestrator`` (the message says why)."""


class SettingError(ValueError):
    """A setting's value is malformed (the message names it and why)."""


# -- parsing settings -----------------------------------------------------------


def parse_concurrency(text: str) -> int:
    """A positive integer: jobs this worker runs at once."""
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


def parse_shutdown_grace(text: str) -> float:
    """A finite number of seconds, zero or more."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{text!r} must be a finite, non-negative number of seconds")
    return value


def parse_queues(text: str) -> QueueSpec:
    """``a,b`` (every queue up to the node's concurrency) or ``a=2,b=5``
    (per-queue limits); a name without ``=N`` in a list with limits is
    limited by the node's concurrency alone.
    """
    names: list[str] = []
    limits: dict[str, int | None] = {}
    any_limit = False
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, limit_text = (part.strip() for part in item.partition("="))
        if not name:
            raise ValueError(f"{item!r} names no queue (expected NAME or NAME=LIMIT)")
        if name in limits:
            raise ValueError(f"queue {name!r} is given twice")
        limit: int | None = None
        if sep:
            any_limit = True
            try:
                limit = int(limit_text)
            except ValueError:
                raise ValueError(f"queue {name!r}: limit {limit_text!r} is not an integer") from None
            if limit < 1:
                raise ValueError(f"queue {name!r}: limit {limit} must be at least 1")
        names.append(name)
        limits[name] = limit
    if not names:
        raise ValueError(f"{text!r} names no queue (expected a,b or a=2,b=5)")
    return limits if any_limit else names


def queue_spec_for(spec: QueueSpec, concurrency: int) -> list[str] | dict[str, int]:
    """The value for ``Orchestrator.queues``: queues without a limit of
    their own get the node's ``concurrency``."""
    if isinstance(spec, Mapping):
        return {q: (concurrency if n is None else n) for q, n in spec.items()}
    return list(spec)


def env_setting(name: str, parse: Callable[[str], T], environ: Mapping[str, str] | None = None) -> T | None:
    """The environment variable ``name`` parsed, or ``None`` when unset or empty.

    Raises:
        SettingError: the value does not parse; the message names ``name``.
    """
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        raise SettingError(f"bad {name}: {exc}") from None


def apply_worker_settings(
    orch: Orchestrator,
    *,
    concurrency: int | None = None,
    queues: QueueSpec | None = None,
    shutdown_grace: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Apply a worker's settings to ``orch``: each argument if given, else its
    ``ORCHESTRATOR_*`` variable if set, else what ``orch`` already has.

    Raises:
        SettingError: an environment variable's value is malformed.
    """
    from ._settings import apply_settings, resolve_settings

    names = {"concurrency", "queues", "shutdown_grace"}
    flags = {"concurrency": concurrency, "queues": queues, "shutdown_grace": shutdown_grace}
    resolved = resolve_settings(flags=flags, app=orch, environ=environ, only=names)
    apply_settings(orch, resolved.settings, names)


# -- finding the app ------------------------------------------------------------


def _split(spec: str) -> tuple[str, str]:
    module_name, sep, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not sep or not module_name or not attr:
        raise AppLoadError(f"--app {spec!r} must be 'module:attribute', for example 'myservice.jobs:orch'")
    return module_name, attr


def _ensure_cwd_importable() -> None:
    # `python -m orchestrator` puts the working directory on sys.path; the
    # `orchestrator` console script does not. Make both find the same modules.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_app(spec: str) -> Orchestrator:
    """The ``Orchestrator`` at ``spec`` (``"package.module:attribute"``).

    Raises:
        AppLoadError: the spec is malformed, the module cannot be imported
            (or raised while importing), the attribute is missing, or it is
            not an ``Orchestrator``.
    """
    module_name, attr = _split(spec)
    _ensure_cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise AppLoadError(
                f"--app {spec!r}: no module named {module_name!r} (is it on the Python path? "
                f"the working directory is {os.getcwd()})"
            ) from exc
        raise AppLoadError(f"--app {spec!r}: importing module {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"--app {spec!r}: importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc

    obj: object = module
    walked = module_name
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"--app {spec!r}: {walked!r} has no attribute {part!r}") from None
        walked = f"{walked}:{part}" if walked == module_name else f"{walked}.{part}"
    if not isinstance(obj, Orchestrator):
        raise AppLoadError(
            f"--app {spec!r} is {type(obj).__module__}.{type(obj).__qualname__}, not an orchestrator.Orchestrator"
        )
    return obj
