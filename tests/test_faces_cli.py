"""`imageapi faces|people|watch` as users run them, against a real stand-in Apollo: exit codes,
--json, faces disabled, kill -9 mid-drain, the watcher draining a backlog left in the database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from imageapi.core.config import load_config
from imageapi.core.database import write
from imageapi.core.db import connect
from imageapi.core.libraries import add_library
from tests import dbq
from tests.apollo_standin import StandIn, closed_port_url, default_faces, insert_rows, make_photo

STATUS_KEYS = {"files", "hashed", "scanned", "pending", "backing_off", "failed", "faces", "people"}


def imageapi(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO_", "FACE_"))}
    out["WORKERS"] = "2"
    return out


@pytest.fixture()
def photos(env_dirs: dict[str, Path]) -> Path:
    root = env_dirs["tmp"] / "Pictures"
    for i in range(10):
        make_photo(root / f"album{i % 2}" / f"IMG_{i}.jpg", i)
    return root


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    with StandIn() as s:
        yield s


def db_path(env_dirs: dict[str, Path]) -> Path:
    return env_dirs["data"] / "imageapi.db"


def query(env_dirs: dict[str, Path], sql: str) -> list[tuple]:
    conn = dbq.connect(db_path(env_dirs), timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_faces_disabled_says_so_and_exits_0(env: dict[str, str], photos: Path) -> None:
    env = {**env, "FACE_BACKEND": "off"}
    for args in (["faces", "drain"], ["faces", "status"], ["faces", "retry-failed"]):
        res = imageapi(*args, env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().count("\n") == 0 and "disabled" in res.stdout
        assert "APOLLO_FACE_API_BASE_URL" in res.stdout
    res = imageapi("faces", "drain", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["enabled"] is False
    # The fallback variable enables them (FACE_BACKEND unset).
    del env["FACE_BACKEND"]
    res = imageapi("faces", "status", "--json", env={**env, "APOLLO_API_BASE_URL": closed_port_url()})
    assert res.returncode == 0 and set(json.loads(res.stdout)) == STATUS_KEYS | {"backend", "backend_reason"}
    assert json.loads(res.stdout)["backend"] == "apollo"
    res = imageapi("faces", "status", env={**env, "APOLLO_FACE_API_BASE_URL": "ftp://x"})
    assert res.returncode == 2 and "APOLLO_FACE_API_BASE_URL" in res.stderr


def test_drain_status_and_json(env: dict[str, str], photos: Path, standin: StandIn,
                               env_dirs: dict[str, Path]) -> None:
    assert imageapi("scan", str(photos), env=env).returncode == 0
    env = {**env, "APOLLO_FACE_API_BASE_URL": standin.url}
    before = json.loads(imageapi("faces", "status", "--json", env=env).stdout)
    assert before.pop("backend") == "apollo" and standin.url in before.pop("backend_reason")
    assert before == {"files": 10, "hashed": 10, "scanned": 0, "pending": 10, "backing_off": 0, "failed": 0,
                      "faces": 0, "people": 0}
    res = imageapi("faces", "drain", "--max", "4", "--json", env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    for key in ("hashed", "detected", "faces_found", "bound", "transient_failures", "permanent_failures",
                "remaining"):
        assert key in summary, key
    assert (summary["detected"], summary["remaining"]) == (4, 6) and standin.total == 4
    res = imageapi("faces", "drain", "--json", env=env)
    summary = json.loads(res.stdout)
    assert res.returncode == 0 and summary["detected"] == 6 and summary["remaining"] == 0
    assert set(standin.requests.values()) == {1} and standin.total == 10
    hashes = [r[0] for r in query(env_dirs, "SELECT content_hash FROM files")]
    after = json.loads(imageapi("faces", "status", "--json", env=env).stdout)
    assert after["scanned"] == 10 and after["pending"] == 0
    assert after["faces"] == sum(len(default_faces(h)) for h in hashes)
    # Plain output: one summary line, no escape codes without a terminal.
    res = imageapi("faces", "drain", env=env)
    assert res.returncode == 0 and "0 photos scanned" in res.stdout and "\x1b[" not in res.stdout


def test_drain_exit_codes(env: dict[str, str], photos: Path, env_dirs: dict[str, Path]) -> None:
    assert imageapi("scan", str(photos), env=env).returncode == 0
    # Nothing listening: exit 5 with a clear message, and no photo blamed for it.
    res = imageapi("faces", "drain", env={**env, "APOLLO_FACE_API_BASE_URL": closed_port_url()})
    assert res.returncode == 5 and "cannot connect to Apollo" in res.stderr
    assert query(env_dirs, "SELECT COUNT(*) FROM face_failures") == [(0,)]
    # Every detect call fails transiently: exit 0, everything backing off.
    with StandIn(mode="500") as failing:
        res = imageapi("faces", "drain", "--json", env={**env, "APOLLO_FACE_API_BASE_URL": failing.url})
        assert failing.total == 10
    summary = json.loads(res.stdout)
    assert res.returncode == 0, res.stderr
    assert (summary["transient_failures"], summary["backing_off"], summary["remaining"]) == (10, 10, 10)
    # Permanent failures come back with retry-failed.
    with StandIn(mode="422") as rejecting:
        conn = dbq.connect(db_path(env_dirs))
        conn.execute("UPDATE face_failures SET next_attempt_at = '2000-01-01T00:00:00.000000Z'")
        conn.commit()
        conn.close()
        e = {**env, "APOLLO_FACE_API_BASE_URL": rejecting.url}
        summary = json.loads(imageapi("faces", "drain", "--json", env=e).stdout)
        assert summary["permanent_failures"] == 10 and summary["remaining"] == 0
        assert json.loads(imageapi("faces", "status", "--json", env=e).stdout)["failed"] == 10
        assert json.loads(imageapi("faces", "retry-failed", "--json", env=e).stdout) == {"requeued": 10}
        assert json.loads(imageapi("faces", "status", "--json", env=e).stdout)["pending"] == 10
    res = imageapi("faces", "drain", "--library", "nope", env={**env, "APOLLO_FACE_API_BASE_URL": closed_port_url()})
    assert res.returncode == 4 and "nope" in res.stderr                 # checked before Apollo is called


def test_kill_9_mid_drain_loses_nothing_and_stores_nothing_twice(env: dict[str, str],
                                                                 env_dirs: dict[str, Path]) -> None:
    root = env_dirs["tmp"] / "Pictures"
    n = 40
    for i in range(n):
        make_photo(root / f"IMG_{i:03d}.jpg", 1000 + i)
    assert imageapi("scan", str(root), env=env).returncode == 0
    with StandIn(delay=0.15) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url, "FACE_DETECT_CONCURRENCY": "4",
             "FACE_BACKLOG_MAX_PER_TICK": "8"}
        proc = subprocess.Popen([sys.executable, "-m", "imageapi", "faces", "drain"], env=e,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if query(env_dirs, "SELECT COUNT(*) FROM face_scans")[0][0] >= 10 and slow.in_flight > 0:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = {r[0] for r in query(env_dirs, "SELECT content_hash FROM face_scans")}
        requests_at_kill = Counter(slow.requests)
        assert 10 <= len(stored_at_kill) < n
        res = imageapi("faces", "drain", "--json", env=e)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["remaining"] == 0
        second_run = slow.requests - requests_at_kill
    hashes = {r[0] for r in query(env_dirs, "SELECT content_hash FROM files")}
    marks = dict(query(env_dirs, "SELECT content_hash, face_count FROM face_scans"))
    assert set(marks) == hashes                                       # every hash scanned, exactly once
    stored = dict(query(env_dirs, "SELECT content_hash, COUNT(*) FROM faces GROUP BY content_hash"))
    assert {h: c for h, c in marks.items() if c} == stored           # faces stored once, with their mark
    assert not set(second_run) & stored_at_kill                      # nothing stored was sent again
    assert set(second_run) == hashes - stored_at_kill
    assert all(slow.requests[h] == 1 for h in stored_at_kill)


def test_people_commands(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    assert imageapi("people", "add", "Ann", env=env).returncode == 0
    assert imageapi("people", "add", "Bob", env=env).returncode == 0
    res = imageapi("people", "add", "ann", env=env)
    assert res.returncode == 2 and "already exists" in res.stderr
    res = imageapi("people", "rename", "bob", "Robert", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["name"] == "Robert"
    assert imageapi("people", "rename", "nobody", "x", env=env).returncode == 4
    res = imageapi("people", "merge", "Robert", "Ann", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout) == {"source": "Robert", "target": "Ann", "moved": 0,
                                                               "unbound": 0}
    listed = json.loads(imageapi("people", "list", "--json", env=env).stdout)
    assert listed == [{"id": 1, "name": "Ann", "named": True, "faces": 0, "photos": 0, "bound_by": {}}]
    # Faces disabled or not, people commands work: they only read the database.
    assert "Ann: 0 faces in 0 photos" in imageapi("people", "list", env=env).stdout


def test_watch_once_drains_a_backlog_left_in_the_database(env: dict[str, str], standin: StandIn,
                                                          env_dirs: dict[str, Path]) -> None:
    """The lesson: rows left unhashed and unscanned by an earlier run are hashed and detected by the
    next tick even though the quick scan sees no change."""
    root = env_dirs["tmp"] / "Pictures"
    for i in range(6):
        make_photo(root / f"old_{i}.jpg", 300 + i)
    assert imageapi("scan", str(root), env=env).returncode == 0

    async def forget() -> None:
        db = await connect(load_config().database)  # the SQLite file, or PostgreSQL's DATABASE_URL
        await write(db, "UPDATE files SET content_hash = NULL")     # as if hashing never happened
        await db.close()

    asyncio.run(forget())
    e = {**env, "APOLLO_FACE_API_BASE_URL": standin.url, "LOG_LEVEL": "info"}
    res = imageapi("watch", "--once", env=e)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "tick 1 (quick)" in ln)
    assert "0 files, +0" in line or "+0 ~0 -0" in line                  # the scan saw nothing new
    assert "hashed 6" in line and "6 stored" in line and "0 pending" in line
    assert standin.total == 6
    assert query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(6,)]


def test_watch_drains_false_leaves_the_face_passes_to_workers(env: dict[str, str], standin: StandIn,
                                                              env_dirs: dict[str, Path]) -> None:
    """WATCH_DRAINS=false: the watcher scans (and hashes), but detects nothing: `imageapi worker`
    processes drain the faces under their leases, which the watcher's passes do not take."""
    root = env_dirs["tmp"] / "Pictures"
    for i in range(3):
        make_photo(root / f"p_{i}.jpg", 700 + i)
    e = {**env, "BASE_PATH": str(root), "APOLLO_FACE_API_BASE_URL": standin.url, "LOG_LEVEL": "info",
         "WATCH_DRAINS": "false"}
    res = imageapi("watch", "--once", env=e)
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stderr.splitlines() if "tick 1" in ln)
    assert "left to workers" in line, line
    assert standin.total == 0 and query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(0,)]
    assert query(env_dirs, "SELECT COUNT(*) FROM files WHERE content_hash IS NOT NULL") == [(3,)]
    res = imageapi("worker", "--kinds", "faces", "--until-empty", "--json", env=e)
    assert res.returncode == 0, res.stderr
    assert standin.total == 3 and query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(3,)]


