"""Named SQL statements (sql/queries.sql) and migration files, without a database."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import orchestrator
from orchestrator._errors import MigrationError
from orchestrator._migrations import load_migrations, migrations_dir
from orchestrator._queries import parse_queries, queries, query

STORE_SOURCE = Path(orchestrator.__file__).with_name("_store.py")
STORE_TREE = ast.parse(STORE_SOURCE.read_text(encoding="utf-8"))
SQL_KEYWORD = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|FROM|WHERE|SET|VALUES)\b")

# -- parse_queries -------------------------------------------------------------

SAMPLE = """\
-- A preamble comment, before any header, is ignored.

-- name: get_one
-- What it is for.
SELECT 1;

-- name: put_two
INSERT INTO t (a)
VALUES ($1);
"""


def test_parse_queries_splits_by_header_in_order() -> None:
    parsed = parse_queries(SAMPLE)
    assert list(parsed) == ["get_one", "put_two"]
    assert parsed["get_one"].endswith("SELECT 1;")
    assert "INSERT" not in parsed["get_one"] and "preamble" not in parsed["get_one"]
    assert parsed["put_two"] == "INSERT INTO t (a)\nVALUES ($1);"


def test_duplicate_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'get_one' is defined twice"):
        parse_queries(SAMPLE + "\n-- name: get_one\nSELECT 2;\n")


@pytest.mark.parametrize(
    "text",
    [
        "-- name: empty\n-- name: other\nSELECT 1;\n",  # followed by another header
        "-- name: other\nSELECT 1;\n-- name: empty\n",  # at the end of the file
        "-- name: empty\n-- only a comment\n\n-- name: other\nSELECT 1;\n",  # comments only
    ],
)
def test_header_without_statement_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="'empty' has no statement"):
        parse_queries(text)


def test_query_of_unknown_name_is_a_key_error_naming_it() -> None:
    with pytest.raises(KeyError, match="no_such_statement"):
        query("no_such_statement")


# -- the store uses only named statements --------------------------------------


def _names_used_by_store() -> set[str]:
    names = set()
    for node in ast.walk(STORE_TREE):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        first = node.args[0]
        if called in {"query", "fetch", "fetchrow", "fetchval"} and isinstance(first, ast.Constant):
            names.add(first.value)
    return names


def test_every_statement_the_store_names_exists() -> None:
    used = _names_used_by_store()
    # The scan itself must work: it sees statements used both ways.
    assert {"apply_transitions", "claim_jobs", "migration_lock", "record_migration"} <= used
    assert sorted(used - set(queries())) == []


def test_every_statement_numbers_its_placeholders_from_1_without_gaps() -> None:
    for name, sql in queries().items():
        numbers = {int(n) for n in re.findall(r"\$(\d+)", sql)}
        assert numbers == set(range(1, len(numbers) + 1)), name


def _sql_argument(call: ast.Call) -> ast.expr | None:
    """The SQL text passed to conn.execute/fetch*(sql, ...) or _aio(conn.execute, sql, ...)."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return None
    if func.attr in {"execute", "fetch", "fetchrow", "fetchval"} and call.args:
        target = func.value
        if isinstance(target, ast.Name) and target.id == "self":
            return None  # Store.fetch(name, ...): a statement name, checked above
        return call.args[0]
    if func.attr == "_aio" and len(call.args) >= 2:
        fn = call.args[0]
        if isinstance(fn, ast.Attribute) and fn.attr in {"execute", "fetch", "fetchrow", "fetchval"}:
            return call.args[1]
    return None


def test_store_never_builds_sql_from_strings() -> None:
    sql_arguments = [arg for node in ast.walk(STORE_TREE) if isinstance(node, ast.Call) and (arg := _sql_argument(node))]
    assert len(sql_arguments) >= 5  # the scan found the store's statements
    for arg in sql_arguments:
        built = isinstance(arg, (ast.Constant, ast.JoinedStr, ast.BinOp)) or (
            isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "format"
        )
        assert not built, f"line {arg.lineno}: SQL built in code: {ast.unparse(arg)}"
    # Nor is SQL spelled anywhere else in the module: f-strings, .format, %.
    for node in ast.walk(STORE_TREE):
        if isinstance(node, ast.JoinedStr):
            literal = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            assert not SQL_KEYWORD.search(literal), f"line {node.lineno}: {ast.unparse(node)}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            pytest.fail(f"line {node.lineno}: str.format in the store: {ast.unparse(node)}")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant):
            pytest.fail(f"line {node.lineno}: %-formatting in the store: {ast.unparse(node)}")


# -- migrations ----------------------------------------------------------------


def _write(directory: Path, *names: str) -> None:
    for name in names:
        (directory / name).write_text(f"-- {name}\n", encoding="utf-8")


def test_load_migrations_orders_by_number(tmp_path: Path) -> None:
    _write(tmp_path, "0010_ten.sql", "0002_two.sql", "0001_one.sql", "README.md")
    loaded = load_migrations(tmp_path)
    assert [m.name for m in loaded] == ["0001_one.sql", "0002_two.sql", "0010_ten.sql"]
    assert [m.sql for m in loaded] == ["-- 0001_one.sql\n", "-- 0002_two.sql\n", "-- 0010_ten.sql\n"]


def test_empty_folder_has_no_migrations(tmp_path: Path) -> None:
    assert load_migrations(tmp_path) == []


@pytest.mark.parametrize("bad", ["1_short.sql", "0003-dash.sql", "0003_Upper.sql", "00003_five.sql", "0003.sql"])
def test_misnamed_file_is_refused_naming_it(tmp_path: Path, bad: str) -> None:
    _write(tmp_path, "0001_fine.sql", bad)
    with pytest.raises(MigrationError, match=re.escape(repr(bad))):
        load_migrations(tmp_path)


def test_two_files_with_one_number_are_refused(tmp_path: Path) -> None:
    _write(tmp_path, "0001_first.sql", "0001_second.sql")
    with pytest.raises(MigrationError, match="0001_first.sql.*0001_second.sql.*share number 0001"):
        load_migrations(tmp_path)


def test_shipped_migrations_are_well_named_and_ordered() -> None:
    loaded = load_migrations()
    names = [m.name for m in loaded]
    assert names and names[0] == "0001_job_status.sql"
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.sql", n) for n in names)
    numbers = [int(n[:4]) for n in names]
    assert numbers == sorted(set(numbers))
    assert load_migrations(migrations_dir()) == loaded


def test_first_migration_has_the_named_timestamps_check() -> None:
    sql = " ".join(load_migrations()[0].sql.split())
    assert (
        "CONSTRAINT job_status_timestamps_check CHECK (started_at >= created_at AND completed_at >= started_at)"
        in sql
    )
