"""What each ffmpeg build supports (asked once per binary), the IMAGEAPI_FFMPEG / IMAGEAPI_FFPROBE
settings, and the commands imageapi builds run against every ffmpeg on the machine: Debian's, the
imageio-ffmpeg package's, and any listed in IMAGEAPI_TEST_FFMPEGS."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imageapi.core import ffmpeg, ffmpeg_caps
from imageapi.core.config import load_config
from imageapi.core.errors import ConfigError, ToolError
from imageapi.core.thumbs import make_thumbnail
from tests.conftest import REPO
from tests.test_video_support import ffmpeg_binaries, make_video

BINARIES = ffmpeg_binaries()


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(REPO)}, cwd=cwd)


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEAPI_FFMP") and k != "IMAGEAPI_FFPROBE"}
    env.update(IMAGEAPI_DATA_DIR=str(tmp_path / "data"), **settings)
    return env


# --------------------------------------------------------------------------------------------
# Versions and capabilities


@pytest.mark.parametrize(("line", "version", "release"), [
    ("ffmpeg version 5.1.9-0+deb12u1 Copyright (c) 2000-2026 the FFmpeg developers", "5.1.9-0+deb12u1", (5, 1)),
    ("ffmpeg version 4.4.2-0ubuntu0.22.04.1 Copyright (c) 2000-2021", "4.4.2-0ubuntu0.22.04.1", (4, 4)),
    ("ffmpeg version n7.0.2 Copyright", "n7.0.2", (7, 0)),
    ("ffmpeg version 7.0.2-static https://johnvansickle.com/ffmpeg/", "7.0.2-static", (7, 0)),
    ("ffprobe version 6.1.1-3ubuntu5 Copyright", "6.1.1-3ubuntu5", (6, 1)),
    ("ffmpeg version N-113000-g1234abcd Copyright", "N-113000-g1234abcd", None),
])
def test_versions(line: str, version: str, release: tuple[int, int] | None) -> None:
    assert ffmpeg_caps.parse_version(line + "\nbuilt with gcc 12") == version
    assert ffmpeg_caps.parse_release(version) == release


@given(st.text())
def test_version_parsers_never_crash(text: str) -> None:
    try:
        version = ffmpeg_caps.parse_version(text)
    except ToolError:
        return
    release = ffmpeg_caps.parse_release(version)
    assert release is None or all(isinstance(n, int) for n in release)


@pytest.mark.parametrize("path", BINARIES.values(), ids=BINARIES.keys())
def test_caps_of_each_binary(path: str) -> None:
    caps = ffmpeg_caps.caps(path)
    first = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    assert caps.version in first
    # What every command imageapi builds needs, in every supported version.
    assert {"scale", "setsar", "format", "concat", "palettegen", "paletteuse", "fps"} <= caps.filters
    assert {"mp4", "hls", "gif", "image2pipe"} <= caps.muxers
    assert {"mjpeg", "libx264", "aac", "gif"} <= caps.encoders
    assert {"h264", "hevc", "mpeg4", "aac"} <= caps.decoders
    assert {"ss", "t", "map", "autorotate", "force_key_frames", "filter_complex"} <= caps.options
    # Version-dependent options: asked, not assumed.
    assert caps.has_option("display_rotation") == caps.at_least(6, 0)
    assert caps.has_option("readrate") == caps.at_least(5, 0)


def test_caps_are_asked_once_per_binary_and_again_when_it_changes(tmp_path: Path) -> None:
    copy = tmp_path / "ffmpeg"
    shutil.copy2(ffmpeg.ffmpeg_path(), copy)
    first = ffmpeg_caps.caps(str(copy))
    assert ffmpeg_caps.caps(str(copy)) is first              # cached
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))       # replaced in place (an upgrade)
    again = ffmpeg_caps.caps(str(copy))
    assert again is not first and again == first
    copy.unlink()
    with pytest.raises(ToolError, match="cannot run"):
        ffmpeg_caps.caps(str(copy))


@pytest.mark.parametrize("path", BINARIES.values(), ids=BINARIES.keys())
def test_rotation_and_readrate_args_work(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The version-dependent arguments the tests' fixtures use: a display rotation that probes back
    as written, and a slowed-down read that ffmpeg accepts."""
    monkeypatch.setenv("IMAGEAPI_FFMPEG", path)
    plain = tmp_path / "plain.mp4"
    subprocess.run([path, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=160x90:rate=10:duration=1", "-c:v", "mpeg4", str(plain)], check=True, timeout=60)
    caps = ffmpeg_caps.caps(path)
    for ccw, cw in ((-90, 90), (90, 270), (180, 180)):
        before, after = ffmpeg_caps.rotation_args(caps, ccw)
        turned = tmp_path / f"turned{cw}.mp4"
        subprocess.run([path, "-hide_banner", "-loglevel", "error", "-y", *before, "-i", str(plain), "-c", "copy",
                        *after, str(turned)], check=True, timeout=60)
        assert ffmpeg.probe(turned).rotation == cw
    out = subprocess.run([path, "-hide_banner", "-loglevel", "error", *ffmpeg_caps.readrate_args(caps, 4),
                          "-i", str(plain), "-f", "null", "-"], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("path", BINARIES.values(), ids=BINARIES.keys())
def test_video_thumbnail_with_each_ffmpeg(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame at 3 s, upright, from every ffmpeg here (with Debian's 5.1 the bare -autorotate made
    this a sentinel), through ffprobe and through the banner."""
    monkeypatch.setenv("IMAGEAPI_FFMPEG", path)
    src = make_video(tmp_path / "phone.mp4", 5.0, size="320x180", rotate_ccw=-90)
    for probe in ("", "none"):
        monkeypatch.setenv("IMAGEAPI_FFPROBE", probe)
        dest = tmp_path / probe / "thumb.mp4"
        res = make_thumbnail(src, "video", dest, 100)
        assert res.state == "done", res.reason
        with Image.open(io.BytesIO(dest.read_bytes())) as im:
            assert im.size == (56, 100)   # portrait: turned by the display matrix


# --------------------------------------------------------------------------------------------
# IMAGEAPI_FFMPEG and IMAGEAPI_FFPROBE


def test_settings_pick_and_check_the_binaries(tmp_path: Path) -> None:
    env = {"IMAGEAPI_DATA_DIR": str(tmp_path)}
    any_ffmpeg = next(iter(BINARIES.values()))
    cfg = load_config({**env, "IMAGEAPI_FFMPEG": any_ffmpeg, "IMAGEAPI_FFPROBE": "None"}, cwd=tmp_path)
    assert (cfg.ffmpeg, cfg.ffprobe) == (os.path.abspath(any_ffmpeg), "none")
    assert (load_config(env, cwd=tmp_path).ffmpeg, load_config(env, cwd=tmp_path).ffprobe) == (None, None)
    not_exec = tmp_path / "ffmpeg.txt"
    not_exec.write_text("not a program")
    for name, value, message in (
        ("IMAGEAPI_FFMPEG", str(tmp_path / "nope"), "does not exist"),
        ("IMAGEAPI_FFMPEG", str(not_exec), "is not an executable file"),
        ("IMAGEAPI_FFMPEG", str(tmp_path), "is not an executable file"),
        ("IMAGEAPI_FFMPEG", "none", "is not on PATH"),           # ffmpeg cannot be done without
        ("IMAGEAPI_FFPROBE", "ffprobe-that-is-not-there", "is not on PATH"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            load_config({**env, name: value}, cwd=tmp_path)
        assert err.value.setting == name


def test_bad_setting_is_exit_2_in_one_line_before_anything_runs(tmp_path: Path) -> None:
    out = cli("scan", str(tmp_path), env=clean_env(tmp_path, IMAGEAPI_FFMPEG=str(tmp_path / "ffmpeg-7")),
              cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "IMAGEAPI_FFMPEG" in out.stderr and "does not exist" in out.stderr
    assert not (tmp_path / "data").exists()


def test_ffprobe_none_reads_the_banner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEAPI_FFPROBE", "none")
    assert ffmpeg.ffprobe_path() is None
    cmd, json_out = ffmpeg._probe_command(tmp_path / "a.mp4")
    assert not json_out and cmd[0] == ffmpeg.ffmpeg_path()
    if shutil.which("ffprobe"):
        monkeypatch.setenv("IMAGEAPI_FFPROBE", "ffprobe")
        assert ffmpeg.ffprobe_path() == shutil.which("ffprobe")


def test_chosen_ffmpeg_brings_the_ffprobe_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        (folder / name).symlink_to(shutil.which(name) or ffmpeg.ffmpeg_path())
    monkeypatch.delenv("IMAGEAPI_FFPROBE", raising=False)
    monkeypatch.setenv("IMAGEAPI_FFMPEG", str(folder / "ffmpeg"))
    assert ffmpeg.ffmpeg_path() == str(folder / "ffmpeg")
    assert ffmpeg.ffprobe_path() == str(folder / "ffprobe")
    (folder / "ffmpeg").unlink()   # removed after start-up: a ToolError naming the setting
    with pytest.raises(ToolError, match="IMAGEAPI_FFMPEG"):
        ffmpeg.ffmpeg_path()


@pytest.mark.skipif(len(BINARIES) < 2, reason="needs two ffmpeg builds (Debian's and imageio-ffmpeg's)")
def test_a_dotenv_choice_reaches_the_worker_processes(tmp_path: Path) -> None:
    """IMAGEAPI_FFMPEG from a .env file only: the scan's worker processes (which inherit the
    environment, not the .env) run that binary, as the tools recorded with a sentinel show."""
    versions = list(BINARIES)
    chosen = next(v for v in versions if BINARIES[v] != ffmpeg.ffmpeg_path())
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (tmp_path / ".env").write_text(f"IMAGEAPI_FFMPEG={BINARIES[chosen]}\nIMAGEAPI_FFPROBE=none\n")
    out = cli("scan", str(lib), "--workers", "1", env=clean_env(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    with sqlite3.connect(tmp_path / "data" / "imageapi.db") as db:
        state, tool = db.execute("SELECT thumb_state, thumb_tool FROM files").fetchone()
    assert (state, tool) == ("unsupported", f"ffmpeg {chosen}, no ffprobe")
