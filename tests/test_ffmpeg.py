"""The ffmpeg wrapper: running with a timeout, probing (ffprobe JSON and the `ffmpeg -i` banner,
old and new layouts), frames, and the corpus videos against exiftool's answers."""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from imageapi.core import ffmpeg, ffmpeg_caps
from imageapi.core.errors import MediaError, ToolError, UnsupportedMediaError, UsageError
from imageapi.core.ffmpeg import VideoInfo, parse_ffmpeg_banner, parse_ffprobe_json

# --------------------------------------------------------------------------------------------
# Captured tool output

# ffmpeg 9 (the imageio-ffmpeg build) on the corpus' rotated.mov: "Display Matrix" side data.
NEW_ROTATED = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'video/rotated.mov':
  Metadata:
    major_brand     : qt
    minor_version   : 512
    compatible_brands: qt
    encoder         : Lavf59.27.100
  Duration: 00:00:05.00, start: 0.000000, bitrate: 790 kb/s
  Stream #0:0[0x1]: Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 640x360 [SAR 1:1 DAR 16:9], \
786 kb/s, 30 fps, 30 tbr, 15360 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      vendor_id       : FFMP
      encoder         : Lavc59.37.100 libx264
    Side data:
      Display Matrix: rotation of -90.00 degrees
At least one output file must be specified
"""

# ffmpeg 9 on clip_6s.mp4: audio, a language tag on each stream.
NEW_CLIP = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'video/clip_6s.mp4':
  Metadata:
    major_brand     : isom
    minor_version   : 512
    compatible_brands: isomiso2avc1mp41
    encoder         : Lavf59.27.100
  Duration: 00:00:06.00, start: 0.000000, bitrate: 802 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p(progressive), 640x360 [SAR 1:1 DAR \
16:9], 724 kb/s, 25 fps, 25 tbr, 12800 tbn (default)
    Metadata:
      handler_name    : VideoHandler
      encoder         : Lavc59.37.100 libx264
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 69 kb/s (default)
    Metadata:
      handler_name    : SoundHandler
At least one output file must be specified
"""

# ffmpeg 4.4 on an iPhone clip: streams indented by four, lower-case "displaymatrix" side data,
# the old clockwise `rotate` tag, Apple metadata keys, data streams.
OLD_IPHONE = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'IMG_0420.MOV':
  Metadata:
    major_brand     : qt
    minor_version   : 0
    compatible_brands: qt
    creation_time   : 2021-04-11T20:47:53.000000Z
    com.apple.quicktime.location.accuracy.horizontal: 4.835959
    com.apple.quicktime.location.ISO6709: +39.0513-094.2887+259.861/
    com.apple.quicktime.make: Apple
    com.apple.quicktime.model: iPhone 11 Pro Max
    com.apple.quicktime.software: 14.4.2
    com.apple.quicktime.creationdate: 2021-04-11T15:47:53-0500
  Duration: 00:00:03.07, start: 0.000000, bitrate: 9125 kb/s
    Stream #0:0(und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080, 9000 kb/s, \
29.98 fps, 29.97 tbr, 600 tbn, 600 tbc (default)
    Metadata:
      rotate          : 90
      creation_time   : 2021-04-11T20:47:53.000000Z
      handler_name    : Core Media Video
      encoder         : HEVC
    Side data:
      displaymatrix: rotation of -90.00 degrees
    Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 95 kb/s (default)
    Metadata:
      creation_time   : 2021-04-11T20:47:53.000000Z
      handler_name    : Core Media Audio
    Stream #0:2(und): Data: none (mebx / 0x7862656D), 0 kb/s (default)
    Metadata:
      creation_time   : 2021-04-11T20:47:53.000000Z
      handler_name    : Core Media Metadata
At least one output file must be specified
"""

# ffmpeg 3.x: only the `rotate` tag; cover art first; chapters with their own metadata; a
# multi-line comment; an unknown pixel format.
OLD_TAG_ONLY = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'movie.m4v':
  Metadata:
    major_brand     : M4V
    title           : The Film
    comment         : first line
                    : second line
  Duration: 01:02:03.45, start: 0.000000, bitrate: 1500 kb/s
    Chapter #0:0: start 0.000000, end 60.000000
    Metadata:
      title           : Chapter 1
    Stream #0:0: Video: mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 600x600 [SAR 1:1 DAR 1:1], \
90k tbr, 90k tbn, 90k tbc (attached pic)
    Stream #0:1(eng): Video: h264 (avc1 / 0x31637661), none, 720x480 [SAR 8:9 DAR 4:3], 1400 kb/s, \
29.97 fps, 29.97 tbr, 30k tbn, 59.94 tbc (default)
    Metadata:
      rotate          : 270
      handler_name    : VideoHandler
    Stream #0:2(eng): Audio: ac3 (ac-3 / 0x332D6361), 48000 Hz, 5.1(side), fltp, 384 kb/s
At least one output file must be specified
"""

