"""Finding the application's ``Orchestrator`` from a ``module:attribute`` spec.

``orchestrator run --app myservice.jobs:orch`` imports ``myservice.jobs`` and
takes its ``orch`` attribute (dots in the attribute walk nested objects:
``myservice.app:container.orch``). Each way this can go wrong gets its own
message naming what is wrong.
"""

from __future__ import annotations

import importlib
import os
import sys

from ._orchestrator import Orchestrator

__all__ = ["AppLoadError", "load_app"]


class AppLoadError(ValueError):
    """``--app`` does not name an ``Orchestrator`` (the message says why)."""


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
