"""No process outlives a killed imageapi: `kill -9` of `scan`, `faces drain` or `serve` in the
middle of their work takes the worker pool (fork server, workers, resource tracker) and any ffmpeg
they started with it, within seconds. Real processes, found through /proc before the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import dbq
from tests.apollo_standin import StandIn
from tests.media_factory import make_jpeg
from tests.test_server_cli import SECRET, alive, free_port, http

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")

GONE_WITHIN = 5.0  # seconds


def _ppids() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    children = _ppids()
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pool_workers(pid: int) -> list[int]:
    """The worker processes under `pid`: children of its fork server."""
    children = _ppids()
    servers = [p for p in children.get(pid, []) if "multiprocessing.forkserver" in cmdline(p)]
    return [w for s in servers for w in children.get(s, []) if alive(w)]


def wait_for(what: str, check: Callable[[], object], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def kill_and_check_tree(proc: subprocess.Popen[bytes] | subprocess.Popen[str], expect: Callable[[list[int]], None]
                        ) -> None:
    """Record the tree, kill -9 its root, and assert that every process in it is gone soon."""
    tree = descendants(proc.pid)
    expect(tree)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + GONE_WITHIN
    try:
        while left := [p for p in tree if alive(p)]:
            assert time.monotonic() < deadline, (
                f"still running {GONE_WITHIN} s after kill -9: " + "; ".join(f"{p}: {cmdline(p)[:100]}" for p in left))
            time.sleep(0.1)
    finally:
        for p in tree:  # never leave them to the next test
            if alive(p):
                os.kill(p, signal.SIGKILL)


def has_pool(root: int) -> Callable[[list[int]], None]:
    def check(tree: list[int]) -> None:
        assert any("multiprocessing.forkserver" in cmdline(p) for p in tree), [cmdline(p) for p in tree]
        assert pool_workers(root), [cmdline(p) for p in tree]

    return check


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO_", "FACE_"))}
    out["WORKERS"] = "2"
    out["SECRET_KEY"] = SECRET
    return out


def big_library(root: Path, n: int) -> Path:
    """n distinct large JPEGs (a few seconds of decoding for two workers), made from one."""
    first = make_jpeg(root / "a" / "p000.jpg", size=(2400, 1800), seed=1, quality=95)
    data = first.read_bytes()
    for d in "abc":
        (root / d).mkdir(exist_ok=True)
    for i in range(1, n):
        # Bytes after the end-of-image marker: a distinct file (and hash), the same picture.
        (root / "abc"[i % 3] / f"p{i:03d}.jpg").write_bytes(data + i.to_bytes(4, "big"))
    return root


def db_rows(env_dirs: dict[str, Path], sql: str) -> list[tuple]:
    import sqlite3

    conn = dbq.connect(env_dirs["data"] / "imageapi.db", timeout=30)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()


def test_kill_9_of_a_scan_takes_its_workers(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    root = big_library(env_dirs["tmp"] / "Pictures", 240)
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "scan", "--full", str(root)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for("the scan's workers", lambda: len(pool_workers(proc.pid)) == 2 or proc.poll() is not None)
    wait_for("the first rows", lambda: db_rows(env_dirs, "SELECT COUNT(*) FROM files") not in ([], [(0,)]))
    assert proc.poll() is None, "the scan ended before it could be killed: make the library bigger"
    kill_and_check_tree(proc, has_pool(proc.pid))
    assert db_rows(env_dirs, "SELECT COUNT(*) FROM files")[0][0] < 240  # it was killed mid-scan


def test_kill_9_of_faces_drain_takes_its_workers(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    root = env_dirs["tmp"] / "Pictures"
    for i in range(30):
        make_jpeg(root / f"IMG_{i:03d}.jpg", seed=100 + i)
    assert subprocess.run([sys.executable, "-m", "imageapi", "scan", str(root)], env=env,
                          capture_output=True, timeout=120).returncode == 0
    with StandIn(delay=0.3) as slow:
        e = {**env, "APOLLO_FACE_API_BASE_URL": slow.url, "FACE_DETECT_CONCURRENCY": "2"}
        proc = subprocess.Popen([sys.executable, "-m", "imageapi", "faces", "drain"], env=e,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for("a detect call in flight", lambda: slow.in_flight > 0 or proc.poll() is not None)
        wait_for("the drain's workers", lambda: pool_workers(proc.pid) or proc.poll() is not None)
        assert proc.poll() is None, "the drain ended before it could be killed"
        kill_and_check_tree(proc, has_pool(proc.pid))


def test_kill_9_of_serve_takes_its_workers(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    root = big_library(env_dirs["tmp"] / "Pictures", 60)
    e = {**env, "BASE_PATH": str(root), "WATCH_QUICK_INTERVAL_SECONDS": "1"}
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "serve", "--bind", f"127.0.0.1:{port}"], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                return http("GET", f"http://127.0.0.1:{port}/health")[0] == 200
            except OSError:
                return proc.poll() is not None
        wait_for("the server", up)
        # The watcher's first scan starts the pool.
        wait_for("the watcher's workers", lambda: pool_workers(proc.pid) or proc.poll() is not None)
        assert proc.poll() is None
        kill_and_check_tree(proc, has_pool(proc.pid))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# A process that starts long ffmpeg runs the three ways imageapi does -- `run` in a pool worker
# (thumbnails), `run_async` on the event loop (HLS, previews; with uvloop as `serve` uses it when
# installed) and `run` from a thread (asyncio.to_thread) -- then waits to be killed.
FFMPEG_USER = textwrap.dedent("""
    import asyncio, sys
    from imageapi.core import ffmpeg
    from imageapi.core.pool import WorkerPool

    # Quiet, as imageapi runs it: one that writes progress to its stderr would die of SIGPIPE.
    ARGS = [ffmpeg.ffmpeg_path(), "-nostdin", "-nostats", "-loglevel", "error", "-re", "-f", "lavfi",
            "-i", "testsrc=size=64x48:rate=5", "-t", "120", "-f", "null", "-"]

    async def main():
        pool = WorkerPool(1)
        await asyncio.gather(pool.run(ffmpeg.run, ARGS, 300), ffmpeg.run_async(ARGS, 300),
                             asyncio.to_thread(ffmpeg.run, ARGS, 300))

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
""")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_ffmpeg_dies_with_the_process_that_started_it(loop: str, tmp_path: Path) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", FFMPEG_USER, loop], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(repo)}, stderr=subprocess.PIPE)

    def ffmpegs() -> list[int]:
        return [p for p in descendants(proc.pid) if "testsrc" in cmdline(p) and alive(p)]

    wait_for("three ffmpeg runs", lambda: len(ffmpegs()) == 3 or proc.poll() is not None, timeout=30)
    assert proc.poll() is None, proc.communicate()[1]
    runs = ffmpegs()
    kill_and_check_tree(proc, lambda tree: None if set(runs) <= set(tree) else pytest.fail("ffmpeg left the tree"))


# The fork server has the kernel's parent-death signal only when the main thread starts it: the
# kernel sends it when the *thread* that started the process ends.
THREAD_POOL_USER = textwrap.dedent("""
    import asyncio, os, threading, time
    from multiprocessing import forkserver
    from imageapi.core.pool import WorkerPool

    pool = WorkerPool(2)
    pids = []
    def in_thread():
        pids.append(asyncio.run(pool.run(os.getpid)))
    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    time.sleep(0.5)  # a signal sent when the thread ended would have arrived by now
    assert os.waitpid(forkserver._forkserver._forkserver_pid, os.WNOHANG) == (0, 0), "the fork server died"
    assert pids[0] in pool.executor._processes, "the first worker died"
    assert asyncio.run(pool.run(os.getpid)) in pool.executor._processes
    print("ok", flush=True)
    async def busy():
        await asyncio.gather(pool.run(time.sleep, 300), pool.run(time.sleep, 300))
    asyncio.run(busy())
""")



def test_a_pool_started_by_a_thread_that_ends_works_on_and_dies_with_its_process(tmp_path: Path) -> None:
    """Started from a thread that ends at once, the pool keeps working; without the fork server's
    parent-death signal, the workers' lifeline still ends them all at a kill -9."""
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", THREAD_POOL_USER], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ok", proc.communicate()[1]
        wait_for("the workers", lambda: len(pool_workers(proc.pid)) == 2 or proc.poll() is not None, timeout=30)
        assert proc.poll() is None, proc.communicate()[1]
        kill_and_check_tree(proc, has_pool(proc.pid))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
