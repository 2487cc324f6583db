"""bench_serve's nginx serves the thumbnails from a work folder made the way the bench makes it
(mkdtemp: mode 0700), also when run as root (nginx's workers then switch to another user)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bench import bench_serve


def test_nginx_serves_a_private_work_folder() -> None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    work = Path(tempfile.mkdtemp(prefix="imageapi-serve-test-"))  # what bench.common.work_dir does
    try:
        thumb = work / "data" / "thumbnails" / "photos" / "a.jpg"
        thumb.parent.mkdir(parents=True)
        thumb.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
        port = bench_serve.free_port()
        nginx = bench_serve.start_nginx(work, port)
        try:
            bench_serve.wait_http(f"http://127.0.0.1:{port}/thumbs/photos/a.jpg", timeout=15,
                                  log=work / "nginx_error.log")
        finally:
            bench_serve.stop(nginx, signal.SIGQUIT)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert nginx.returncode is not None


def test_wait_http_says_what_answered(tmp_path: Path) -> None:
    """A server that is up but refuses the file is reported as such, not as 'did not come up' alone."""
    port = bench_serve.free_port()
    (tmp_path / "x").write_text("")
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with pytest.raises(SystemExit, match="HTTP 404"):
            bench_serve.wait_http(f"http://127.0.0.1:{port}/missing", timeout=3)
    finally:
        server.kill()
        server.wait()
