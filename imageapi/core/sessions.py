"""Browser sessions: a random secret in an HttpOnly cookie, its digest in the `sessions` table.

A session belongs to a user and ends when it expires, when it is revoked (logout), when its user
is removed (the row goes with the user) or when the user's token key changes (a password change
draws a new one): the session keeps the key its user had when it began, as access tokens do.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.repositories import users

SECRET_BYTES = 32
MAX_SECRET_CHARS = 128  # a cookie value longer than this is not one of ours


@dataclass(frozen=True)
class Session:
    user_id: int
    name: str
    created_at: int  # unix seconds
    expires_at: int
    key: str  # the user's token key, as for a token's claims


def session_id(secret: str) -> str:
    """What is stored for a secret: its digest (the secret itself never reaches the database)."""
    return hashlib.blake2b(secret.encode("utf-8", "surrogatepass"), digest_size=32).hexdigest()


async def create_session(db: Connection, user_id: int, token_key: str, ttl: float,
                         now: float | None = None) -> tuple[str, int]:
    """A new session for the user: (the cookie's secret, expiry in unix seconds). Expired rows
    are dropped on the way (logins are rare enough to carry that)."""
    start = int(time.time() if now is None else now)
    expires = start + max(1, int(ttl))
    secret = secrets.token_urlsafe(SECRET_BYTES)
    async with transaction(db):
        await users.drop_expired_sessions(db, start)
        await users.insert_session(db, session_id(secret), user_id, token_key, start, expires)
    return secret, expires


async def find_session(db: Connection, secret: str, now: float | None = None) -> Session | None:
    """The live session a cookie's secret opens, or None (unknown, revoked, expired, its user gone
    or its token key changed since)."""
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return None
    at = time.time() if now is None else now
    row = await users.session_of(db, session_id(secret))
    if row is None or row.expires_at <= at or row.created_at < row.tokens_valid_after:
        return None
    return Session(user_id=row.user_id, name=row.name, created_at=row.created_at, expires_at=row.expires_at,
                   key=row.token_key)


async def revoke_session(db: Connection, secret: str) -> bool:
    """End a session; whether there was one."""
    async with transaction(db):
        return await users.delete_session(db, session_id(secret))
