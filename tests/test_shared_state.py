"""State shared through the database by every process and host: the login throttle's counts,
the end of tokens and sessions (a password change, a user removed, a logout), and the job lock's
lease. Real `imageapi serve --processes 2` (every request on a new connection, so SO_REUSEPORT
spreads them over both processes) and real processes holding, losing and taking the lock."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from imageapi.core.config import load_config
from imageapi.core.database import write, write_many
from imageapi.core.db import connect
from imageapi.core.errors import LockedError
from imageapi.core.lock import JobLock
from imageapi.core.postgres.url import DatabaseSetting
from tests import dbq
from tests.media_factory import make_jpeg
from tests.test_server_cli import SECRET, children_of, run, start_serve

PASSWORD = "a good password"
SPREAD = 20  # requests, each on its own connection: both processes get some


@pytest.fixture()
def cli_env(env_dirs: dict[str, Path]) -> dict[str, str]:
    return {**os.environ, "SECRET_KEY": SECRET, "WORKERS": "1"}


@pytest.fixture()
def served(cli_env: dict[str, str]) -> Iterator[str]:
    """Two server processes on one port, with the users alice and bob."""
    for name in ("alice", "bob"):
        assert run(["user", "add", name, "--password-stdin"], cli_env, PASSWORD + "\n").returncode == 0
    proc, base = start_serve(cli_env, "--no-watch", "--processes", "2")
    try:
        wait_until_both_listen(proc.pid, int(base.rsplit(":", 1)[1]))
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        print(err)  # shown when a test fails
        assert "2 processes" in err and "Traceback" not in err


def listening(pid: int, port: int) -> bool:
    """Whether the process holds a socket listening on 127.0.0.1:port (its own, SO_REUSEPORT)."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False  # gone (a short-lived child)
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A" and fields[9] in inodes:
            return True
    return False


def wait_until_both_listen(first: int, port: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        pids = [first, *children_of(first)]
        if sum(listening(pid, port) for pid in pids) >= 2:
            return
        assert time.monotonic() < deadline, "the second server process never listened"
        time.sleep(0.1)


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
         ) -> tuple[int, Any, dict[str, str]]:
    """One request on a new connection: (status, JSON body, headers)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)


def statuses(url: str, headers: dict[str, str], n: int = SPREAD) -> list[int]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: call("GET", url, headers=headers)[0], range(n)))


def test_parallel_wrong_passwords_over_two_processes_get_the_free_checks_only(served: str) -> None:
    wrong = [{"username": "alice", "password": f"wrong password {i}"} for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda body: call("POST", served + "/login", body), wrong))
    got = sorted(status for status, _, _ in answers)
    checked = got.count(401)
    assert 1 <= checked <= 5, got  # the free failures of one (address, name), whichever process
    assert got == [401] * checked + [429] * (20 - checked)
    # The lockout holds in every process, for the right password too.
    right = {"username": "alice", "password": PASSWORD}
    with ThreadPoolExecutor(4) as pool:
        later = list(pool.map(lambda _: call("POST", served + "/login", right)[0], range(SPREAD)))
    assert later == [429] * SPREAD
    # bob, from the same address, is not locked out by alice's failures
    assert call("POST", served + "/login", {"username": "bob", "password": PASSWORD})[0] == 200


@pytest.mark.sqlite_only
async def test_a_write_waits_for_an_open_read_of_its_connection_after_another_process_wrote(tmp_path: Path) -> None:
    """SQLite refuses BEGIN IMMEDIATE at once (SQLITE_BUSY_SNAPSHOT) while a read of the same
    connection is open on a snapshot another process has written past: two server processes
    counting logins made a 500 of that now and then."""
    path = tmp_path / "db.sqlite"
    conn = await connect(path)
    other = sqlite3.connect(path, isolation_level=None)  # another process's connection
    try:
        await write_many(conn, "INSERT INTO login_counts (id, failures, not_before, last_failure) VALUES (?, 1, 0, 0)",
                         [("a",), ("b",), ("c",)])
        async with conn.execute("SELECT id FROM login_counts") as cur:
            assert await cur.fetchone() is not None  # a read left open (a request between two fetches)
            other.execute("INSERT INTO login_counts (id, failures, not_before, last_failure) VALUES ('d', 1, 0, 0)")
            task = asyncio.create_task(write(
                conn, "INSERT INTO login_counts (id, failures, not_before, last_failure) VALUES ('e', 1, 0, 0)"))
            await asyncio.sleep(0.3)
        await task
        async with conn.execute("SELECT COUNT(*) FROM login_counts") as cur:
            assert (await cur.fetchone())[0] == 5
    finally:
        other.close()
        await conn.close()


def wait_out_the_recheck(since: float) -> None:
    """Until just over a second after `since`: every process must refuse by then."""
    time.sleep(max(0.0, since + 1.1 - time.monotonic()))


def test_a_password_change_or_removal_is_refused_by_every_process_within_a_second(
        served: str, cli_env: dict[str, str]) -> None:
    tokens = {}
    for name in ("alice", "bob"):
        status, body, _ = call("POST", served + "/login", {"username": name, "password": PASSWORD})
        assert status == 200
        tokens[name] = {"Authorization": f"Bearer {body['token']}"}
        assert statuses(served + "/libraries", tokens[name]) == [200] * SPREAD  # remembered everywhere
    assert run(["user", "passwd", "alice", "--password-stdin"], cli_env, "another good password\n").returncode == 0
    changed = time.monotonic()
    assert run(["user", "remove", "bob"], cli_env).returncode == 0
    removed = time.monotonic()
    wait_out_the_recheck(changed)
    assert statuses(served + "/libraries", tokens["alice"]) == [401] * SPREAD
    wait_out_the_recheck(removed)
    assert statuses(served + "/libraries", tokens["bob"]) == [401] * SPREAD


def test_a_logout_through_one_process_is_refused_by_every_process_within_a_second(served: str) -> None:
    status, _, headers = call("POST", served + "/login", {"username": "alice", "password": PASSWORD,
                                                          "session": True})
    assert status == 200
    cookie = {"Cookie": headers["Set-Cookie"].split(";")[0], "Sec-Fetch-Site": "same-origin"}
    assert statuses(served + "/libraries", cookie) == [200] * SPREAD  # remembered everywhere
    status, body, _ = call("POST", served + "/logout", headers=cookie)
    assert status == 200 and body == {"ended": True}
    wait_out_the_recheck(time.monotonic())
    assert statuses(served + "/libraries", cookie) == [401] * SPREAD


# --------------------------------------------------------------------------------------------
# The job lock: a lease row in the database

HOLD = """
import sys, time
from imageapi.core.config import load_config
from imageapi.core.lock import JobLock
JobLock(load_config().database, sys.argv[1], [("scan:1", "library 'main'")], lease=float(sys.argv[2]),
        machine=sys.argv[3] or None).acquire()
