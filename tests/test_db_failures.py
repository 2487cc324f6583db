"""What a full disk or a damaged file under the database does: the real cause in one line with its
own exit code, the transaction rolled back, nothing committed lost, the next run finishing the job;
a file that is not a database refused at start; damage found while serving in the error shape;
`doctor` running quick_check. Real SQLite files, a real full filesystem (a small tmpfs) where this
machine allows mounting one, and SQLite's max_page_count (the same SQLITE_FULL) everywhere."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageapi.core.config import load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect
from imageapi.core.errors import DatabaseFullError
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import resolve_targets, run_scan
from tests.media_factory import make_jpeg
from tests.test_server_cli import SECRET, free_port, http

# A full disk and a damaged file, as SQLite has them (PostgreSQL's disk-full error is mapped the same way:
# tests/test_postgres_connection.py).
pytestmark = pytest.mark.sqlite_only

EXIT_DISK_FULL = 6
EXIT_DATABASE_DAMAGED = 7
PAGE = 4096  # SQLite's default page size, which imageapi keeps


def imageapi(*args: str, env: dict[str, str], stdin: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=timeout)


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    """The command's stderr is one error line: no traceback, no log noise."""
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


def library(root: Path, n: int) -> Path:
    """n distinct small JPEGs (one picture; bytes after its end make each file and hash distinct)."""
    data = make_jpeg(root / "d0" / "p0.jpg", size=(64, 48), seed=3).read_bytes()
    for i in range(1, n):
        folder = root / f"d{i % 10}"
        folder.mkdir(exist_ok=True)
        (folder / f"p{i}.jpg").write_bytes(data + i.to_bytes(4, "big"))
    return root


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    out = dict(os.environ)
    out["WORKERS"] = "2"
    out["SECRET_KEY"] = SECRET
    return out


# ---------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB filesystem of its own (tmpfs); skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "test_transaction_on_a_full_database covers SQLITE_FULL with max_page_count")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_scan_on_a_full_disk_reports_it_keeps_what_was_written_and_the_next_run_finishes(
        env: dict[str, str], env_dirs: dict[str, Path], small_disk: Path) -> None:
    n = 3000  # rows need several MB: the 1 MB disk fills mid-scan
    root = library(env_dirs["tmp"] / "Pictures", n)
    db = small_disk / "imageapi.db"
    e = {**env, "DATABASE_URL": str(db)}  # thumbnails stay on the big disk
    res = imageapi("scan", "--full", str(root), env=e)
    assert res.returncode == EXIT_DISK_FULL, res.stderr
    line = one_line_error(res)
    assert "database or disk is full" in line and "cannot rollback" not in line
    # The cause is recorded; the batches committed before the disk filled are there, whole.
    (status, error), = rows(db, "SELECT status, error FROM scans")
    assert status == "failed" and "database or disk is full" in error
    kept = rows(db, "SELECT COUNT(*), COUNT(content_hash) FROM files")[0]
    assert 0 < kept[0] < n and kept[0] == kept[1]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert imageapi("doctor", env=e).returncode == 1  # nearly full: reported

    # Space freed: the next run finishes the job, with no duplicate rows.
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_disk)], check=True)
    res = imageapi("scan", "--full", "--json", env=e)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["added"] == n - kept[0]
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT rel_path), COUNT(content_hash) FROM files") == [(n, n, n)]
    assert rows(db, "SELECT status FROM scans ORDER BY id") == [("failed",), ("done",)]


async def test_transaction_on_a_full_database(tmp_path: Path) -> None:
    """SQLITE_FULL inside a transaction (SQLite may already have rolled it back itself): the cause
    comes out as DatabaseFullError, the connection is usable, nothing committed is lost."""
    db = await connect(tmp_path / "full.db")
    try:
        await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        async with transaction(db):
            await db.execute("INSERT INTO t VALUES (1, zeroblob(1000))")
        pages = (await (await db.execute("PRAGMA page_count")).fetchone())[0]
        await db.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(DatabaseFullError, match="database or disk is full"):
            async with transaction(db):
                await db.executemany("INSERT INTO t VALUES (?, zeroblob(3000))", [(k,) for k in range(2, 50)])
        assert not db.in_transaction
        assert [tuple(r) for r in await db.execute_fetchall("SELECT k FROM t")] == [(1,)]
        await db.execute("PRAGMA max_page_count = 1000000")
        async with transaction(db):  # the write lock was released
            await db.execute("INSERT INTO t VALUES (2, zeroblob(10))")
        assert len(await db.execute_fetchall("SELECT k FROM t")) == 2
    finally:
        await db.close()


