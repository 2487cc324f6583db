"""SQL of the `users` and `sessions` tables, for imageapi.core.users and imageapi.core.sessions."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.db import Connection

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
