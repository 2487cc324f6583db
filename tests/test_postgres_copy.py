"""`imageapi db copy`: a real SQLite index (scanned from the corpus, with users, tags, faces, people
and insights) into a real PostgreSQL (tests/pg.py), compared row by row; a copy killed with
SIGKILL and run again; generated rows of every odd kind round-tripping."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core import errors
from imageapi.core.db import connect_sync
from imageapi.core.postgres.copy import SqliteSource, _from_pg, copy_index
from imageapi.core.postgres.migrations import embedding_type

REPO = Path(__file__).resolve().parent.parent
NOW = "2024-05-01T10:00:00"


def imageapi(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def emb(seed: int, dim: int = 128) -> bytes:
    return np.random.default_rng(seed).standard_normal(dim).astype("<f4").tobytes()


def fill_extras(db: Path) -> None:
    """What a user would lose by rescanning: users (the top one removed: its id stays used), tags,
    people and faces bound to them, insights with their thread, summaries, the geocode cache."""
    conn = connect_sync(db)
    try:
        with conn:
            hashes = [r[0] for r in conn.execute("SELECT content_hash FROM files WHERE content_hash IS NOT NULL "
                                                 "ORDER BY id")]
            assert len(hashes) >= 4
            for name in ("alice", "Bob", "carol"):
                conn.execute("INSERT INTO users (name, password_hash, created_at, token_key) VALUES (?, ?, ?, ?)",
                             (name, "$scrypt$x", NOW, os.urandom(16).hex()))
            conn.execute("DELETE FROM users WHERE name = 'carol'")
            for name, key in (("Holiday", "holiday"), ("Straße", "strasse"), ("日本", "日本")):
                conn.execute("INSERT INTO tags (name, key, created_at) VALUES (?, ?, ?)", (name, key, NOW))
            conn.executemany("INSERT INTO content_tags VALUES (?, ?, ?)",
                             [(h, 1 + i % 3, NOW) for i, h in enumerate(hashes)])
            conn.execute("INSERT INTO persons (name, created_at) VALUES ('Ann', ?), ('Zoë', ?), ('Cy', ?)",
                         (NOW, NOW, NOW))
            for i, h in enumerate(hashes[:4]):
                for idx in range(2):
                    conn.execute(
                        "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, "
                        "bound_by, bound_at, created_at) VALUES (?, ?, 0.1, 0.2, 0.3, 0.4, 0.99, ?, 'arcface', ?, "
                        "?, ?, ?)", (h, idx, emb(i * 2 + idx), 1 + idx if i < 2 else None,
                                     "manual" if i < 2 else None, NOW if i < 2 else None, NOW))
                conn.execute("INSERT INTO face_scans VALUES (?, 'arcface', 2, ?)", (h, NOW))
            # A box drawn by hand: no embedding (an empty blob here, NULL in PostgreSQL).
            conn.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, "
                         "bound_by, bound_at, created_at) VALUES (?, 2, 0.6, 0.2, 0.1, 0.1, 1.0, X'', 'manual', 3, "
                         "'manual', ?, ?)", (hashes[0], NOW, NOW))
            conn.execute("INSERT INTO face_failures VALUES (?, 1, 3, 'boom', NULL, ?)", (hashes[-1], NOW))
            conn.execute("INSERT INTO face_state VALUES ('autobind_sweep', '42')")
            conn.execute("INSERT INTO insights (id, content_hash, thread_id, amended_from, title, body, tools, "
                         "backend, server, model, failovers, timings, created_at) VALUES "
                         "(1, ?, 1, NULL, 'Beach', 'A beach.', '[]', 'local', 'http://o', 'm', '[]', '{}', ?)",
                         (hashes[0], NOW))
            conn.execute("INSERT INTO insights (id, content_hash, thread_id, amended_from, title, body, tools, "
                         "backend, server, model, failovers, timings, created_at) VALUES "
                         "(2, ?, 1, 1, 'Beach at dusk', 'Later.', '[{\"name\": \"geo\"}]', 'hybrid', 'http://o', "
                         "'m', '[]', '{\"total_ms\": 5}', ?)", (hashes[0], NOW))
            for seq, role in enumerate(("user", "assistant", "tool")):
                conn.execute("INSERT INTO insight_messages (thread_id, seq, role, content, created_at) "
                             "VALUES (1, ?, ?, ?, ?)", (seq, role, f"message {seq} ✓", NOW))
            conn.execute("INSERT INTO conversation_summaries (day, contact, summary, message_count, model, server, "
                         "embedding_model, created_at, embedding) VALUES ('2024-05-01', '+4912345', 'talked', 7, "
                         "'m', 'http://o', 'nomic', ?, ?)", (NOW, emb(99, 768)))
            conn.execute("INSERT INTO geocode_cache VALUES ('nominatim', 525200, 134050, '{\"city\": \"Berlin\"}', ?)",
                         (NOW,))
    finally:
        conn.close()


async def table_rows(db: Path, url: str) -> dict[str, tuple[list[tuple[object, ...]], list[tuple[object, ...]]]]:
    """Every table's rows on both sides, in key order (PostgreSQL's embeddings as SQLite's blobs)."""
    import asyncpg

    from imageapi.core.postgres.copy import _column_types, _vector_codec

    src = SqliteSource(db)
    src.open()
    conn = await asyncpg.connect(url)
    await _vector_codec(conn)
    try:
        out = {}
        for table in src.tables():
            cols = ", ".join(f'"{c}"' for c in table.columns)
            keys = ", ".join(f'"{c}"' for c in table.key)
            mine = src.conn.execute(f'SELECT {cols} FROM "{table.name}" ORDER BY {keys}').fetchall()  # type: ignore[union-attr]
            types = await _column_types(conn, table)
            theirs = [_from_pg(table, tuple(r), types)
                      for r in await conn.fetch(f'SELECT {cols} FROM "{table.name}" ORDER BY {keys}')]
            out[table.name] = (mine, theirs)
        return out
    finally:
        await conn.close()
        src.close()