async def test_scan_into_a_full_database_records_the_cause(env_dirs: dict[str, Path], tmp_path: Path) -> None:
    """The scan in-process with max_page_count as the full disk (runs where mounting is not allowed)."""
    root = library(tmp_path / "Pictures", 600)
    cfg = load_config()
    db = await connect(cfg.database_path)
    pool = WorkerPool(2)
    try:
        targets = await resolve_targets(db, [], root)
        pages = (await (await db.execute("PRAGMA page_count")).fetchone())[0]
        await db.execute(f"PRAGMA max_page_count = {pages + 40}")
        with pytest.raises(DatabaseFullError):
            await run_scan(db, cfg, targets, "full", pool)
        assert not db.in_transaction
        (status, error), = await db.execute_fetchall("SELECT status, error FROM scans")
        assert status == "failed" and error.startswith("database or disk is full"), error
        kept = (await db.execute_fetchall("SELECT COUNT(*) FROM files"))[0][0]
        assert 0 < kept < 600
        await db.execute("PRAGMA max_page_count = 1000000")
        await run_scan(db, cfg, targets, "full", pool)
        assert (await db.execute_fetchall("SELECT COUNT(DISTINCT rel_path) FROM files"))[0][0] == 600
    finally:
        pool.close()
        await db.close()


# ---------------------------------------------------------------------------------------------
# A damaged database


def rightmost_leaf(db: Path, table: str) -> int:
    """The page number of the last leaf of a table's b-tree (its newest rows), read from the file."""
    (root,), = rows(db, f"SELECT rootpage FROM sqlite_master WHERE name = '{table}'")
    data = db.read_bytes()
    page = root
    while True:
        header = data[(page - 1) * PAGE:page * PAGE]
        if header[0] == 0x0D:  # table leaf
            return page
        assert header[0] == 0x05, "not a table b-tree page"
        page = int.from_bytes(header[8:12], "big")  # the right-most child


