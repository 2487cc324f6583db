"""`imageapi doctor` on video: the ffmpeg and ffprobe in use with their versions, and a real run of
each kind of ffmpeg command imageapi builds, naming the step that fails with ffmpeg's message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imageapi.core import video_check
from tests.conftest import REPO
from tests.test_video_support import ffmpeg_binaries

BINARIES = ffmpeg_binaries()
STEPS = ["make a 1 s clip (libx264, aac)", "probe it", "take a frame (thumbnails)",
         "remux into HLS segments (copy mode)", "transcode into HLS segments (other codecs, rotated videos)",
         "make a preview clip and GIF (video wall)"]


def doctor(tmp_path: Path, **settings: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGEAPI_FFMPEG", "IMAGEAPI_FFPROBE")}
    env.update(IMAGEAPI_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO), **settings)
    out = subprocess.run([sys.executable, "-m", "imageapi", "doctor", "--json"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=300)
    return out.returncode, {c["name"]: c for c in json.loads(out.stdout)["checks"]}


@pytest.mark.parametrize("path", BINARIES.values(), ids=BINARIES.keys())
def test_doctor_runs_every_video_command_with_each_ffmpeg(path: str, tmp_path: Path) -> None:
    code, checks = doctor(tmp_path, IMAGEAPI_FFMPEG=path, IMAGEAPI_FFPROBE="none")
    version = next(v for v, p in BINARIES.items() if p == path)
    assert checks["ffmpeg"]["ok"] and checks["ffmpeg"]["detail"] == \
        f"{os.path.abspath(path)} (version {version}, from IMAGEAPI_FFMPEG)"
    assert not checks["ffprobe"]["ok"] and not checks["ffprobe"]["required"]
    assert checks["ffprobe"]["detail"].startswith("none (IMAGEAPI_FFPROBE=none)")
    smoke = checks["video smoke test"]
    assert smoke["ok"], smoke["detail"]
    assert smoke["detail"] == "; ".join(STEPS)
    assert code in (0, 1)   # 1 only for something else missing on this machine
    if code == 1:
        assert any(not c["ok"] and c["required"] for c in checks.values())


def test_smoke_test_in_process_with_ffprobe() -> None:
    result = video_check.smoke_test()
    assert (result.ok, result.steps, result.failed) == (True, STEPS, None)


def stand_in(folder: Path, refuse: str, message: str) -> Path:
    """The real ffmpeg, but refusing what a build without some part refuses, as such a build says
    it (a distribution's minimal build without libx264, or without the HLS muxer)."""
    real = BINARIES[next(iter(BINARIES))]
    folder.mkdir(exist_ok=True)
    path = folder / "ffmpeg"
    path.write_text(f"#!/bin/sh\ncase \"$*\" in *'{refuse}'*) echo \"{message}\" >&2; exit 1;; esac\n"
                    f"exec '{real}' \"$@\"\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(("refuse", "message", "step"), [
    ("-c:v libx264 -preset ultrafast", "Unknown encoder 'libx264'", STEPS[0]),
    ("-c:v copy", "Requested output format 'hls' is not a suitable output format", STEPS[3]),
    ("-force_key_frames", "Unrecognized option 'force_key_frames'.", STEPS[4]),
])
def test_doctor_names_the_failing_step_and_ffmpegs_message(refuse: str, message: str, step: str,
                                                            tmp_path: Path) -> None:
    exe = stand_in(tmp_path / "bin", refuse, message)
    code, checks = doctor(tmp_path, IMAGEAPI_FFMPEG=str(exe))
    smoke = checks["video smoke test"]
    assert code == 1 and not smoke["ok"] and smoke["required"]
    assert smoke["detail"] == f"{step}: failed: exit code 1: {message}"
    assert "IMAGEAPI_FFMPEG" in smoke["fix"]