def test_watch_runs_ticks_and_stops_on_sigterm(env: dict[str, str], standin: StandIn,
                                               env_dirs: dict[str, Path]) -> None:
    root = env_dirs["tmp"] / "Pictures"
    for i in range(3):
        make_photo(root / f"a_{i}.jpg", 400 + i)
    assert imageapi("library", "add", "main", str(root), env=env).returncode == 0

    async def extra_library() -> None:
        # A second library whose rows are in the database but have no hash yet.
        other = env_dirs["tmp"] / "Other"
        for i in range(4):
            make_photo(other / f"b_{i}.jpg", 500 + i)
        db = await connect(load_config().database)
        lib = await add_library(db, "other", other)
        await insert_rows(db, lib.id, other, [f"b_{i}.jpg" for i in range(4)], hashed=False)
        await db.close()

    asyncio.run(extra_library())
    e = {**env, "APOLLO_FACE_API_BASE_URL": standin.url, "WATCH_QUICK_INTERVAL_SECONDS": "1",
         "WATCH_FULL_INTERVAL_SECONDS": "2", "LOG_LEVEL": "info", "FACE_BACKLOG_MAX_PER_TICK": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "watch"], env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and standin.total < 7:
            time.sleep(0.05)
        make_photo(root / "new.jpg", 600)                              # picked up by a later quick scan
        while time.monotonic() < deadline and standin.total < 8:
            time.sleep(0.05)
        time.sleep(2.2)                                                # long enough for a full scan
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert standin.total == 8 and set(standin.requests.values()) == {1}
    ticks = [ln for ln in err.splitlines() if " tick " in ln and "imageapi.core.watch" in ln]
    assert any("(quick)" in t for t in ticks) and any("(full)" in t for t in ticks)
    assert any("(faces)" in t for t in ticks)                          # the cap of 2 left work for more ticks
    assert "watcher stopped" in err
    assert query(env_dirs, "SELECT COUNT(*) FROM face_scans") == [(8,)]


