"""A pytest plugin (`-p tests.write_guard`): fails the run when imageapi's own code runs a write
statement on an aiosqlite connection outside a transaction its task holds (the one write idiom of
imageapi.core.database: `transaction()`, `write()`, `write_many()`). Writes made by the tests'
own set-up code are not checked."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from imageapi.core.database import Database

_PACKAGE = str(Path(__file__).resolve().parent.parent / "imageapi")
_WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
violations: list[str] = []


def _check(conn: aiosqlite.Connection, sql: str) -> None:
    if not _WRITE.match(sql) or Database.of(conn).in_transaction():
        return
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        violations.append(f"{frame.f_code.co_filename}:{frame.f_lineno}: {' '.join(sql.split())[:100]}")


_execute = aiosqlite.Connection.execute
_executemany = aiosqlite.Connection.executemany


def _guarded_execute(self: aiosqlite.Connection, sql: str, parameters: Any = None) -> Any:
    _check(self, sql)
    return _execute(self, sql, parameters)


def _guarded_executemany(self: aiosqlite.Connection, sql: str, parameters: Any) -> Any:
    _check(self, sql)
    return _executemany(self, sql, parameters)


aiosqlite.Connection.execute = _guarded_execute  # type: ignore[assignment, method-assign]
aiosqlite.Connection.executemany = _guarded_executemany  # type: ignore[assignment, method-assign]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if violations:
        sys.stderr.write("writes outside a transaction:\n" + "\n".join(sorted(set(violations))) + "\n")
        session.exitstatus = 1