print("held", flush=True)
time.sleep(600)
"""


MAIN = ("scan:1", "library 'main'")  # the first library's scan lease


def database() -> DatabaseSetting:
    """The test's database (env_dirs): an SQLite file, or PostgreSQL (IMAGEAPI_TEST_DATABASE)."""
    return load_config().database


def hold(job: str, lease: float, machine: str = "") -> subprocess.Popen[str]:
    """Another process that takes library main's scan lease and keeps it (renewing) until it is stopped."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, job, str(lease), machine],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "held\n", proc.communicate()
    return proc


def take_when_free(db: DatabaseSetting, lease: float, within: float) -> float:
    """Try the lock until it is ours; seconds it took."""
    start = time.monotonic()
    while True:
        try:
            JobLock(db, "imageapi scan --full", [MAIN], lease=lease).acquire().release()
            return time.monotonic() - start
        except LockedError as exc:
            assert "another imageapi run (imageapi watch" in exc.message
            assert time.monotonic() - start < within, "the lock never came free"
            time.sleep(0.1)


def test_a_holder_on_another_host_killed_with_sigkill_loses_the_lock_after_its_lease(
        env_dirs: dict[str, Path], cli_env: dict[str, str]) -> None:
    db = database()
    photos = env_dirs["tmp"] / "photos"
    make_jpeg(photos / "a.jpg", seed=1)
    env = {**cli_env, "JOB_LEASE_SECONDS": "2"}
    assert run(["library", "add", "main", str(photos)], env).returncode == 0
    holder = hold("imageapi watch", 2.0, machine="another host")
    try:
        time.sleep(2.5)  # longer than the lease: the heartbeat keeps it
        res = run(["scan", "--full", str(photos)], env)
        assert res.returncode == 3, res.stderr
        assert "another imageapi run (imageapi watch" in res.stderr
    finally:
        holder.kill()
        holder.communicate()
    # Its pid means nothing here (another host): only the lease's end frees the lock, between
    # 2/3 of the lease (renewed every third) and the whole lease after the kill.
    taken = take_when_free(db, 2.0, within=10)
    assert taken >= 1.0, "taken over before the lease ran out"
    assert taken <= 3.0
    assert run(["scan", "--full", str(photos)], env).returncode == 0
    with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM job_leases").fetchone()[0] == 0  # released at the end


def test_a_holder_on_this_machine_killed_with_sigkill_loses_the_lock_at_once(env_dirs: dict[str, Path]) -> None:
    db = database()
    holder = hold("imageapi watch", 30.0)
    with pytest.raises(LockedError):
        JobLock(db, "imageapi scan --full", [MAIN]).acquire()
    holder.kill()
    holder.communicate()
    assert take_when_free(db, 30.0, within=2) < 1


def test_a_frozen_holder_loses_the_lock_after_its_lease_and_stops_when_it_wakes(env_dirs: dict[str, Path]) -> None:
    db = database()
    holder = hold("imageapi watch", 2.0)
    try:
        os.kill(holder.pid, signal.SIGSTOP)  # alive (its pid is there) but renewing nothing
        stopped = time.monotonic()
        take_when_free(db, 30.0, within=10)
        assert time.monotonic() - stopped >= 0.5
        with JobLock(db, "imageapi scan --full", [MAIN], lease=30.0):
            os.kill(holder.pid, signal.SIGCONT)
            _, err = holder.communicate(timeout=20)  # it finds the lease gone and stops itself
            assert holder.returncode == -signal.SIGTERM
            assert "the job lock was lost" in err
            with pytest.raises(LockedError):  # the lock stayed with the new holder
                JobLock(db, "imageapi thumbs", [MAIN]).acquire()
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGCONT)
            holder.kill()
            holder.communicate()
