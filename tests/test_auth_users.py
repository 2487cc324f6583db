"""Users and their tokens across schema versions: migration 9 (ids never reused, a token key per
user) keeps every user and id, and sqlite_sequence starts above the highest id there is."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from imageapi.core.db import apply_migrations, connect
from imageapi.core.migrations import MIGRATIONS
from imageapi.core.tokens import TokenError, TokenService
from imageapi.core.users import (
    User,
    add_user,
    get_user,
    get_user_by_id,
    hash_password,
    remove_user,
    set_password,
    stored_hash,
    verify_password,
)

PASSWORD = "correct horse battery"


async def test_migration_9_keeps_users_and_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    apply_migrations(old, [m for m in MIGRATIONS if m.version < 9])
    stored = hash_password(PASSWORD)
    for uid, name in [(1, "alice"), (3, "bob"), (5, "carol"), (6, "dave")]:
        old.execute("INSERT INTO users (id, name, password_hash, created_at, tokens_valid_after) "
                    "VALUES (?, ?, ?, 'then', ?)", (uid, name, stored, uid * 10))
    old.execute("DELETE FROM users WHERE id = 6")  # without AUTOINCREMENT the next user would get 6
    old.close()

    db = await connect(path)  # migrates
    try:
        rows = [tuple(r) for r in await (await db.execute(
            "SELECT id, name, password_hash, created_at, tokens_valid_after FROM users ORDER BY id")).fetchall()]
        assert rows == [(1, "alice", stored, "then", 10), (3, "bob", stored, "then", 30),
                        (5, "carol", stored, "then", 50)]
        keys = [r[0] for r in await (await db.execute("SELECT token_key FROM users")).fetchall()]
        assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in keys) and len(set(keys)) == 3
        user, hashed = await stored_hash(db, "bob")
        assert user is not None and user.id == 3 and verify_password(PASSWORD, hashed)
        seq = await (await db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'users'")).fetchone()
        assert seq is not None and seq[0] == 5
        erin = await add_user(db, "erin", stored)
        assert erin.id == 6 and erin.token_key not in keys
        await remove_user(db, "erin")
        frank = await add_user(db, "frank", stored)
        assert frank.id == 7  # erin's id stays hers
        await remove_user(db, "carol")
        await remove_user(db, "frank")
        assert (await add_user(db, "gina", stored)).id == 8
        assert (await get_user(db, "alice")).id == 1
    finally:
        await db.close()


async def test_a_new_database_counts_ids_from_1(tmp_path: Path) -> None:
    db = await connect(tmp_path / "db.sqlite")
    try:
        stored = hash_password(PASSWORD)
        a = await add_user(db, "alice", stored)
        await remove_user(db, "alice")
        b = await add_user(db, "bob", stored)
        assert (a.id, b.id) == (1, 2)
        assert a.token_key != b.token_key
    finally:
        await db.close()


async def test_a_password_change_revokes_a_token_of_the_same_second(tmp_path: Path) -> None:
    db = await connect(tmp_path / "db.sqlite")
    try:
        alice = await add_user(db, "alice", hash_password(PASSWORD))
        new_hash = hash_password("another long password")
        svc = TokenService("s" * 32, user_recheck=0)

        async def load(uid: int) -> User | None:
            return await get_user_by_id(db, uid)

        time.sleep(1.02 - time.time() % 1)  # the start of a second: the change lands in the same one
        token = svc.issue(alice, 60).token
        await set_password(db, "alice", new_hash)
        assert int(time.time()) == svc.decode(token).issued_at
        with pytest.raises(TokenError):
            await svc.verify(token, load)
        assert (await svc.verify(svc.issue(await get_user(db, "alice"), 60).token, load)).name == "alice"
    finally:
        await db.close()