NOT_A_VIDEO = """\
[in#0 @ 0x55af44f32040] Format mov,mp4,m4a,3gp,3g2,mj2 detected only with low score of 1, misdetection possible!
[in#0 @ 0x55af44f32040] moov atom not found
[in#0 @ 0x55af44f31cc0] Error opening input: Invalid data found when processing input
Error opening input file bad/actually_elf.mp4.
Error opening input files: Invalid data found when processing input
"""

# What `ffprobe -print_format json -show_format -show_streams` prints for the corpus videos.
_H264 = {"codec_name": "h264", "codec_type": "video", "profile": "High", "pix_fmt": "yuv420p",
         "field_order": "progressive", "disposition": {"default": 1, "attached_pic": 0}}
FFPROBE_JSON: dict[str, dict] = {
    "clip_6s.mp4": {
        "streams": [
            {**_H264, "index": 0, "width": 640, "height": 360, "r_frame_rate": "25/1", "avg_frame_rate": "25/1",
             "bit_rate": "724112", "tags": {"language": "und", "handler_name": "VideoHandler"}},
            {"index": 1, "codec_name": "aac", "codec_type": "audio", "sample_rate": "44100", "channels": 1,
             "r_frame_rate": "0/0", "avg_frame_rate": "0/0", "disposition": {"default": 1, "attached_pic": 0}},
        ],
        "format": {"filename": "clip_6s.mp4", "nb_streams": 2, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
                   "start_time": "0.000000", "duration": "6.000000", "size": "602099", "bit_rate": "802798",
                   "tags": {"major_brand": "isom", "minor_version": "512",
                            "compatible_brands": "isomiso2avc1mp41", "encoder": "Lavf59.27.100"}},
    },
    "rotated.mov": {
        "streams": [
            {**_H264, "index": 0, "width": 640, "height": 360, "r_frame_rate": "30/1", "avg_frame_rate": "30/1",
             "tags": {"handler_name": "VideoHandler", "vendor_id": "FFMP"},
             "side_data_list": [{"side_data_type": "Display Matrix",
                                 "displaymatrix": "\n00000000:            0       65536           0\n",
                                 "rotation": -90}]},
        ],
        "format": {"filename": "rotated.mov", "nb_streams": 1, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
                   "duration": "5.000000", "size": "494056", "bit_rate": "790489",
                   "tags": {"major_brand": "qt  ", "minor_version": "512", "compatible_brands": "qt  ",
                            "encoder": "Lavf59.27.100"}},
    },
    "short_1_5s.mp4": {
        "streams": [
            {**_H264, "index": 0, "width": 320, "height": 240, "r_frame_rate": "25/1", "avg_frame_rate": "25/1"},
        ],
        "format": {"filename": "short_1_5s.mp4", "nb_streams": 1, "format_name": "mov,mp4,m4a,3gp,3g2,mj2",
                   "duration": "1.520000", "size": "53215", "bit_rate": "280078", "tags": {}},
    },
}


def _facts(info: VideoInfo) -> dict:
    """Everything but the raw tag dictionary (whose padding differs between the tools)."""
    facts = dataclasses.asdict(info)
    del facts["tags"]
    return facts


# --------------------------------------------------------------------------------------------
# Parsers


def test_banner_new_layout() -> None:
    info = parse_ffmpeg_banner(NEW_ROTATED)
    assert (info.width, info.height, info.rotation, info.duration) == (640, 360, 90, 5.0)
    assert (info.video_codec, info.pix_fmt, info.frame_rate, info.bit_rate) == ("h264", "yuv420p", 30.0, 790000)
    assert (info.audio_codec, info.creation_time, info.local_creation) == (None, None, None)
    assert info.tags["encoder"] == "Lavf59.27.100"
    info = parse_ffmpeg_banner(NEW_CLIP)
    assert (info.rotation, info.audio_codec, info.duration) == (0, "aac", 6.0)


