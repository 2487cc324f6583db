"""Layers: the server's handlers and the CLI's commands hold no SQL and no database driver. They
parse, call a core service and serialise; the rules are in imageapi/core and the SQL in the core's
repositories (imageapi/core/repositories), so a second database engine only changes the core."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUTER = sorted([*(ROOT / "imageapi" / "server").glob("*.py"), *(ROOT / "imageapi" / "cli").glob("*.py")])
DRIVERS = {"aiosqlite", "sqlite3", "asyncpg", "psycopg", "psycopg2"}

# A statement's first words, as the code base writes SQL (upper case). "DELETE" alone is an HTTP
# method, so DELETE needs its FROM; UPDATE needs a table and SET.
SQL_START = re.compile(
    r"^\s*(SELECT\s|WITH\s+\w+(\s*\([^)]*\))?\s+AS\s*\(|INSERT\s+(OR\s+\w+\s+)?INTO\s|REPLACE\s+INTO\s|"
    r"UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s+(UNIQUE\s+)?(TABLE|INDEX|VIEW|TRIGGER)\s|PRAGMA\s|"
    r"BEGIN(\s|;|$)|COMMIT(\s|;|$)|ROLLBACK(\s|;|$)|SAVEPOINT\s|RELEASE\s)")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string literal, and the leading text of every f-string (where SQL would start)."""
    out: list[tuple[int, str]] = []
    inside_fstring: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            head = "".join(v.value for v in node.values[:1] if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, head))
            inside_fstring.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstring:
            out.append((node.lineno, node.value))
    return out


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module.split(".")[0]))
    return out


def sql_sites(source: str) -> list[str]:
    tree = ast.parse(source)
    found = [f"line {n}: SQL {text.strip()[:60]!r}" for n, text in _strings(tree) if SQL_START.match(text)]
    found += [f"line {n}: imports {name}" for n, name in _imports(tree) if name in DRIVERS]
    return sorted(found)


def test_the_check_finds_sql_and_drivers() -> None:
    assert sql_sites('x = "SELECT id FROM files WHERE id = ?"')
    assert sql_sites('x = ("UPDATE files SET thumb_state = ? "\n     "WHERE id = ?")')
    assert sql_sites('x = f"DELETE FROM faces WHERE id IN ({q})"')
    assert sql_sites('x = "INSERT OR IGNORE INTO tags (name) VALUES (?)"')
    assert sql_sites('x = "BEGIN IMMEDIATE"') and sql_sites('x = "COMMIT"') and sql_sites('x = "PRAGMA x = 1"')
    assert sql_sites("import aiosqlite") and sql_sites("import sqlite3 as s") and sql_sites("from aiosqlite import Row")
    # Words of prose and HTTP methods are not SQL.
    assert not sql_sites('x = ["GET", "POST", "DELETE"]; y = "Select a library"; z = "UPDATE"')
    assert not sql_sites('x = "Update the index: imageapi scan"; y = f"DELETE {path}"')


@pytest.mark.parametrize("path", OUTER, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_sql_and_no_driver_in_server_and_cli(path: Path) -> None:
    assert sql_sites(path.read_text(encoding="utf-8")) == [], (
        f"{path.relative_to(ROOT)} holds SQL or imports a database driver: move the query into a "
        "repository in imageapi/core/repositories and call it through a core service")


def test_every_server_and_cli_module_is_checked() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in OUTER}
    assert {"server/routes_faces.py", "server/routes_status.py", "cli/library.py", "server/app.py"} <= names


# ------------------------------------------------------------------------------------------ core
# In the core, SQL lives in the repositories (and the engine's own modules: connections,
# transactions, migrations). The modules below still hold SQL; the lists can only shrink: a module
# that gains SQL fails, and a module of PENDING that no longer holds any must leave the list.
CORE = ROOT / "imageapi" / "core"
SQL_HOMES = {"repositories", "postgres", "db.py", "database.py", "migrations.py"}
# Migration 11's step, which the SQLite migrations run on their synchronous connection.
MIGRATION_STEPS = {"tags.py:merge_equal_tags"}
# Not moved to a repository yet (none left).
PENDING: set[str] = set()


def core_modules() -> dict[str, Path]:
    """Every module of imageapi/core outside SQL_HOMES, by its path under imageapi/core."""
    out = {}
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE).as_posix()
        if rel.split("/")[0] not in SQL_HOMES:
            out[rel] = path
    return out


def _lines_of(source: str, function: str) -> range:
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return range(node.lineno, (node.end_lineno or node.lineno) + 1)
    return range(0)


def sql_outside_repositories(sources: dict[str, str], allowed: set[str]) -> dict[str, list[str]]:
    """module -> its SQL sites, for the modules holding SQL they are not allowed to. An entry
    "module" allows the whole module, "module:function" one top-level function of it."""
    out = {}
    for name, text in sources.items():
        if name in allowed:
            continue
        spared = [line for entry in allowed if entry.startswith(name + ":")
                  for line in _lines_of(text, entry.split(":", 1)[1])]
        sites = [site for site in sql_sites(text) if int(site.split()[1].rstrip(":")) not in spared
                 or site.split(": ", 1)[1].startswith("imports ")]
        if sites:
            out[name] = sites
    return out


def test_the_core_check_finds_sql_in_an_unlisted_module() -> None:
    sources = {"tags.py": 'X = "SELECT id FROM tags"', "names.py": 'Y = "DELETE FROM faces WHERE id = ?"',
               "kinds.py": 'Z = "Select a kind"'}
    assert sql_outside_repositories(sources, {"tags.py"}) == {
        "names.py": ["line 1: SQL 'DELETE FROM faces WHERE id = ?'"]}
    # A function allowed: the rest of its module is not.
    tags = 'def merge(c):\n    c.execute("DELETE FROM tags")\n\n\nX = "SELECT 1"\n'
    assert sql_outside_repositories({"tags.py": tags}, {"tags.py:merge"}) == {"tags.py": ["line 5: SQL 'SELECT 1'"]}
    assert sql_outside_repositories({"tags.py": tags}, {"tags.py:other"}) == {
        "tags.py": ["line 2: SQL 'DELETE FROM tags'", "line 5: SQL 'SELECT 1'"]}
    assert "repositories/tags.py" not in core_modules() and "db.py" not in core_modules()
    assert {"faces/people.py", "tags.py", "names.py"} <= set(core_modules())


def test_no_sql_in_the_core_outside_repositories() -> None:
    sources = {name: path.read_text(encoding="utf-8") for name, path in core_modules().items()}
    assert sql_outside_repositories(sources, PENDING | MIGRATION_STEPS) == {}, (
        "SQL outside imageapi/core/repositories: move it into a repository (repositories/<aggregate>.py) "
        "and call that from the service")


def test_pending_modules_still_hold_sql() -> None:
    """The list only shrinks: a module whose SQL has moved out leaves PENDING."""
    done = sorted(name for name in PENDING if not sql_sites((CORE / name).read_text(encoding="utf-8")))
    assert done == [], f"{done} hold no SQL any more: take them off PENDING"


@pytest.mark.parametrize("entry", sorted(MIGRATION_STEPS))
def test_migration_steps_still_exist(entry: str) -> None:
    name, function = entry.split(":")
    assert _lines_of((CORE / name).read_text(encoding="utf-8"), function), f"{entry} is gone: take it off the list"
