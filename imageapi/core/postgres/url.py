"""DATABASE_URL: which database, SQLite (a path, the default) or PostgreSQL (a URL).

A PostgreSQL URL holds a password: it is kept out of repr() and every message, which show the URL
with the password replaced by '***'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from imageapi.core.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(value: str) -> bool:
    return value.split("://", 1)[0].lower() in POSTGRES_SCHEMES and "://" in value


def redact(url: str) -> str:
    """The URL as it may be printed: its password (in the user part or a `password=` parameter)
    replaced by '***'."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    # Wherever a password= parameter sits (a query, or what urlsplit takes for a fragment).
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", urlunsplit(parts))


@dataclass(frozen=True)
class DatabaseSetting:
    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None                  # SQLite: the file
    url: str = field(default="", repr=False)  # PostgreSQL: the URL, password included

    @property
    def shown(self) -> str:
        return str(self.path) if self.kind == "sqlite" else redact(self.url)

    def __repr__(self) -> str:
        return f"DatabaseSetting(kind={self.kind!r}, {self.shown!r})"


def parse_postgres_url(value: str, setting: str = "DATABASE_URL") -> DatabaseSetting:
    """postgresql://user:pass@host:port/db (or postgres://...), checked before anything connects."""
    if "\x00" in value or any(c.isspace() for c in value):
        raise ConfigError(setting, f"a PostgreSQL URL holds no spaces or NUL characters: {redact(value)!r}")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        raise ConfigError(setting, f"not a valid PostgreSQL URL: {redact(value)!r}") from None
    if parts.scheme.lower() not in POSTGRES_SCHEMES:
        raise ConfigError(setting, f"not a PostgreSQL URL (postgresql://user:pass@host/db): {redact(value)!r}")
    if port == 0:
        raise ConfigError(setting, f"port 0 in {redact(value)!r}")
    return DatabaseSetting("postgresql", url=value)


def require_sqlite(postgres: DatabaseSetting | None) -> None:
    """Commands that read and write the index need SQLite until the store layer speaks PostgreSQL:
    a PostgreSQL DATABASE_URL gets one line saying what works with it today."""
    if postgres is not None:
        raise ConfigError("DATABASE_URL", f"{postgres.shown} is PostgreSQL, which this command cannot use yet; "
                          "today PostgreSQL is filled by `imageapi db copy` (docs/postgresql.md), and every "
                          "other command uses SQLite (unset DATABASE_URL or pass --database PATH)")