def test_banner_old_layout_iphone() -> None:
    info = parse_ffmpeg_banner(OLD_IPHONE)
    assert (info.width, info.height, info.rotation) == (1920, 1080, 90)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("hevc", "aac", "yuv420p")
    assert (info.frame_rate, info.duration, info.bit_rate) == (29.98, 3.07, 9125000)
    assert info.creation_time == "2021-04-11T20:47:53.000000Z"
    assert info.local_creation == "2021-04-11T15:47:53-0500"
    assert info.location == "+39.0513-094.2887+259.861/"
    assert info.tags["com.apple.quicktime.model"] == "iPhone 11 Pro Max"


def test_banner_rotate_tag_cover_art_chapters() -> None:
    info = parse_ffmpeg_banner(OLD_TAG_ONLY)
    assert (info.video_codec, info.width, info.height) == ("h264", 720, 480)   # not the cover art
    assert (info.rotation, info.pix_fmt, info.frame_rate) == (270, None, 29.97)
    assert (info.audio_codec, info.duration) == ("ac3", 3723.45)
    assert info.tags["title"] == "The Film"            # not the chapter's title
    assert info.tags["comment"] == "first line\nsecond line"


def test_banner_errors() -> None:
    with pytest.raises(MediaError, match="moov atom not found") as caught:
        parse_ffmpeg_banner(NOT_A_VIDEO)
    assert "0x55af" not in caught.value.message
    still = "Input #0, image2, from 'x.jpg':\n  Duration: 00:00:00.04, start: 0.000000, bitrate: 1591 kb/s\n"
    with pytest.raises(UnsupportedMediaError, match="still image"):
        parse_ffmpeg_banner(still)
    audio_only = ("Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'a.m4a':\n"
                  "  Duration: 00:00:01.00, start: 0.0, bitrate: 1 kb/s\n"
                  "  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp, 1 kb/s\n")
    with pytest.raises(UnsupportedMediaError, match="no video stream"):
        parse_ffmpeg_banner(audio_only)


def test_ffprobe_json_matches_banner_for_the_same_file() -> None:
    pairs = {"rotated.mov": NEW_ROTATED, "clip_6s.mp4": NEW_CLIP}
    for name, banner in pairs.items():
        assert _facts(parse_ffprobe_json(FFPROBE_JSON[name])) == _facts(parse_ffmpeg_banner(banner)), name


def test_ffprobe_json_details() -> None:
    doc = {
        "streams": [
            {"codec_type": "video", "codec_name": "mjpeg", "width": 600, "height": 600,
             "disposition": {"attached_pic": 1}},
            {"codec_type": "video", "codec_name": "hevc", "width": 1920, "height": 1080, "pix_fmt": "yuv420p10le",
             "avg_frame_rate": "30000/1001", "disposition": {"default": 1, "attached_pic": 0},
             "tags": {"rotate": "180"}},
        ],
        "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": "12.345678", "bit_rate": "1234567",
                   "tags": {"creation_time": "1970-01-01T00:00:00.000000Z", "location": "+12.5+045.25/"}},
    }
    info = parse_ffprobe_json(doc)
    assert (info.video_codec, info.width, info.rotation, info.pix_fmt) == ("hevc", 1920, 180, "yuv420p10le")
    assert (info.duration, info.bit_rate, info.frame_rate) == (12.35, 1234000, 29.97)
    assert (info.creation_time, info.location) == (None, "+12.5+045.25/")   # epoch 0 means unset
    with pytest.raises(UnsupportedMediaError):
        parse_ffprobe_json({"streams": [], "format": {"format_name": "mov,mp4,m4a,3gp,3g2,mj2"}})
    with pytest.raises(UnsupportedMediaError):
        parse_ffprobe_json({"streams": [{"codec_type": "video"}], "format": {"format_name": "jpeg_pipe"}})
    with pytest.raises(MediaError):
        parse_ffprobe_json({})


# --------------------------------------------------------------------------------------------
# run()


def test_run_returns_nonzero_exit_and_feeds_input() -> None:
    out = ffmpeg.run([ffmpeg.ffmpeg_path(), "-hide_banner", "-i", "file:/nonexistent/x.mp4"], 30)
    assert out.returncode != 0
    assert b"No such file" in out.stderr
    echo = ffmpeg.run(["sh", "-c", "tr a-z A-Z"], 10, input=b"hello")
    assert (echo.returncode, echo.stdout) == (0, b"HELLO")


def test_run_missing_binary() -> None:
    with pytest.raises(ToolError, match="cannot run"):
        ffmpeg.run(["/nonexistent/ffmpeg", "-version"], 5)