def test_faces_cluster_and_unnamed_people_commands(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    """`faces cluster` makes an unnamed person of three alike faces; `people list` shows it as
    "unnamed #ID" after the named ones; `people name` names it (a taken name: exit 2, merge)."""
    assert imageapi("people", "add", "Ann", env=env).returncode == 0
    base = [1.0] + [0.0] * 7
    with dbq.connect(db_path(env_dirs)) as conn:
        for i in range(3):
            vec = list(base)
            vec[1 + i] = 0.05
            conn.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
                         "VALUES (?, 0, 0.1, 0.1, 0.2, 0.2, 0.9, ?, 'dlib-test', 'now')",
                         (f"h{i}", struct.pack("<8f", *vec) if dbq.postgres_url() is None else str(vec)))
        conn.commit()
    on = {**env, "APOLLO_FACE_API_BASE_URL": closed_port_url()}
    res = imageapi("faces", "cluster", "--json", env=on)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) | {"seconds": 0} == {"faces": 3, "bound": 3, "unbound": 0, "new_persons": 1,
                                                        "named": 0, "removed": 0, "seconds": 0}
    listed = json.loads(imageapi("people", "list", "--json", env=env).stdout)
    assert [(p["name"], p["named"], p["faces"]) for p in listed] == [("Ann", True, 0), (None, False, 3)]
    unnamed = listed[1]["id"]
    assert f"unnamed #{unnamed}: 3 faces in 3 photos" in imageapi("people", "list", env=env).stdout
    res = imageapi("people", "name", str(unnamed), "ann", env=env)
    assert res.returncode == 2 and "merge" in res.stderr
    assert imageapi("people", "name", str(unnamed), "Cleo", env=env).returncode == 0
    res = imageapi("faces", "cluster", "--full", "--json", env=on)
    assert res.returncode == 0 and json.loads(res.stdout)["bound"] == 0
    res = imageapi("people", "merge", "Cleo", "Ann", "--json", env=env)
    assert json.loads(res.stdout)["moved"] == 3
