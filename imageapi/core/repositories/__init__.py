"""Repositories: the SQL, and nothing else.

One module per aggregate. Each function runs the statements of one question or one write and
returns plain values or dataclasses; the rules (what may be written when, in which transaction)
are the services' (imageapi.core.*), which call these. The server and the CLI call the services
and never come here, so another database engine changes these modules and the services' types, not
the handlers.

Writes take no transaction of their own: the caller opens one (`imageapi.core.database.transaction`).
"""

from collections.abc import Sequence
from typing import Any

from imageapi.core.db import Connection, dialect


def nocase(db: Connection, expr: str) -> str:
    """`expr` as a `COLLATE NOCASE` column of SQLite compares it (ASCII letters folded). SQLite's
    NOCASE columns (persons.name, tags.name) fold by themselves in `=` and ORDER BY; PostgreSQL's
    columns are "C" with a unique index on lower(name), so there both sides are lower()ed (a "C"
    lower() folds ASCII letters only, as NOCASE does)."""
    return expr if dialect(db) == "sqlite" else f"lower({expr})"


def as_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows (sqlite3.Row or asyncpg Record) as dicts of column -> value: the names read once, not
    per row (dict(row) looks every name up again, several times slower for a page of wide rows)."""
    if not rows:
        return []
    keys = list(rows[0].keys())
    return [dict(zip(keys, r, strict=True)) for r in rows]