def test_run_timeout_kills_ffmpeg() -> None:
    long_source = ["-f", "lavfi", "-i", "testsrc=duration=600:size=320x240:rate=30", "-f", "null", "-"]
    start = time.monotonic()
    with pytest.raises(ToolError, match=r"timed out after 0\.5s"):
        ffmpeg.run([ffmpeg.ffmpeg_path(), "-hide_banner", "-nostdin", *long_source], 0.5)
    assert time.monotonic() - start < 5


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reparented children may linger as zombies where nothing reaps them: dead all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_run_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """ffmpeg started by a shell: killing only the shell would leave ffmpeg running."""
    pidfile = tmp_path / "pid"
    script = (f"'{ffmpeg.ffmpeg_path()}' -hide_banner -nostdin -loglevel error -f lavfi "
              f"-i testsrc=duration=600:size=320x240:rate=30 -f null - & echo $! > '{pidfile}'; wait")
    with pytest.raises(ToolError, match="timed out"):
        ffmpeg.run(["sh", "-c", script], 1.0)
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_paths_and_tool_report(monkeypatch: pytest.MonkeyPatch) -> None:
    path = ffmpeg.ffmpeg_path()
    assert os.access(path, os.X_OK)
    report = ffmpeg.tool_report()
    assert set(report) == {"ffmpeg", "ffprobe", "exiftool"}
    assert report["ffmpeg"] is not None and path in report["ffmpeg"] and "version" in report["ffmpeg"]
    assert (report["ffprobe"] is None) == (ffmpeg.ffprobe_path() is None)
    # Neither chosen, nor on PATH, nor bundled: a ToolError saying so.
    import imageio_ffmpeg

    monkeypatch.delenv("IMAGEAPI_FFMPEG", raising=False)
    monkeypatch.delenv("IMAGEAPI_FFPROBE", raising=False)

    def no_exe() -> str:
        raise RuntimeError("no ffmpeg exe could be found")

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", no_exe)
    with pytest.raises(ToolError, match="ffmpeg not found"):
        ffmpeg.ffmpeg_path()
    assert ffmpeg.ffprobe_path() is None
    assert ffmpeg.tool_report() == {"ffmpeg": None, "ffprobe": None, "exiftool": None}


# --------------------------------------------------------------------------------------------
# Generated videos (no corpus needed)


def _make(path: Path, *args: str, source: str = "testsrc=size=160x90:rate=10:duration=2") -> Path:
    cmd = [ffmpeg.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source,
           *args, str(path)]
    out = ffmpeg.run(cmd, 60)
    assert out.returncode == 0, out.stderr.decode()
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    plain = _make(d / "plain.mp4", "-c:v", "mpeg4")
    rotated = d / "rotated.mp4"
    # Counter-clockwise, as -display_rotation takes it: -90 is what a phone held upright writes.
    before, after = ffmpeg_caps.rotation_args(ffmpeg_caps.current(), -90)
    out = ffmpeg.run([ffmpeg.ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y",
                      *before, "-i", str(plain), "-c", "copy", *after, str(rotated)], 60)
    assert out.returncode == 0, out.stderr.decode()
    apple = _make(d / "apple.mov", "-c:v", "mpeg4", "-movflags", "use_metadata_tags",
                  "-metadata", "com.apple.quicktime.creationdate=2021-04-11T15:47:53-0500",
                  "-metadata", "creation_time=2021-04-11T20:47:53Z",
                  "-metadata", "location=+39.0513-094.2887+259.861/")
    audio = _make(d / "audio_only.mp4", "-c:a", "aac", source="sine=frequency=440:duration=1")
    return {"plain": plain, "rotated": rotated, "apple": apple, "audio": audio}


def test_probe_generated(generated: dict[str, Path]) -> None:
    info = ffmpeg.probe(generated["plain"])
    assert (info.width, info.height, info.rotation, info.video_codec) == (160, 90, 0, "mpeg4")
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert (info.frame_rate, info.creation_time, info.audio_codec) == (10.0, None, None)
    assert ffmpeg.probe(generated["rotated"]).rotation == 90
    info = ffmpeg.probe(generated["apple"])
    assert info.creation_time is not None and info.creation_time.startswith("2021-04-11T20:47:53")
    assert info.local_creation == "2021-04-11T15:47:53-0500"
    assert info.location is not None and info.location.startswith("+39.0513-094.2887")
    with pytest.raises(UnsupportedMediaError, match="no video stream"):
        ffmpeg.probe(generated["audio"])


