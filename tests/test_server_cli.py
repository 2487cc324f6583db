"""`imageapi serve`, `imageapi user`, `imageapi token` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.media_factory import make_jpeg

SECRET = "cli-test-secret-key-0123456789-abcdefghijkl"


def run(args: list[str], env: dict[str, str], stdin: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def cli_env(env_dirs: dict[str, Path]) -> dict[str, str]:
    env = dict(os.environ)
    env["SECRET_KEY"] = SECRET
    env["WORKERS"] = "1"
    env["FACE_BACKEND"] = "off"  # these servers' watchers are about scans, not the (slow) embedded detector
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_serve_refuses_to_start_without_a_good_secret(cli_env: dict[str, str]) -> None:
    for secret in ("", "too-short"):
        env = {**cli_env, "SECRET_KEY": secret}
        res = run(["serve", "--no-watch", "--bind", "127.0.0.1:1"], env)
        assert res.returncode == 2, res
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "SECRET_KEY" in lines[0], res.stderr


def test_serve_refuses_a_bad_bind(cli_env: dict[str, str]) -> None:
    res = run(["serve", "--no-watch", "--bind", "nonsense"], cli_env)
    assert res.returncode == 2 and "HOST:PORT" in res.stderr


def test_users_and_tokens(cli_env: dict[str, str]) -> None:
    assert run(["user", "add", "bob", "--password-stdin"], cli_env, "a good password\n").returncode == 0
    res = run(["user", "add", "bob", "--password-stdin"], cli_env, "a good password\n")
    assert res.returncode == 2 and "already exists" in res.stderr
    res = run(["user", "add", "eve", "--password-stdin"], cli_env, "short\n")
    assert res.returncode == 2 and "at least" in res.stderr
    res = run(["user", "add", "bad name!", "--password-stdin"], cli_env, "a good password\n")
    assert res.returncode == 2
    res = run(["user", "list", "--json"], cli_env)
    assert [u["name"] for u in json.loads(res.stdout)] == ["bob"]
    res = run(["token", "--user", "bob", "--ttl", "2h", "--json"], cli_env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    claims = jwt.decode(out["token"], SECRET, algorithms=["HS256"])
    assert claims["name"] == "bob" and 7190 <= claims["exp"] - claims["iat"] <= 7200
    assert run(["token", "--user", "nobody"], cli_env).returncode == 4
    assert run(["token", "--user", "bob", "--ttl", "forever"], cli_env).returncode == 2
    assert run(["user", "passwd", "bob", "--password-stdin"], cli_env, "another good one\n").returncode == 0
    assert run(["user", "remove", "bob"], cli_env).returncode == 0
    assert run(["user", "remove", "bob"], cli_env).returncode == 4
    assert json.loads(run(["user", "list", "--json"], cli_env).stdout) == []


def test_user_names_and_passwords_that_cannot_be_are_refused(cli_env: dict[str, str]) -> None:
    res = run(["user", "add", "bob\n", "--password-stdin"], cli_env, "a good password\n")
    assert res.returncode == 2 and "user name" in res.stderr
    # Bytes that are not UTF-8 on stdin arrive as lone surrogates (surrogateescape), or fail to
    # decode when stdin is strict.
    for extra in ({"PYTHONUTF8": "1"}, {"PYTHONUTF8": "0", "LC_ALL": "C"}, {"PYTHONIOENCODING": "utf-8:strict"}):
        res_b = subprocess.run([sys.executable, "-m", "imageapi", "user", "add", "carol", "--password-stdin"],
                               env={**cli_env, **extra}, input=b"\xff\xfe a good password\n",
                               capture_output=True, timeout=60)
        err = res_b.stderr.decode(errors="replace")
        assert res_b.returncode == 2, err
        assert "UTF-8" in err and "Traceback" not in err
    assert json.loads(run(["user", "list", "--json"], cli_env).stdout) == []


def test_serve_with_the_watcher_then_sigterm(cli_env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    photos = env_dirs["tmp"] / "photos"
    for i in range(3):
        make_jpeg(photos / f"p{i}.jpg", seed=i)
    env = {**cli_env, "BASE_PATH": str(photos), "WATCH_QUICK_INTERVAL_SECONDS": "1", "LOG_LEVEL": "info"}
    assert run(["user", "add", "bob", "--password-stdin"], env, "a good password\n").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "serve", "--bind", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", base + "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        # A cron scan runs beside the server's watcher, refused only while the watcher scans the
        # same library (the library's scan lease, taken per scan).
        deadline = time.monotonic() + 30
        while (res := run(["scan", "--full"], env)).returncode != 0:
            assert res.returncode == 3 and "library 'main'" in res.stderr and "imageapi serve" in res.stderr, res
            assert time.monotonic() < deadline, res
            time.sleep(0.1)
        status, body = http("POST", base + "/login", {"username": "bob", "password": "a good password"})
        assert status == 200
        token = body["token"]
        deadline = time.monotonic() + 30
        while True:  # the watcher's first quick scan indexes the photos
            status, listing = http("GET", base + "/photos", token=token)
            if status == 200 and len(listing["items"]) == 3:
                break
            assert time.monotonic() < deadline, listing
            time.sleep(0.2)
        status, st = http("GET", base + "/status", token=token)
        assert status == 200 and st["watcher"]["running"] is True and st["watcher"]["ticks"] >= 1
        assert "quick" in st["watcher"]["last"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "serving on" in err and "stopped" in err
    assert "Traceback" not in err


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    """Running (a zombie is dead: this machine's init may be slow to reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_serve(env: dict[str, str], *extra: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "serve", "--bind", f"127.0.0.1:{port}", *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            if http("GET", base + "/health")[0] == 200:
                return proc, base
        except OSError:
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_several_processes_share_the_port_and_stop_together(cli_env: dict[str, str]) -> None:
    proc, base = start_serve(cli_env, "--no-watch", "--processes", "2")
    try:
        deadline = time.monotonic() + 20
        while not (helpers := [p for p in children_of(proc.pid) if "spawn_main" in
                               Path(f"/proc/{p}/cmdline").read_text(errors="replace")]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for _ in range(20):
            assert http("GET", base + "/health")[0] == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "2 processes" in err
    assert not any(alive(p) for p in helpers)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_helpers_leave_when_the_first_process_is_killed(cli_env: dict[str, str]) -> None:
    proc, _ = start_serve(cli_env, "--no-watch", "--processes", "2")
    deadline = time.monotonic() + 20
    while not (helpers := [p for p in children_of(proc.pid) if "spawn_main" in
                           Path(f"/proc/{p}/cmdline").read_text(errors="replace")]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 15
    while any(alive(p) for p in helpers):
        assert time.monotonic() < deadline, "a helper outlived the first process"
        time.sleep(0.2)


def test_sigterm_lets_an_in_flight_request_finish(cli_env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    """A preview being rendered (the render pool starts on first use: about a second) when SIGTERM
    arrives still gets its answer, then the server exits 0."""
    import threading

    from PIL import Image

    photos = env_dirs["tmp"] / "photos"
    photos.mkdir()
    Image.effect_noise((4000, 3000), 50).convert("RGB").save(photos / "big.png")
    env = {**cli_env, "BASE_PATH": str(photos)}
    assert run(["scan", "--full"], env).returncode == 0
    assert run(["user", "add", "bob", "--password-stdin"], env, "a good password\n").returncode == 0
    token = json.loads(run(["token", "--user", "bob", "--json"], env).stdout)["token"]
    proc, base = start_serve(env, "--no-watch")
    result: dict[str, Any] = {}

    def fetch() -> None:
        req = urllib.request.Request(base + "/image?path=big.png&size=preview",
                                     headers={"Authorization": f"Bearer {token}"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                result["status"], result["body"] = resp.status, resp.read()
        except Exception as exc:  # recorded for the assertion below
            result["error"] = repr(exc)
        result["seconds"] = time.monotonic() - started

    t = threading.Thread(target=fetch)
    t.start()
    time.sleep(0.2)  # the request is in flight (the render pool is starting)
    proc.send_signal(signal.SIGTERM)
    t.join(60)
    _, err = proc.communicate(timeout=60)
    assert result.get("status") == 200, (result.get("error"), err)
    assert result["body"][:2] == b"\xff\xd8"
    assert result["seconds"] > 0.2  # it was still running when SIGTERM came
    assert proc.returncode == 0, err
