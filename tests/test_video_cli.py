"""`imageapi video hls|previews|status` as users run them (real processes): --json, cached and
failed videos, explicit paths, exit codes, and SIGTERM in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imageapi.core import hls
from imageapi.core.previews import clip_path, gif_path
from tests.media_factory import make_jpeg
from tests.test_video_support import files_under, make_video, processes_with


def imageapi(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    return {**os.environ, "WORKERS": "1", "VIDEO_MAX_TRANSCODES": "1"}


@pytest.fixture()
def library(env_dirs: dict[str, Path], env: dict[str, str]) -> Path:
    root = env_dirs["tmp"] / "Videos"
    make_video(root / "a" / "copy.mp4", 6)
    make_video(root / "a" / "old.mov", 6, vcodec="mpeg4", audio="mp3")
    (root / "b").mkdir()
    (root / "b" / "broken.mp4").write_bytes((root / "a" / "copy.mp4").read_bytes()[:8000])
    make_jpeg(root / "photo.jpg")
    res = imageapi("scan", str(root), env=env)
    assert res.returncode == 0, res.stderr
    return root


def test_hls_json_cached_failed_and_paths(env_dirs: dict[str, Path], env: dict[str, str], library: Path) -> None:
    res = imageapi("video", "hls", "--json", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["videos"], out["made"], out["cached"], out["failed"], out["skipped"]) == (3, 2, 0, 1, 0)
    assert out["errors"][0]["path"] == "main/b/broken.mp4"
    video_path = env_dirs["data"] / "video" / "main"
    for rel, variant in (("a/copy.mp4", "copy"), ("a/old.mov", "h264")):
        assert hls.complete_generation(video_path / rel, variant, hls.stat_key(library / rel)) is not None
    # Again: made ones are kept, the failed one is not tried again ...
    out = json.loads(imageapi("video", "hls", "--json", env=env).stdout)
    assert (out["made"], out["cached"], out["failed"], out["skipped"]) == (0, 2, 0, 1)
    # ... unless named, or asked to.
    out = json.loads(imageapi("video", "hls", "--json", str(library / "b"), env=env).stdout)
    assert (out["videos"], out["failed"], out["skipped"]) == (1, 1, 0)
    out = json.loads(imageapi("video", "hls", "--json", "--retry-failed", "--library", "main", env=env).stdout)
    assert (out["cached"], out["failed"]) == (2, 1)
    assert not list((video_path / "b" / "broken.mp4").glob(".gen-*"))
    # Plain output, then the errors.
    res = imageapi("video", "hls", str(library / "a" / "copy.mp4"), env=env)
    assert res.returncode == 0 and "1 videos: 0 made, 1 already there" in res.stdout
    for args in (["video", "hls", str(library / "photo.jpg")], ["video", "hls", "/nowhere/x.mp4"],
                 ["video", "hls", "--library", "nope"]):
        res = imageapi(*args, env=env)
        assert res.returncode == 4, (args, res.stdout, res.stderr)
        assert "error:" in res.stderr


def test_previews_and_status(env_dirs: dict[str, Path], env: dict[str, str], library: Path) -> None:
    res = imageapi("video", "status", "--json", env=env)
    assert json.loads(res.stdout) == {"videos": 3, "previews_done": 0, "previews_failed": 0, "previews_due": 3}
    res = imageapi("video", "previews", "--json", "--max", "1", env=env)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["made"] + out["failed"] == 1 and out["remaining"] == 2
    out = json.loads(imageapi("video", "previews", "--json", env=env).stdout)
    assert out["remaining"] == 0
    cfg_data = env_dirs["data"]
    assert json.loads(imageapi("video", "status", "--json", env=env).stdout) == {
        "videos": 3, "previews_done": 2, "previews_failed": 1, "previews_due": 0}
    from imageapi.core.config import load_config

    cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(cfg_data)}, cwd=env_dirs["tmp"])
    for rel in ("a/copy.mp4", "a/old.mov"):
        assert clip_path(cfg, "main", rel).is_file() and gif_path(cfg, "main", rel).is_file()
    out = json.loads(imageapi("video", "previews", "--json", env=env).stdout)
    assert (out["made"], out["failed"], out["requeued"]) == (0, 0, 0)
    out = json.loads(imageapi("video", "previews", "--json", "--retry-failed", env=env).stdout)
    assert (out["requeued"], out["failed"], out["remaining"]) == (1, 1, 0)
    res = imageapi("video", "previews", env=env)
    assert res.returncode == 0 and "previews: 0 made, 0 failed, 0 remaining" in res.stdout
    res = imageapi("video", "status", "--library", "nope", env=env)
    assert res.returncode == 4


def test_sigterm_stops_the_run_and_leaves_nothing(env_dirs: dict[str, Path], env: dict[str, str]) -> None:
    root = env_dirs["tmp"] / "Long"
    src = make_video(root / "long.mov", 90, vcodec="mpeg4", audio=None, size="640x360")
    assert imageapi("scan", str(root), env=env).returncode == 0
    folder = env_dirs["data"] / "video" / "main" / "long.mov"
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "video", "hls", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            gens = list(folder.glob(".gen-h264-*"))
            if gens and any(gens[0].glob("seg*.m4s")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("no segment was written")
        assert processes_with(str(src))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert processes_with(str(src)) == []
    assert files_under(folder) == [".lock-h264"]