def overwrite_page(db: Path, page: int) -> None:
    with open(db, "r+b") as f:
        f.seek((page - 1) * PAGE)
        f.write(bytes(range(256)) * (PAGE // 256))


@pytest.fixture()
def indexed(env: dict[str, str], env_dirs: dict[str, Path]) -> Path:
    """A scanned library of 400 files with a user, checkpointed into the database file."""
    library(env_dirs["tmp"] / "Pictures", 400)
    assert imageapi("scan", str(env_dirs["tmp"] / "Pictures"), env=env).returncode == 0
    assert imageapi("user", "add", "bob", "--password-stdin", env=env, stdin="a good password\n").returncode == 0
    db = env_dirs["data"] / "imageapi.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return db


def test_a_file_that_is_not_a_database_is_refused_at_start(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    db = env_dirs["data"] / "imageapi.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"<html>not a database</html>\n" * 200)
    for args in (["scan", "--full", str(env_dirs["tmp"])], ["user", "list"], ["library", "list"],
                 ["serve", "--no-watch", "--bind", f"127.0.0.1:{free_port()}"],
                 ["serve", "--bind", f"127.0.0.1:{free_port()}"]):
        res = imageapi(*args, env=env, timeout=60)
        assert res.returncode == EXIT_DATABASE_DAMAGED, (args, res.stderr)
        line = one_line_error(res)
        assert "not an SQLite database" in line and "DATABASE_URL" in line, line
    res = imageapi("doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert res.returncode == 1 and not checks["database integrity"]["ok"]
    assert "not an SQLite database" in checks["database integrity"]["detail"]
    assert db.read_bytes().startswith(b"<html>")  # left as it was


def test_a_damaged_table_root_is_refused_at_start(env: dict[str, str], indexed: Path) -> None:
    (root,), = rows(indexed, "SELECT rootpage FROM sqlite_master WHERE name = 'files'")
    overwrite_page(indexed, root)
    for args in (["scan", "--full"], ["user", "list"], ["serve", "--no-watch", "--bind", f"127.0.0.1:{free_port()}"]):
        res = imageapi(*args, env=env, timeout=60)
        assert res.returncode == EXIT_DATABASE_DAMAGED, (args, res.stderr)
        assert "is damaged" in one_line_error(res)


def test_damage_found_while_serving_is_an_error_shape_and_doctor_finds_it(env: dict[str, str],
                                                                           indexed: Path) -> None:
    token = json.loads(imageapi("token", "--user", "bob", "--json", env=env).stdout)["token"]
    overwrite_page(indexed, rightmost_leaf(indexed, "files"))

    res = imageapi("doctor", "--json", env=env)
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert res.returncode == 1
    assert not checks["database integrity"]["ok"] and "damaged" in checks["database integrity"]["detail"]
    assert ".recover" in checks["database integrity"]["fix"]

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "serve", "--no-watch", "--bind", f"127.0.0.1:{port}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # the damage is deep: the cheap check at open does not see it
            try:
                if http("GET", base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        answers = {}
        for path in ("/libraries", "/photos?limit=500", "/photos?limit=500&order=asc", "/status", "/tags",
                     "/memories", "/video/wall", "/image/metadata?path=d9/p399.jpg"):
            answers[path] = http("GET", base + path, token=token)
        for path, (status, body) in answers.items():
            if status >= 500:
                assert (status, body["error"]["code"]) == (503, "database_corrupt"), (path, status, body)
                assert "imageapi doctor" in body["error"]["message"]
        assert any(status == 503 for status, _ in answers.values()), answers
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert "is damaged" in err  # logged, one line per request


def test_the_recovery_doctor_gives_brings_the_index_back(env: dict[str, str], indexed: Path,
                                                          env_dirs: dict[str, Path]) -> None:
    """The steps in doctor's fix (and the README) are real commands: what is readable is copied out,
    and a full scan adds back the files whose rows were lost."""
    if shutil.which("sqlite3") is None:
        pytest.skip("the sqlite3 command-line shell is not installed")
    overwrite_page(indexed, rightmost_leaf(indexed, "files"))
    fix = {c["name"]: c for c in json.loads(imageapi("doctor", "--json", env=env).stdout)["checks"]}[
        "database integrity"]["fix"]
    recovered = Path(f"{indexed}.recovered")
    assert f"sqlite3 {indexed} .recover | sqlite3 {recovered}" in fix and "DELETE FROM dirs" in fix
    recover = subprocess.run(["sqlite3", str(indexed), ".recover"], capture_output=True, timeout=60)
    if recover.returncode != 0:  # a shell built without .recover's page reader (Debian 12's)
        assert b"SQL logic error" in recover.stderr, recover.stderr
        assert ".dump | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/'" in fix
        recover = subprocess.run(["sqlite3", str(indexed), ".dump"], capture_output=True, timeout=60, check=True)
        recover.stdout = recover.stdout.replace(b"\nROLLBACK; -- due to errors\n", b"\nCOMMIT;\n")
    subprocess.run(["sqlite3", str(recovered)], input=recover.stdout, capture_output=True, check=True, timeout=60)
    subprocess.run(["sqlite3", str(recovered), "DELETE FROM dirs"], check=True, timeout=60)
    assert 0 < rows(recovered, "SELECT COUNT(*) FROM files")[0][0] < 400  # the damaged page's rows are lost
    e = {**env, "DATABASE_URL": str(recovered)}
    assert imageapi("doctor", env=e).returncode == 0
    res = imageapi("scan", "--full", env=e)
    assert res.returncode == 0, res.stderr
    assert rows(recovered, "SELECT COUNT(*) FROM files") == [(400,)]
    assert rows(recovered, "SELECT name FROM users") == [("bob",)]
