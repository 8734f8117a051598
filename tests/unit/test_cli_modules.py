"""The command line's package: imports that go one way, and no module-level state.

The import graph is read from the source (every ``import``, including those
inside functions, which hide a circle until the function runs); each module
is then imported first in a fresh interpreter, which is where a circle would
break.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = "orchestrator._cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in ("orchestrator", "actors") for path in (ROOT / package).rglob("*.py")}


MODULES = _modules()
CLI_MODULES = sorted(name for name in MODULES if name == CLI or name.startswith(CLI + "."))


def _imported(name: str, path: Path) -> Iterator[str]:
    """The modules of this project that module ``name`` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            yield from submodules
            # `from . import _x` needs the package only as the parent it already is.
            if len(submodules) < len(node.names):
                yield target


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        graph[name] = {target for target in _imported(name, path) if target in MODULES and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to ``start``, if there is one."""
    stack = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for target in sorted(graph[node]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_the_graph_reader_sees_a_circle_hidden_in_a_function() -> None:
    graph = {"a": {"b"}, "b": set(), "c": {"a"}}
    assert find_cycle(graph, "a") is None
    graph["b"].add("c")
    assert find_cycle(graph, "a") == ["a", "b", "c", "a"]
    assert "orchestrator._cli._render" in import_graph()["orchestrator._cli._demo"]


def test_no_cli_module_is_part_of_an_import_circle() -> None:
    graph = import_graph()
    assert len(CLI_MODULES) > 5, CLI_MODULES
    circles = [cycle for name in CLI_MODULES if (cycle := find_cycle(graph, name))]
    assert circles == [], " ; ".join(" -> ".join(cycle) for cycle in circles)


def test_the_library_never_imports_the_command_line() -> None:
    graph = import_graph()
    importers = sorted(
        name
        for name, targets in graph.items()
        if name not in CLI_MODULES and name != "orchestrator.__main__" and any(t in CLI_MODULES for t in targets)
    )
    assert importers == []


_IMPORT_EACH_FIRST = """
import importlib, json, sys
results = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("orchestrator", "actors")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
    else:
        results[name] = "trio_asyncio imported" if "trio_asyncio" in sys.modules else "ok"
print(json.dumps(results))
"""


def test_each_cli_module_imports_first_on_its_own_without_trio_asyncio() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST, json.dumps(CLI_MODULES)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(done.stdout) == dict.fromkeys(CLI_MODULES, "ok")


def _module_level_names(path: Path) -> Iterator[tuple[str, int]]:
    """Names a module binds by assignment at its top level."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    yield leaf.id, node.lineno


def _immutable(value: object) -> bool:
    import logging
    import re
    import types
    import typing
    from dataclasses import fields, is_dataclass

    if value is None or isinstance(value, (str, bytes, int, float, complex, range, re.Pattern, typing.TypeVar)):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_immutable(item) for item in value)
    if isinstance(value, types.MappingProxyType):
        return all(_immutable(k) and (_immutable(v) or callable(v)) for k, v in value.items())
    if isinstance(value, (type, types.FunctionType, logging.Logger)):
        return True  # a class, a function (argparse's converters), a logger: not data
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return bool(value.model_config.get("frozen")) and all(_immutable(v) for v in dict(value).values())
    if is_dataclass(value) and not isinstance(value, type):
        params = getattr(type(value), "__dataclass_params__", None)
        return bool(params and params.frozen) and all(_immutable(getattr(value, f.name)) for f in fields(value))
    return False


def test_the_cli_holds_no_mutable_module_level_state() -> None:
    import importlib

    found = []
    for name in CLI_MODULES:
        path = MODULES[name]
        source = ast.parse(path.read_text(encoding="utf-8"))
        found += [f"{name}:{node.lineno}: global {', '.join(node.names)}" for node in ast.walk(source) if isinstance(node, ast.Global)]
        module = importlib.import_module(name)
        for attribute, line in _module_level_names(path):
            value = getattr(module, attribute)
            if not _immutable(value):
                found.append(f"{name}:{line}: {attribute} = {type(value).__name__}")
    assert found == []


def test_the_state_check_tells_mutable_from_immutable() -> None:
    import types

    from orchestrator import Principal

    assert _immutable(("a", 1, frozenset({2.0})))
    assert _immutable(types.MappingProxyType({"run": print}))
    assert _immutable(Principal(user_id="alice", org_id="acme"))
    for mutable in ([], {}, set(), ("a", []), types.MappingProxyType({"a": []}), bytearray()):
        assert not _immutable(mutable), mutable