@pytest.fixture()
def indexed(env_dirs: dict[str, Path], corpus: Path) -> tuple[Path, dict[str, str]]:
    """An index made by `imageapi scan` over corpus photos and videos, plus the extras."""
    pictures = env_dirs["tmp"] / "Pictures"
    for sub in ("jpeg", "heic", "video", "tiff"):
        shutil.copytree(corpus / sub, pictures / sub)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DATABASE_URL", None)  # the source is an SQLite index, also when the suite runs on PostgreSQL
    done = imageapi("scan", "--full", str(pictures), "--json", env=env)
    assert done.returncode == 0, done.stderr
    db = env_dirs["data"] / "imageapi.db"
    fill_extras(db)
    return db, env


def test_copy_of_a_scanned_index_is_the_same_row_by_row(indexed: tuple[Path, dict[str, str]], pg_url: str) -> None:
    import asyncpg

    db, env = indexed
    done = imageapi("db", "copy", "--to", pg_url, "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["verified"] and not summary["resumed"] and summary["rows"] == summary["copied"] > 20
    rows = asyncio.run(table_rows(db, pg_url))
    assert {"files", "dirs", "scans", "libraries", "tags", "content_tags", "users", "persons", "faces",
            "face_scans", "face_failures", "face_state", "insights", "insight_messages",
            "conversation_summaries", "geocode_cache"} <= set(rows)
    for table, (mine, theirs) in rows.items():
        assert mine == theirs, table
        assert summary["tables"][table]["rows"] == len(mine)
    assert len(rows["files"][0]) >= 20 and len(rows["faces"][0]) == 9

    async def after() -> None:
        conn = await asyncpg.connect(pg_url)
        try:
            # Identities continue past the copied ids, and past the removed user's id (AUTOINCREMENT).
            new_user = await conn.fetchval("INSERT INTO users (name, password_hash, created_at, token_key) "
                                           "VALUES ('dave', 'x', 'now', 'k') RETURNING id")
            assert new_user == 4
            new_file = await conn.fetchval(
                "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, first_seen, last_seen) "
                "VALUES (1, 'new.jpg', '', 'image', 1, 1, 'now', 'now') RETURNING id")
            assert new_file == max(r[0] for r in rows["files"][0]) + 1
            # Embeddings: pgvector where the server has it (its operators work on the copied
            # values), real[] of the same float32 values where not.
            has_vector = await conn.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            kind = await embedding_type(conn, "faces")
            assert kind == ("vector" if has_vector else "real[]")
            assert await embedding_type(conn, "conversation_summaries") == kind
            if kind == "vector":
                a, b = (np.frombuffer(r[0], dtype="<f4") for r in
                        (rows["faces"][0][0][8:9], rows["faces"][0][1][8:9]))
                dist = await conn.fetchval("SELECT a.embedding <=> b.embedding FROM faces a, faces b "
                                           "WHERE a.id = $1 AND b.id = $2", rows["faces"][0][0][0],
                                           rows["faces"][0][1][0])
                want = 1 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
                assert abs(dist - want) < 1e-5
            with pytest.raises(asyncpg.UniqueViolationError):  # NOCASE kept: 'BOB' is Bob
                await conn.execute("INSERT INTO users (name, password_hash, created_at, token_key) "
                                   "VALUES ('BOB', 'x', 'now', 'k')")
        finally:
            await conn.close()

    asyncio.run(after())

    # A second run refuses a finished copy; --force copies it again from scratch.
    again = imageapi("db", "copy", "--to", pg_url, env=env)
    assert again.returncode == 2 and "already holds a finished copy" in again.stderr and "--force" in again.stderr
    forced = imageapi("db", "copy", "--to", pg_url, "--force", "--json", env=env)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["tables"] == summary["tables"]


def test_copy_refuses_another_index_and_reports_a_mismatch(indexed: tuple[Path, dict[str, str]],
                                                           pg_url: str, tmp_path: Path) -> None:
    import asyncpg

    db, env = indexed
    other = tmp_path / "other.db"
    connect_sync(other).close()
    assert imageapi("--database", str(other), "db", "copy", "--to", pg_url, env=env).returncode == 0
    refused = imageapi("db", "copy", "--to", pg_url, env=env)
    assert refused.returncode == 2 and "copy of another index" in refused.stderr, refused.stderr

    # A row changed in PostgreSQL behind the copy's back: the verification says which table.
    assert imageapi("db", "copy", "--to", pg_url, "--force", env=env).returncode == 0

    async def tamper() -> None:
        conn = await asyncpg.connect(pg_url)
        await conn.execute("UPDATE db_copy SET finished_at = NULL")
        await conn.execute("UPDATE files SET size = size + 1 WHERE id = (SELECT min(id) FROM files)")
        await conn.close()

    asyncio.run(tamper())
    with pytest.raises(errors.DatabaseError, match="differs from the index in files .*same count"):
        asyncio.run(copy_index(db, pg_url))


def test_commands_and_settings_around_the_copy(env_dirs: dict[str, Path], pg_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DATABASE_URL", None)  # the suite run against PostgreSQL sets one
    missing = imageapi("db", "copy", "--to", pg_url, env=env)
    assert missing.returncode == 4 and "no SQLite index" in missing.stderr
    connect_sync(env_dirs["data"] / "imageapi.db").close()
    assert imageapi("db", "copy", env=env).returncode == 2  # no target
    assert imageapi("db", "copy", "--to", "/tmp/x.db", env=env).returncode == 2
    # DATABASE_URL=postgresql://... is the default target; the password is never printed.
    unreachable = pg_url.replace("@", ":hunter2@", 1).rsplit(":", 1)[0].rsplit(":", 1)[0] + ":1/x"
    down = imageapi("db", "copy", env={**env, "DATABASE_URL": unreachable})
    assert down.returncode == 5 and "cannot connect to PostgreSQL" in down.stderr, down.stderr
    assert "hunter2" not in down.stderr + down.stdout
    ok = imageapi("db", "copy", "--json", env={**env, "DATABASE_URL": pg_url})
    assert ok.returncode == 0 and json.loads(ok.stdout)["verified"], ok.stderr


def test_a_killed_copy_run_again_finishes_without_duplicates(env_dirs: dict[str, Path], pg_url: str) -> None:
    import asyncpg

    db = env_dirs["data"] / "imageapi.db"
    conn = connect_sync(db)
    with conn:
        conn.execute("INSERT INTO libraries (id, name, root, created_at) VALUES (1, 'main', '/p', ?)", (NOW,))
        conn.executemany(
            "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, first_seen, last_seen) "
            "VALUES (1, ?, ?, 'image', ?, ?, ?, ?, ?)",
            [(f"d{i % 97}/IMG_{i:06d}.jpg", f"d{i % 97}", i, i * 1000, f"{i:064x}", NOW, NOW) for i in range(60_000)])
        conn.executemany("INSERT INTO dirs (library_id, rel_path, mtime_ns) VALUES (1, ?, ?)",
                         [(f"d{i}", i) for i in range(97)])
    conn.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    async def copied_files() -> int:
        c = await asyncpg.connect(pg_url)
        try:
            if not await c.fetchval("SELECT to_regclass('db_copy') IS NOT NULL"):
                return 0
            return int(await c.fetchval("SELECT COALESCE(SUM(rows), 0) FROM db_copy WHERE table_name = 'files'"))
        finally:
            await c.close()

    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "db", "copy", "--to", pg_url, "--batch", "500"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while asyncio.run(copied_files()) < 5000:
            assert proc.poll() is None and time.monotonic() < deadline, "the copy ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = asyncio.run(copied_files())
    assert 0 < partial < 60_000
    rerun = imageapi("db", "copy", "--to", pg_url, "--batch", "4000", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["resumed"] and summary["tables"]["files"]["rows"] == 60_000
    assert summary["tables"]["files"]["copied"] == 60_000 - partial  # carried on, nothing twice
    rows = asyncio.run(table_rows(db, pg_url))
    assert rows["files"][0] == rows["files"][1] and rows["dirs"][0] == rows["dirs"][1]


# Generated rows: odd text (NUL-free: PostgreSQL text cannot hold NUL), 64-bit integers, NULLs,
# floats of every kind, blobs and embeddings.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
BIG = st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1)
FLOAT = st.floats(allow_nan=False, width=64)
F32 = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1, max_size=16)

file_rows = st.lists(st.tuples(TEXT, BIG, BIG, st.none() | TEXT, st.none() | BIG, st.none() | FLOAT,
                               st.none() | FLOAT), max_size=25, unique_by=lambda r: r[0])
face_rows = st.lists(st.tuples(TEXT, st.integers(0, 50), FLOAT, F32, st.none() | TEXT), max_size=10,
                     unique_by=lambda r: (r[0], r[1]))
state_rows = st.lists(st.tuples(TEXT, TEXT), max_size=10, unique_by=lambda r: r[0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(files=file_rows, faces=face_rows, state=state_rows, arrays=st.booleans())
def test_generated_rows_round_trip(pg_server: str, tmp_path_factory: pytest.TempPathFactory,
                                   files: list, faces: list, state: list, arrays: bool) -> None:
    """arrays: embeddings as real[] even where pgvector is installed (both forms round-trip)."""
    from tests import pg

    db = tmp_path_factory.mktemp("gen") / "gen.db"
    conn = connect_sync(db)
    with conn:
        conn.execute("INSERT INTO libraries (id, name, root, created_at) VALUES (1, 'm', '/', ?)", (NOW,))
        for path, size, mtime, make, iso, lat, dur in files:
            conn.execute("INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, make, iso, gps_lat, "
                         "duration, first_seen, last_seen) VALUES (1, ?, '', 'image', ?, ?, ?, ?, ?, ?, ?, ?)",
                         (path, size, mtime, make, iso, lat, dur, NOW, NOW))
        for h, idx, score, vec, model in faces:
            conn.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
                         "VALUES (?, ?, 0, 0, 1, 1, ?, ?, ?, ?)",
                         (h, idx, score, np.asarray(vec, dtype="<f4").tobytes(), model or "", NOW))
        conn.executemany("INSERT INTO face_state VALUES (?, ?)", state)
    conn.close()
    name = asyncio.run(pg.create_database(pg_server))
    url = pg.with_database(pg_server, name)
    try:
        result = asyncio.run(copy_index(db, url, batch=7, use_vector=False if arrays else None))
        assert result.tables and all(t.rows == t.copied for t in result.tables)
        for table, (mine, theirs) in asyncio.run(table_rows(db, url)).items():
            assert mine == theirs, table
    finally:
        asyncio.run(pg.drop_database(pg_server, name))


def test_text_postgresql_cannot_hold_is_a_clear_error(tmp_path: Path, pg_url: str) -> None:
    db = tmp_path / "nul.db"
    conn = connect_sync(db)
    with conn:
        conn.execute("INSERT INTO face_state VALUES ('k', ?)", ("a\x00b",))
    conn.close()
    with pytest.raises(errors.DatabaseError, match="copying face_state"):
        asyncio.run(copy_index(db, pg_url))


def test_sqlite_rows_are_read_from_one_snapshot(tmp_path: Path) -> None:
    db = tmp_path / "snap.db"
    connect_sync(db).close()
    src = SqliteSource(db)
    src.open()
    try:
        other = sqlite3.connect(db)
        other.execute("INSERT INTO face_state VALUES ('late', 'x')")
        other.commit()
        other.close()
        table = next(t for t in src.tables() if t.name == "face_state")
        assert src.count(table) == 0
    finally:
        src.close()


def test_one_copy_at_a_time(tmp_path: Path, pg_url: str) -> None:
    import asyncpg

    from imageapi.core.postgres.copy import COPY_LOCK

    db = tmp_path / "one.db"
    connect_sync(db).close()

    async def go() -> None:
        holder = await asyncpg.connect(pg_url)
        try:
            assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", COPY_LOCK)
            with pytest.raises(errors.LockedError, match="another `imageapi db copy`"):
                await copy_index(db, pg_url)
        finally:
            await holder.close()
        assert (await copy_index(db, pg_url)).tables

    asyncio.run(go())


def test_a_refused_statement_is_one_clear_error(tmp_path: Path, pg_url: str) -> None:
    """A role that may not create tables: the copy says so, as a core error, not a traceback."""
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    role = f"imageapi_ro_{os.getpid()}"

    async def go() -> str:
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'ro-{role}'")
            await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        finally:
            await conn.close()
        parts = urlsplit(pg_url)
        return urlunsplit(parts._replace(netloc=f"{role}:ro-{role}@{parts.hostname}:{parts.port}"))

    db = tmp_path / "ro.db"
    connect_sync(db).close()
    url = asyncio.run(go())
    try:
        with pytest.raises(errors.DatabaseError, match="permission denied .*run the copy again"):
            asyncio.run(copy_index(db, url))
    finally:
        async def drop() -> None:
            conn = await asyncpg.connect(pg_url)
            await conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
            await conn.close()

        asyncio.run(drop())
