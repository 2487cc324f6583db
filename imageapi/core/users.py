"""Users of the server: the `users` table and password hashing.

Passwords are stored with scrypt from the standard library (salted, memory-hard, ~50 ms per
check here), in a self-describing string so the cost can be raised later without breaking
stored hashes: `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`.

Every user has a random `token_key`, carried in each token issued for them: a token is accepted
only while its user id still holds that key. Ids are never reused (AUTOINCREMENT) and a new user
gets a new key, so a removed user's token never passes for a later user; a password change draws
a new key, so every token issued before it stops working.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field

from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.errors import ImageapiError, NotFoundError, UsageError
from imageapi.core.repositories import users
from imageapi.core.throttle import LoginThrottle

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")  # fullmatch: '$' would let a final '\n' in
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # scrypt's cost does not depend on it, but a bound keeps requests small

# 2**14 * 8 * 128 bytes = 16 MiB of memory per check.
SCRYPT_LOG_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024


class BadCredentialsError(ImageapiError):
    code = "bad_credentials"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    created_at: str
    tokens_valid_after: int  # unix seconds: tokens issued before this are refused
    token_key: str = field(repr=False)  # carried in every token of this user (see the module doc)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str) -> str:
    """A fresh salted scrypt hash of `password` (CPU-bound: run it off the event loop)."""
    check_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=2**SCRYPT_LOG_N, r=SCRYPT_R, p=SCRYPT_P,
        maxmem=_MAXMEM, dklen=KEY_BYTES,
    )
    return f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash. A malformed stored hash never matches."""
    try:
        scheme, log_n, r, p, salt_b64, key_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        n, r_i, p_i = 2 ** int(log_n), int(r), int(p)
        if not (10 <= int(log_n) <= 20 and 1 <= r_i <= 32 and 1 <= p_i <= 4):
            return False
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(key_b64)
    except ValueError:
        return False
    if len(password) > MAX_PASSWORD:
        return False
    key = hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r_i, p=p_i,
        maxmem=_MAXMEM, dklen=len(expected),
    )
    return hmac.compare_digest(key, expected)


# Checked against when the user does not exist, so a missing user costs as long as a wrong password.
_DUMMY_HASH = (
    f"scrypt${SCRYPT_LOG_N}${SCRYPT_R}${SCRYPT_P}${_b64(b'0' * SALT_BYTES)}${_b64(b'0' * KEY_BYTES)}"
)


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name or ""):
        raise UsageError(
            f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def check_password(password: str) -> None:
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8 (stdin), or JSON escapes
        raise UsageError("the password must be valid UTF-8 text") from None
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UsageError(f"password must be at most {MAX_PASSWORD} characters")


def new_token_key() -> str:
    return secrets.token_hex(16)


def _user(row: users.UserRow) -> User:
    return User(id=row.id, name=row.name, created_at=row.created_at, tokens_valid_after=row.tokens_valid_after,
                token_key=row.token_key)


async def get_user(db: Connection, name: str) -> User:
    row = await users.by_name(db, name)
    if row is None:
        raise NotFoundError(f"no user named {name!r}")
    return _user(row)


async def get_user_by_id(db: Connection, user_id: int) -> User | None:
    row = await users.by_id(db, user_id)
    return _user(row) if row is not None else None


async def list_users(db: Connection) -> list[User]:
    return [_user(r) for r in await users.all_users(db)]


async def add_user(db: Connection, name: str, password_hash: str) -> User:
    """Store a user with an already computed hash (`hash_password`)."""
    check_name(name)
    if await users.name_exists(db, name):
        raise UsageError(f"user {name!r} already exists (use `imageapi user passwd`)")
    async with transaction(db):
        user_id = await users.insert_user(db, name, password_hash, utcnow(), new_token_key())
    user = await get_user_by_id(db, user_id)
    assert user is not None
    return user


async def remove_user(db: Connection, name: str) -> User:
    user = await get_user(db, name)
    async with transaction(db):
        await users.delete_user(db, user.id)
    return user


async def set_password(db: Connection, name: str, password_hash: str) -> User:
    """Replace a user's password; every token issued before now stops working: a new token key
    (`tokens_valid_after` alone, in whole seconds, spares a token issued in the same second)."""
    user = await get_user(db, name)
    async with transaction(db):
        await users.set_password(db, user.id, password_hash, int(time.time()), new_token_key())
    return await get_user(db, name)


async def stored_hash(db: Connection, name: str) -> tuple[User | None, str]:
    """The user and their stored hash, or (None, a dummy hash) so callers check something either way."""
    if not NAME_RE.fullmatch(name):  # cannot be a user's (and SQLite cannot bind lone surrogates)
        return None, _DUMMY_HASH
    found = await users.with_hash(db, name)
    if found is None:
        return None, _DUMMY_HASH
    return _user(found[0]), found[1]


async def login(db: Connection, throttle: LoginThrottle, addr: str, name: str, password: str) -> User:
    """The user `name`, when `password` is theirs; BadCredentialsError otherwise. The attempt is
    reserved with the throttle before anything is checked (ThrottledError while it says wait) and
    released with its outcome, whatever happens in between."""
    attempt = await throttle.reserve(addr, name.lower() if NAME_RE.fullmatch(name) else "")
    ok = False
    try:
        user, stored = await stored_hash(db, name)
        async with throttle.check_slots:
            ok = await asyncio.to_thread(verify_password, password, stored) and user is not None
    finally:
        await throttle.release(attempt, ok)
    if not ok or user is None:
        raise BadCredentialsError("wrong user name or password")
    return user
