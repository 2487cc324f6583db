"""Several `imageapi serve` hosts (and cron jobs) on one database: one scan per library at a time,
through each library's scan lease, taken per scan. Real processes on either database
(IMAGEAPI_TEST_DATABASE=postgresql); another host is faked through the lock's host and machine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests import dbq
from tests.media_factory import make_jpeg
from tests.test_server_cli import SECRET, http, run, start_serve

PASSWORD = "a good password"

HOLD = """
import sys, time
from imageapi.core.config import load_config
from imageapi.core.lock import JobLock
job, lease, machine, host, name, what = sys.argv[1:]
JobLock(load_config().database, job, [(name, what)], lease=float(lease), machine=machine, host=host).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    # No face detection: these watchers' ticks are about scans (the embedded detector, the default
    # where it is installed, would make each tick take seconds per photo).
    return {**os.environ, "SECRET_KEY": SECRET, "WORKERS": "1", "LOG_LEVEL": "info",
            "WATCH_QUICK_INTERVAL_SECONDS": "1", "JOB_LEASE_SECONDS": "2", "FACE_BACKEND": "off"}


@pytest.fixture()
def libraries(env: dict[str, str], env_dirs: dict[str, Path]) -> dict[str, int]:
    """Libraries a and b, 12 photos each: name -> id."""
    for name in ("a", "b"):
        root = env_dirs["tmp"] / name
        for i in range(12):
            make_jpeg(root / f"d{i % 3}" / f"{name}{i}.jpg", (1200, 900), seed=i)
        res = run(["library", "add", name, str(root)], env)
        assert res.returncode == 0, res.stderr
    assert run(["user", "add", "bob", "--password-stdin"], env, PASSWORD + "\n").returncode == 0
    with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:
        return {str(n): int(i) for i, n in conn.execute("SELECT id, name FROM libraries").fetchall()}


