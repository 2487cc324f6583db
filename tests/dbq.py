"""Tests that look into the index directly: sqlite3 on the file, or the same calls on PostgreSQL
when DATABASE_URL says so (the suite run with IMAGEAPI_TEST_DATABASE=postgresql).

`connect(path)` returns sqlite3's connection for an SQLite index and, when DATABASE_URL is a
PostgreSQL URL, an object with the part of its API the tests use (execute with `?` placeholders,
fetchone/fetchall, executemany, commit, close, `with`), statements in autocommit."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imageapi.core.postgres.connection import _as_driver_error, translate
from imageapi.core.postgres.url import is_postgres_url


def postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if is_postgres_url(url) else None


def connect(path: Path | str, timeout: float = 30, *, url: str | None = None) -> Any:
    """`url`: this PostgreSQL database (default: DATABASE_URL's, when it is one)."""
    url = url or postgres_url()
    if url is None:
        return sqlite3.connect(path, timeout=timeout)
    return PgSync(url)


class _Cursor:
    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self.rows, self.rowcount, self._i = rows, rowcount, 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._i >= len(self.rows):
            return None
        self._i += 1
        return self.rows[self._i - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        out, self._i = self.rows[self._i:], len(self.rows)
        return out

    def __iter__(self) -> Any:
        return iter(self.fetchall())


class PgSync:
    """asyncpg run on a loop of its own thread, so sync and async tests can both call it."""

    def __init__(self, url: str) -> None:
        import asyncpg

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.conn = self._call(asyncpg.connect(url, timeout=10))

    def _call(self, coro: Any) -> Any:
        try:
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)
        except Exception as exc:
            raise _as_driver_error(exc) from exc

    def execute(self, sql: str, params: Sequence[object] = ()) -> _Cursor:
        text = translate(sql)
        if text.lstrip().upper().startswith(("SELECT", "WITH", "VALUES")) or "RETURNING" in text.upper():
            rows = self._call(self.conn.fetch(text, *params))
            return _Cursor([tuple(r) for r in rows], len(rows))
        status = self._call(self.conn.execute(text, *params))
        last = status.rsplit(" ", 1)[-1]
        return _Cursor([], int(last) if last.isdigit() else -1)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._call(self.conn.executemany(translate(sql), [tuple(r) for r in rows]))

    def commit(self) -> None:
        """Every statement committed by itself."""

    def close(self) -> None:
        try:
            self._call(self.conn.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    def __enter__(self) -> PgSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
