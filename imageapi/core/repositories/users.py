"""SQL of the `users` and `sessions` tables, for imageapi.core.users and imageapi.core.sessions."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection, Row

# ------------------------------------------------------------------------------------ sessions


@dataclass(frozen=True)
class SessionRow:
    """A session joined with its user, while the user still holds the session's token key."""
    user_id: int
    name: str
    created_at: int
    expires_at: int
    tokens_valid_after: int
    token_key: str


async def drop_expired_sessions(db: Connection, now: int) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))


async def insert_session(db: Connection, session_id: str, user_id: int, token_key: str, created_at: int,
                         expires_at: int) -> None:
    """In the caller's transaction."""
    await db.execute("INSERT INTO sessions (id, user_id, token_key, created_at, expires_at) "
                     "VALUES (?, ?, ?, ?, ?)", (session_id, user_id, token_key, created_at, expires_at))


async def session_of(db: Connection, session_id: str) -> SessionRow | None:
    """The session and its user, or None (no such session, or its user's token key changed)."""
    async with db.execute(
        "SELECT s.user_id, u.name, s.created_at, s.expires_at, u.tokens_valid_after, u.token_key FROM sessions s "
        "JOIN users u ON u.id = s.user_id AND u.token_key = s.token_key WHERE s.id = ?", (session_id,)
    ) as cur:
        row = await cur.fetchone()
    if row is None:
        return None
    return SessionRow(row[0], row[1], row[2], row[3], row[4], row[5])


async def delete_session(db: Connection, session_id: str) -> bool:
    """Whether there was one. In the caller's transaction."""
    cur = await db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
    return (cur.rowcount or 0) > 0


# --------------------------------------------------------------------------------------- users

@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    created_at: str
    tokens_valid_after: int
    token_key: str


_COLUMNS = "id, name, created_at, tokens_valid_after, token_key"


def _user(row: Row) -> UserRow:
    return UserRow(id=row["id"], name=row["name"], created_at=row["created_at"],
                   tokens_valid_after=row["tokens_valid_after"], token_key=row["token_key"])


async def by_name(db: Connection, name: str) -> UserRow | None:
    """The user of this name, case aside."""
    async with db.execute(f"SELECT {_COLUMNS} FROM users WHERE lower(name) = lower(?)", (name,)) as cur:
        row = await cur.fetchone()
    return _user(row) if row is not None else None


async def by_id(db: Connection, user_id: int) -> UserRow | None:
    async with db.execute(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,)) as cur:
        row = await cur.fetchone()
    return _user(row) if row is not None else None


async def all_users(db: Connection) -> list[UserRow]:
    """By name, case aside."""
    async with db.execute(f"SELECT {_COLUMNS} FROM users ORDER BY lower(name), name") as cur:
        return [_user(r) for r in await cur.fetchall()]


async def name_exists(db: Connection, name: str) -> bool:
    """Whether a user has this name, case aside."""
    async with db.execute("SELECT 1 FROM users WHERE lower(name) = lower(?)", (name,)) as cur:
        return await cur.fetchone() is not None


async def insert_user(db: Connection, name: str, password_hash: str, created_at: str, token_key: str) -> int:
    """The new user's id. In the caller's transaction."""
    return await insert(
        db,
        "INSERT INTO users (name, password_hash, created_at, tokens_valid_after, token_key) VALUES (?, ?, ?, 0, ?)",
        (name, password_hash, created_at, token_key),
    )


async def delete_user(db: Connection, user_id: int) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM users WHERE id = ?", (user_id,))


async def set_password(db: Connection, user_id: int, password_hash: str, tokens_valid_after: int,
                       token_key: str) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE users SET password_hash = ?, tokens_valid_after = ?, token_key = ? WHERE id = ?",
                     (password_hash, tokens_valid_after, token_key, user_id))


async def with_hash(db: Connection, name: str) -> tuple[UserRow, str] | None:
    """The user of this name (case aside) and their stored password hash."""
    async with db.execute(f"SELECT {_COLUMNS}, password_hash FROM users WHERE lower(name) = lower(?)",
                          (name,)) as cur:
        row = await cur.fetchone()
    return (_user(row), row["password_hash"]) if row is not None else None
