"""The CLI as users and cron run it: exit codes, --json, the job lock, kill -9 and re-run."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from imageapi.core.config import load_config
from imageapi.core.lock import DRAINS, JobLock, scan_lease
from tests import dbq
from tests.media_factory import make_jpeg


def imageapi(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture()
def photos(env_dirs: dict[str, Path]) -> Path:
    root = env_dirs["tmp"] / "Pictures"
    for i in range(6):
        make_jpeg(root / f"album{i % 2}" / f"IMG_{i}.jpg", seed=i)
    return root


def test_fresh_machine_scan_makes_main_library_and_json_summary(env: dict[str, str], photos: Path,
                                                                 env_dirs: dict[str, Path]) -> None:
    res = imageapi("scan", "--full", str(photos), "--json", env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    for key in ("scanned", "added", "changed", "removed", "moved", "hashed", "thumbs_made",
                "thumbs_unsupported", "thumbs_failed", "errors", "seconds"):
        assert key in summary, key
    assert (summary["scanned"], summary["added"], summary["thumbs_made"], summary["errors"]) == (6, 6, 6, 0)
    listed = json.loads(imageapi("library", "list", "--json", env=env).stdout)
    assert listed == [{"name": "main", "root": str(photos), "files": 6}]

    info = imageapi("info", str(photos / "album1" / "IMG_1.jpg"), "--json", env=env)
    assert info.returncode == 0, info.stderr
    record = json.loads(info.stdout)
    for key in ("library", "path", "kind", "size", "content_hash", "taken_at", "taken_at_source", "make",
                "model", "orientation", "width", "height", "gps_lat", "gps_lon", "duration", "error", "thumbnail"):
        assert key in record, key
    assert record["library"] == "main" and record["path"] == "album1/IMG_1.jpg"
    assert record["taken_at"] == "2021-06-01T12:00:00" and record["taken_at_source"] == "exif_original"
    assert record["thumbnail"]["state"] == "done"
    with Image.open(record["thumbnail"]["path"]) as im:
        assert im.format == "JPEG"
    rel = imageapi("info", "album1/IMG_1.jpg", "--library", "main", "--json", env=env)
    assert json.loads(rel.stdout)["content_hash"] == record["content_hash"]

    # No terminal: no progress bars, just the summary line.
    plain = imageapi("scan", "--quick", env=env)
    # (How many files it lists depends on the clock: folders changed within the last seconds are
    # listed again, unchanged ones are not; the line is there either way.)
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout
    assert re.match(r"main: \d+ files, 0 added, 0 changed", plain.stdout), plain.stdout


def test_exit_codes(env: dict[str, str], photos: Path, env_dirs: dict[str, Path]) -> None:
    assert imageapi("scan", str(photos), env=env).returncode == 0
    other = env_dirs["tmp"] / "Other"
    other.mkdir()
    res = imageapi("scan", str(other), env=env)
    assert res.returncode == 2 and "main" in res.stderr and "not inside a known library" in res.stderr
    res = imageapi("scan", "--library", "nope", env=env)
    assert res.returncode == 4 and "nope" in res.stderr
    res = imageapi("info", str(photos / "missing.jpg"), env=env)
    assert res.returncode == 4
    res = imageapi("info", "../../etc/passwd", "--library", "main", env=env)
    assert res.returncode == 2
    res = imageapi("scan", "--full", "--quick", env=env)
    assert res.returncode == 2
    for name, value in [("WATCH_QUICK_INTERVAL_SECONDS", "often"), ("BASE_PATH", "/does/not/exist")]:
        res = imageapi("scan", env={**env, name: value})
        assert res.returncode == 2, (name, res.stderr)
        assert name in res.stderr and len(res.stderr.strip().splitlines()) == 1
    blocker = env_dirs["tmp"] / "blocker"
    blocker.write_text("")
    res = imageapi("scan", env={**env, "THUMBNAILS": str(blocker / "t")})
    assert res.returncode == 2 and "THUMBNAILS" in res.stderr


def test_second_overlapping_run_is_refused(env: dict[str, str], photos: Path, env_dirs: dict[str, Path]) -> None:
    assert imageapi("scan", "--full", str(photos), env=env).returncode == 0  # makes library main
    other = env_dirs["tmp"] / "Other"
    make_jpeg(other / "o.jpg", seed=9)
    assert imageapi("library", "add", "other", str(other), env=env).returncode == 0
    # The scan lease of main, held: the test's database, either kind.
    with JobLock(load_config().database, "imageapi scan --full", [scan_lease(1, "main")]):
        res = imageapi("scan", "--full", str(photos), env=env)
        assert imageapi("scan", "--full", "--library", "other", env=env).returncode == 0  # another library: free
        for args in (["thumbs", "--library", "main"], ["library", "remove", "main"]):  # main's files: refused
            assert imageapi(*args, env=env).returncode == 3, args
        assert imageapi("hash", "backfill", env=env).returncode == 0  # not a scan's work
    assert res.returncode == 3
    assert "another imageapi run" in res.stderr and "scan --full" in res.stderr and "library 'main'" in res.stderr
    assert imageapi("scan", "--full", str(photos), env=env).returncode == 0
    with JobLock(load_config().database, "imageapi faces drain", [DRAINS]):
        assert imageapi("hash", "backfill", env=env).returncode == 3
        assert imageapi("scan", "--quick", env=env).returncode == 0


def test_kill_9_mid_scan_then_rescan_finishes_the_job(env: dict[str, str], env_dirs: dict[str, Path]) -> None:
    root = env_dirs["tmp"] / "big"
    for i in range(160):
        make_jpeg(root / f"f{i % 8}" / f"{i:03d}.jpg", (1600, 1200), seed=i, quality=92)
    db_path = env_dirs["data"] / "imageapi.db"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "scan", "--full", str(root), "--workers", "2"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    written = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
        try:
            with dbq.connect(db_path) as conn:
                written = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
        except sqlite3.Error:
            continue
        if written >= 20:
            break
    assert proc.poll() is None, "the scan finished before it could be killed: make the library bigger"
    os.killpg(proc.pid, signal.SIGKILL)  # the scan and its worker processes, mid-write
    proc.wait()
    with dbq.connect(db_path) as conn:
        survived = conn.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    assert 0 < written <= survived < 160

    res = imageapi("scan", "--full", str(root), "--json", env=env)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["added"] == 160 - survived  # nothing done twice, nothing missed
    with dbq.connect(db_path) as conn:
        rows = conn.execute("SELECT rel_path, thumb_state FROM files").fetchall()
        statuses = [r[0] for r in conn.execute("SELECT status FROM scans ORDER BY id")]
    assert len(rows) == len({r[0] for r in rows}) == 160
    assert all(state == "done" for _, state in rows)
    assert statuses == ["interrupted", "done"]
    thumbs = env_dirs["data"] / "thumbnails" / "main"
    for rel, _ in rows:
        with Image.open(thumbs / rel) as im:
            im.load()  # a truncated thumbnail would fail here


def test_library_add_list_remove(env: dict[str, Path], photos: Path, env_dirs: dict[str, Path]) -> None:
    other = env_dirs["tmp"] / "Family"
    make_jpeg(other / "x.jpg", seed=99)
    assert imageapi("library", "add", "family", str(other), env=env).returncode == 0
    res = imageapi("library", "add", "nested", str(other / "sub"), env=env)
    assert res.returncode == 2
    (other / "sub").mkdir()
    res = imageapi("library", "add", "nested", str(other / "sub"), env=env)
    assert res.returncode == 2 and "overlaps" in res.stderr
    assert imageapi("scan", "--library", "family", env=env).returncode == 0
    thumbs = env_dirs["data"] / "thumbnails" / "family"
    assert (thumbs / "x.jpg").exists()
    assert [lib["name"] for lib in json.loads(imageapi("library", "list", "--json", env=env).stdout)] == ["family"]
    assert imageapi("library", "remove", "family", env=env).returncode == 0
    assert not thumbs.exists()
    assert json.loads(imageapi("library", "list", "--json", env=env).stdout) == []
    assert imageapi("library", "remove", "family", env=env).returncode == 4


def test_doctor_reports_tools_and_folders(env: dict[str, Path], env_dirs: dict[str, Path]) -> None:
    res = imageapi("doctor", "--json", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    database = ({"database", "database schema"} if dbq.postgres_url()
                else {"database", "database integrity", "database disk"})
    assert set(checks) == {"ffmpeg", "ffprobe", "video smoke test", "HEIF support", "exiftool", "thumbnails",
                           "face detection", *database}
    assert checks["ffmpeg"]["ok"] and checks["HEIF support"]["ok"] and checks["database"]["ok"]
    assert checks["video smoke test"]["ok"], checks["video smoke test"]
    assert not checks["exiftool"]["required"] and not checks["ffprobe"]["required"]
    for c in checks.values():
        assert c["ok"] or c["fix"], c

    blocker = env_dirs["tmp"] / "blocker"
    blocker.write_text("")
    res = imageapi("doctor", env={**env, "THUMBNAILS": str(blocker / "thumbs"), "PATH": "/nonexistent"})
    assert res.returncode == 1
    assert "thumbnails" in res.stdout and "fix:" in res.stdout


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of `imageapi`, as argument lists."""
    import typer.main

    from imageapi.cli.app import app

    out: list[list[str]] = [[]]

    def walk(cmd: object, path: list[str]) -> None:
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            out.append([*path, name])
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_help_shows_no_value_after_a_flag(env: dict[str, str]) -> None:
    """`--full <bool>` read as if the flag took a value. Every command's --help (in-process), and
    two as users run them."""
    from typer.testing import CliRunner

    from imageapi.cli.app import app

    paths = _command_paths()
    assert ["scan"] in paths and ["faces", "drain"] in paths and len(paths) > 20
    helps = {}
    for path in paths:
        res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert res.exit_code == 0 and "--help" in res.output, (path, res.output)
        helps[tuple(path)] = res.output
    for path in (["scan"], ["faces", "drain"]):
        res = imageapi(*path, "--help", env=env)
        assert res.returncode == 0, res.stderr
        helps[("process", *path)] = res.stdout
    for path, out in helps.items():
        assert "<bool>" not in out, (path, out)
    assert "--full" in helps[("process", "scan")] and "--retry-unsupported" in helps[("thumbs",)]
    assert "<int range>" in helps[("process", "scan")]  # options that take a value still say what