def test_probe_rejects_non_videos(tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.mp4"
    Image.new("RGB", (32, 24), "red").save(jpeg, "JPEG")
    with pytest.raises(UnsupportedMediaError, match="still image"):
        ffmpeg.probe(jpeg)
    junk = tmp_path / "junk.mov"
    junk.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(MediaError):
        ffmpeg.probe(junk)
    with pytest.raises(MediaError):
        ffmpeg.probe(tmp_path / "missing.mp4")
    # A name ffmpeg would read as a protocol is opened as a file.
    with pytest.raises(MediaError):
        ffmpeg.probe(Path("concat:/etc/passwd"))


def _jpeg_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\xff\xd8")
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_extract_frame_generated(generated: dict[str, Path]) -> None:
    assert _jpeg_size(ffmpeg.extract_frame(generated["plain"], 1.0, 64)) == (64, 36)
    assert _jpeg_size(ffmpeg.extract_frame(generated["plain"], 0.0, 400)) == (160, 90)   # never enlarged
    # Rotated 90 degrees clockwise: the frame comes out portrait.
    assert _jpeg_size(ffmpeg.extract_frame(generated["rotated"], 1.0, 64)) == (36, 64)
    with pytest.raises(MediaError, match="no frame at 30s"):
        ffmpeg.extract_frame(generated["plain"], 30.0, 64)
    with pytest.raises(MediaError):
        ffmpeg.extract_frame(generated["audio"], 0.0, 64)
    with pytest.raises(UsageError):
        ffmpeg.extract_frame(generated["plain"], -1.0, 64)
    with pytest.raises(UsageError):
        ffmpeg.extract_frame(generated["plain"], float("nan"), 64)


def test_extract_frame_timeout(generated: dict[str, Path]) -> None:
    with pytest.raises(ToolError, match="timed out"):
        ffmpeg.extract_frame(generated["plain"], 0.0, 64, timeout=0.001)


# --------------------------------------------------------------------------------------------
# The corpus


VIDEOS = ("clip_6s.mp4", "rotated.mov", "short_1_5s.mp4")


@pytest.mark.parametrize("name", VIDEOS)
def test_probe_corpus_matches_exiftool(name: str, corpus: Path, oracle: dict[str, dict]) -> None:
    entry = oracle[f"video/{name}"]
    info = ffmpeg.probe(corpus / "video" / name)
    assert info.duration == pytest.approx(entry["Duration"], abs=0.05)
    assert info.rotation == entry["Rotation"]
    assert (info.width, info.height) == (entry["ImageWidth"], entry["ImageHeight"])
    assert info.creation_time is None   # exiftool: CreateDate 0000:00:00 00:00:00


@pytest.mark.parametrize("name", VIDEOS)
def test_both_probe_paths_agree_on_corpus(name: str, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ffprobe JSON path and the banner path give the same answers for each corpus video."""
    monkeypatch.setattr(ffmpeg, "ffprobe_path", lambda: None)
    from_banner = ffmpeg.probe(corpus / "video" / name)
    assert _facts(parse_ffprobe_json(FFPROBE_JSON[name])) == _facts(from_banner)
    monkeypatch.undo()
    if ffmpeg.ffprobe_path() is not None:   # a machine with ffprobe checks the live tool too
        assert _facts(ffmpeg.probe(corpus / "video" / name)) == _facts(from_banner)


def test_extract_frame_corpus(corpus: Path) -> None:
    assert _jpeg_size(ffmpeg.extract_frame(corpus / "video/clip_6s.mp4", 3.0, 400)) == (400, 225)
    frame = ffmpeg.extract_frame(corpus / "video/rotated.mov", 1.0, 400)
    with Image.open(io.BytesIO(frame)) as im:
        assert im.size == (225, 400)   # stored 640x360, displayed portrait
        rgb = im.convert("RGB")
        # The test pattern's left column (red) is on top once turned 90 degrees clockwise, the
        # right one (cyan) at the bottom.
        top, bottom = rgb.getpixel((112, 20)), rgb.getpixel((112, 380))
    assert isinstance(top, tuple) and isinstance(bottom, tuple)
    assert top[0] > 150 and top[1] < 100 and top[2] < 100
    assert bottom[0] < 100 and bottom[1] > 150 and bottom[2] > 150
    with pytest.raises(MediaError):
        ffmpeg.extract_frame(corpus / "video/short_1_5s.mp4", 3.0, 400)   # past the end


@pytest.mark.parametrize("name", ("actually_elf.mp4", "truncated.mp4"))
def test_bad_corpus_videos(name: str, corpus: Path) -> None:
    with pytest.raises(MediaError):
        ffmpeg.probe(corpus / "bad" / name)
    with pytest.raises(MediaError):
        ffmpeg.extract_frame(corpus / "bad" / name, 0.0, 100)