def scans(env_dirs: dict[str, Path]) -> list[tuple[str, str, str | None, str]]:
    """(library, started_at, finished_at, status) of every scan row."""
    with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:
        rows = conn.execute("SELECT l.name, s.started_at, s.finished_at, s.status FROM scans s "
                            "JOIN libraries l ON l.id = s.library_id ORDER BY s.started_at").fetchall()
    return [(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return err


def watcher_status(base: str) -> dict[str, Any]:
    status, body = http("POST", base + "/login", {"username": "bob", "password": PASSWORD})
    assert status == 200, body
    status, st = http("GET", base + "/status", token=body["token"])
    assert status == 200, st
    return dict(st["watcher"])


def hold(env: dict[str, str], name: str, what: str, host: str) -> subprocess.Popen[str]:
    """A process standing in for a run on another host that holds lease `name` (renewing)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, "imageapi scan --full", "2", "another machine", host,
                             name, what], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n", proc.communicate()
    return proc


def test_two_serve_hosts_share_the_libraries_one_scan_per_library_at_a_time(
        env: dict[str, str], env_dirs: dict[str, Path], libraries: dict[str, int]) -> None:
    env = {**env, "WATCH_FULL_INTERVAL_SECONDS": "1"}  # full scans every tick: long, so they could overlap
    first, base1 = start_serve(env)
    second, base2 = start_serve(env)
    errs = []
    try:
        deadline = time.monotonic() + 90
        while True:
            done = [s for s in scans(env_dirs) if s[3] == "done"]
            if all(sum(1 for s in done if s[0] == name) >= 4 for name in libraries):
                break
            assert first.poll() is None and second.poll() is None, "a serve exited"
            assert time.monotonic() < deadline, done
            time.sleep(0.5)
        # Both hosts up, each serving and watching.
        for base in (base1, base2):
            assert http("GET", base + "/health")[0] == 200
            assert watcher_status(base)["ticks"] >= 1
    finally:
        errs = [stop(first), stop(second)]
    for err in errs:
        assert "Traceback" not in err, err
    assert first.returncode == 0 and second.returncode == 0, errs
    rows = scans(env_dirs)
    assert {s[3] for s in rows} <= {"done", "interrupted"}
    for name in libraries:
        mine = [s for s in rows if s[0] == name]
        for before, after in zip(mine, mine[1:], strict=False):
            assert before[2] is not None and before[2] <= after[1], f"scans of {name} overlap: {before} {after}"
    # Both watchers scanned: the lines of each say so.
    for err in errs:
        assert "scan of 1 library" in err or "scan of 2 libraries" in err, err


def test_a_scan_held_on_another_host_killed_with_sigkill_blocks_its_library_only_until_the_lease_ends(
        env: dict[str, str], env_dirs: dict[str, Path], libraries: dict[str, int]) -> None:
    holder = hold(env, f"scan:{libraries['a']}", "library 'a'", host="other-host")
    serve: subprocess.Popen[str] | None = None
    try:
        # The other library is free to scan; this one is refused, naming the holder.
        res = run(["scan", "--full", "--library", "b"], env)
        assert res.returncode == 0, res.stderr
        res = run(["scan", "--full", "--library", "a"], env)
        assert res.returncode == 3, res.stderr
        assert f"pid {holder.pid} on other-host" in res.stderr and "library 'a'" in res.stderr
        serve, base = start_serve(env)
        deadline = time.monotonic() + 30
        while True:  # the watcher skips a (busy, not failed) and scans b
            st = watcher_status(base)
            a, b = st["libraries"].get("a", {}), st["libraries"].get("b", {})
            if st["ticks"] >= 3 and a.get("state") == "busy" and b.get("state") == "ok":
                break
            assert time.monotonic() < deadline, st
            time.sleep(0.2)
        assert a["busy"]["pid"] == holder.pid and a["busy"]["host"] == "other-host"
        assert a["last_error"] is None and "ok" not in a
        time.sleep(3)  # longer than the lease: the holder's heartbeat keeps it
        assert not [s for s in scans(env_dirs) if s[0] == "a"]
        holder.kill()  # kill -9 on "another host": its pid means nothing here, only the lease's end frees it
        holder.communicate()
        killed = datetime.now(UTC)
        deadline = time.monotonic() + 20
        while not [s for s in scans(env_dirs) if s[0] == "a" and s[3] == "done"]:
            assert time.monotonic() < deadline, "library a was never scanned after its holder died"
            time.sleep(0.2)
        first_a = min(s[1] for s in scans(env_dirs) if s[0] == "a")
        waited = (datetime.strptime(first_a, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) - killed).total_seconds()
        assert 0.5 <= waited <= 6, waited  # between 2/3 of the lease (renewed every third) and a tick after it
        # The watcher's status is written when its tick ends, a moment after the scan's row says done.
        deadline = time.monotonic() + 20
        while (state := watcher_status(base)["libraries"]["a"]["state"]) != "ok":
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
        err = stop(serve) if serve is not None else ""
    assert "Traceback" not in err, err
    # Said once at info, not on every tick it was skipped.
    assert err.count("skipping library 'a' while another run works on it") == 1, err


@pytest.fixture()
def served(env: dict[str, str], libraries: dict[str, int]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc, base = start_serve(env)
    try:
        yield proc, base
    finally:
        assert "Traceback" not in stop(proc)


def test_cron_jobs_run_beside_a_serving_watcher(env: dict[str, str], env_dirs: dict[str, Path],
                                                 served: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = served
    # A scan of either library works, or waits only while the watcher is scanning that library.
    for name in ("a", "b"):
        deadline = time.monotonic() + 30
        while (res := run(["scan", "--full", "--library", name], env)).returncode != 0:
            assert res.returncode == 3, res.stderr
            assert f"library {name!r}" in res.stderr and "imageapi serve" in res.stderr, res.stderr
            assert time.monotonic() < deadline, res.stderr
            time.sleep(0.1)
    # The other one-shot jobs are not refused because a server is up.
    for args in (["thumbs", "--library", "a"], ["hash", "backfill"], ["video", "previews"]):
        deadline = time.monotonic() + 30
        while (res := run(args, env)).returncode != 0:
            assert res.returncode == 3 and "imageapi serve" in res.stderr, (args, res.stderr)
            assert time.monotonic() < deadline, (args, res.stderr)
            time.sleep(0.1)
    assert proc.poll() is None


def test_a_scan_leaves_another_hosts_running_scan_of_another_library_alone(
        env: dict[str, str], env_dirs: dict[str, Path], libraries: dict[str, int]) -> None:
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:  # library a's scan, live on another host
        conn.execute("INSERT INTO scans (library_id, mode, subtree, started_at) VALUES (?, 'full', '', ?)",
                     (libraries["a"], started))
        conn.commit()
    holder = hold(env, f"scan:{libraries['a']}", "library 'a'", host="other-host")
    try:
        assert run(["scan", "--full", "--library", "b"], env).returncode == 0
        assert [s[3] for s in scans(env_dirs) if s[0] == "a"] == ["running"]  # not marked interrupted
    finally:
        holder.kill()
        holder.communicate()
    deadline = time.monotonic() + 10
    while (res := run(["scan", "--full", "--library", "a"], env)).returncode != 0:  # once its lease has run out
        assert res.returncode == 3 and time.monotonic() < deadline, res.stderr
        time.sleep(0.2)
    assert [s[3] for s in scans(env_dirs) if s[0] == "a"] == ["interrupted", "done"]  # the dead one's row, closed


def test_the_watcher_skips_the_passes_while_another_host_drains(
        env: dict[str, str], env_dirs: dict[str, Path], libraries: dict[str, int]) -> None:
    holder = hold(env, "drains", "the passes", host="other-host")
    serve: subprocess.Popen[str] | None = None
    try:
        serve, base = start_serve(env)
        deadline = time.monotonic() + 30
        while (quick := watcher_status(base)["last"].get("quick", {})).get("drains") != "busy":
            assert time.monotonic() < deadline, quick
            time.sleep(0.2)
        assert f"skipped: busy (imageapi scan --full, pid {holder.pid} on other-host)" in quick["summary"]
        assert "skipped" not in quick  # both libraries scanned all the same
        res = run(["hash", "backfill"], env)
        assert res.returncode == 3 and f"pid {holder.pid} on other-host" in res.stderr, res.stderr
    finally:
        holder.kill()
        holder.communicate()
        err = stop(serve) if serve is not None else ""
    assert "Traceback" not in err, err


def test_a_lease_taken_over_stops_the_work_under_it_and_only_that(env_dirs: dict[str, Path]) -> None:
    from imageapi.core.config import load_config
    from imageapi.core.errors import LeaseLostError
    from imageapi.core.lock import holding

    async def main() -> float:
        task = asyncio.current_task()
        assert task is not None
        start = time.monotonic()
        with pytest.raises(LeaseLostError, match="library 'main' was lost"):
            async with holding(load_config().database, "imageapi serve", [("scan:1", "library 'main'")], lease=0.6):
                with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:  # another run takes it over
                    conn.execute("UPDATE job_leases SET holder = 'another run' WHERE name = 'scan:1'")
                    conn.commit()
                await asyncio.sleep(20)
        assert task.cancelling() == 0  # the loop goes on: nothing else is cancelled
        await asyncio.sleep(0.1)
        return time.monotonic() - start

    assert asyncio.run(main()) < 5
    with dbq.connect(env_dirs["data"] / "imageapi.db") as conn:  # the new holder's lease is left alone
        assert conn.execute("SELECT holder FROM job_leases").fetchall() == [("another run",)]
