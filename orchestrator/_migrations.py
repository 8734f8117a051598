"""Finding the numbered migration files (``NNNN_description.sql``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._errors import MigrationError

_NAME = re.compile(r"^(?P<number>\d{4})_(?P<description>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward-only migration file."""

    name: str
    sql: str


def migrations_dir() -> Path:
    """Where the migration files are.

    A wheel carries them inside the package; a source checkout (an editable
    install) has them at the top of the repository.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "migrations", here.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"no migrations folder beside {here}")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration file, in the order it must be applied.

    Raises:
        MigrationError: a file is misnamed, or two files share a number.
    """
    directory = directory or migrations_dir()
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_description.sql")
        number = match.group("number")
        if number in found:
            raise MigrationError(f"migrations {found[number].name!r} and {path.name!r} share number {number}")
        found[number] = Migration(name=path.name, sql=path.read_text(encoding="utf-8"))
    return [found[number] for number in sorted(found)]
