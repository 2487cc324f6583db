"""The ffmpeg/ffprobe wrapper: finding the tools, running them with a hard timeout, probing videos
and grabbing one frame.

Every external process runs in its own process group and is killed as a group when it overruns,
so a stuck decoder (or anything it spawned) never outlives its call. `run_async` does the same for
the event loop, and also kills the group when the awaiting task is cancelled (a request that goes
away, a server that shuts down). Inputs are opened through the
`file:` protocol with only that protocol allowed, so a crafted file (an HLS playlist under a video
name, say) cannot make ffmpeg fetch URLs.

ffprobe is used when it is on PATH; otherwise (the imageio-ffmpeg fallback ships no ffprobe) the
`ffmpeg -i` banner on stderr is parsed. Both paths fill the same `VideoInfo`, rounded the way the
banner prints (duration to 10 ms, bit rate to kb/s), so they give the same answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imageapi.core import lifeline
from imageapi.core.errors import MediaError, ToolError, UnsupportedMediaError, UsageError

# Demuxers that read still images: a photo under a video name is not a video.
_IMAGE_DEMUXERS = frozenset({"image2"})

# Container timestamps that mean "not set" (Unix and QuickTime epochs).
_NULL_TIMES = ("0000-00-00", "1970-01-01T00:00:00", "1904-01-01T00:00:00")

_REASON_MAX = 300   # characters of ffmpeg's complaint kept in an error message
# Lines that restate an error already given, or only say that ffmpeg is shutting down.
_NOISE = ("At least one output file", "Error opening input file", "Error opening input files",
          "Terminating thread", "Task finished")


# --------------------------------------------------------------------------------------------
# Finding and running the tools


def ffmpeg_path() -> str:
    """IMAGEAPI_FFMPEG when set, else `ffmpeg` on PATH, else the binary bundled with imageio-ffmpeg."""
    chosen = _chosen("IMAGEAPI_FFMPEG")
    if chosen:
        return chosen
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        bundled: str = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # the package raises RuntimeError, or is absent
        raise ToolError(f"ffmpeg not found: not on PATH and imageio-ffmpeg has none ({exc})") from exc
    if not bundled or not os.access(bundled, os.X_OK):
        raise ToolError("ffmpeg not found: not on PATH and imageio-ffmpeg has none")
    return bundled


def ffprobe_path() -> str | None:
    """IMAGEAPI_FFPROBE when set ("none": None); else, when IMAGEAPI_FFMPEG is set, the ffprobe
    beside it or on PATH; else `ffprobe` on PATH; None when there is none (imageio-ffmpeg ships no
    ffprobe, and the `ffmpeg -i` banner is read instead)."""
    chosen = _chosen("IMAGEAPI_FFPROBE")
    if chosen:
        return None if chosen == NO_TOOL else chosen
    ffmpeg = _chosen("IMAGEAPI_FFMPEG")
    if ffmpeg:
        beside = os.path.join(os.path.dirname(ffmpeg), "ffprobe")
        if os.path.isfile(beside) and os.access(beside, os.X_OK):
            return beside
    return shutil.which("ffprobe")


NO_TOOL = "none"   # IMAGEAPI_FFPROBE=none: do without ffprobe


def _chosen(setting: str) -> str | None:
    """The binary a setting names, as start-up checked it (config.tool_setting) and exported to
    the environment, which worker processes inherit. Checked again here for processes started
    some other way: a binary removed since then is a ToolError naming the setting."""
    raw = os.environ.get(setting, "").strip()
    if not raw:
        return None
    if raw.lower() == NO_TOOL and setting == "IMAGEAPI_FFPROBE":
        return NO_TOOL
    path = shutil.which(os.path.expanduser(raw))
    if path is None:
        raise ToolError(f"{setting}: {raw} is not an executable file")
    return os.path.abspath(path)


def use_tools(ffmpeg: str | None, ffprobe: str | None) -> None:
    """Make the binaries the settings chose the ones this process and its workers run (workers
    are started later and inherit the environment; a `.env` value is not in it otherwise)."""
    for setting, value in (("IMAGEAPI_FFMPEG", ffmpeg), ("IMAGEAPI_FFPROBE", ffprobe)):
        if value:
            os.environ[setting] = value


def run(
    args: list[str], timeout: float, *, input: bytes | None = None, cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command in its own process group, capturing stdout and stderr.

    On timeout the whole group is killed and ToolError raised; a missing or unrunnable binary is
    a ToolError too. A non-zero exit is returned, not raised: the caller knows what it means.
    """
    if not args:
        raise UsageError("run: empty command")
    name = Path(args[0]).name
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            start_new_session=True,  # own session and process group: killpg reaches grandchildren
            # On Linux the kernel kills it when we die, even by kill -9 (elsewhere it runs to its end).
            preexec_fn=lifeline.preexec(),
        )
    except OSError as exc:  # FileNotFoundError, PermissionError, ENOEXEC
        raise ToolError(f"cannot run {name}: {exc.strerror or exc}") from exc
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolError(f"{name} timed out after {timeout:g}s") from None
    except BaseException:  # KeyboardInterrupt, a cancelled worker: leave nothing running
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)  # reap it and drain the pipes
    except (subprocess.TimeoutExpired, OSError, ValueError):
        # A descendant that left the group still holds a pipe: stop waiting for it.
        for pipe in (proc.stdout, proc.stderr, proc.stdin):
            if pipe is not None:
                pipe.close()
        proc.wait(timeout=5)


# Bytes of a child's output kept by run_async: enough for any probe and any error message, and a
# bound on what a decoder that floods stderr with warnings can make us hold.
OUTPUT_LIMIT = 1024 * 1024

# (args, timeout, cwd) -> the completed process: what the HLS and preview code call, replaceable in
# tests (to count or slow down the runs).
AsyncRunner = Callable[..., Awaitable["subprocess.CompletedProcess[bytes]"]]


async def run_async(
    args: list[str], timeout: float, *, cwd: Path | None = None, output_limit: int = OUTPUT_LIMIT,
) -> subprocess.CompletedProcess[bytes]:
    """`run` for the event loop: own process group, stdin closed, stdout and stderr captured (each
    cut at `output_limit` bytes, the rest read and dropped so the child never blocks on a full pipe).

    On timeout the group is killed and ToolError raised. When the awaiting task is cancelled the
    group is killed and reaped before CancelledError goes on. A non-zero exit is returned.
    """
    if not args:
        raise UsageError("run: empty command")
    name = Path(args[0]).name
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, start_new_session=True, preexec_fn=lifeline.preexec(),  # dies with us, as in run
        )
    except OSError as exc:
        raise ToolError(f"cannot run {name}: {exc.strerror or exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr, _ = await asyncio.gather(
                _read_bounded(proc.stdout, output_limit), _read_bounded(proc.stderr, output_limit), proc.wait())
    except TimeoutError:
        await _kill_group_async(proc)
        raise ToolError(f"{name} timed out after {timeout:g}s") from None
    except BaseException:  # cancelled: leave nothing running
        await _kill_group_async(proc)
        raise
    return subprocess.CompletedProcess(args, proc.returncode or 0, stdout, stderr)


async def _read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def _kill_group_async(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    # Reap it even if we are being cancelled again meanwhile; a SIGKILLed child exits at once.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await asyncio.shield(asyncio.wait_for(proc.wait(), 5))


def _version(path: str, args: list[str]) -> str:
    try:
        out = run([path, *args], timeout=10)
    except ToolError as exc:
        return f"{path} (unusable: {exc.message})"
    first = (out.stdout or out.stderr).decode("utf-8", "replace").strip().splitlines()
    if out.returncode != 0 or not first:
        return f"{path} (unusable: exit code {out.returncode})"
    line = first[0]
    m = re.match(r"\S+ version (\S+)", line)
    return f"{path} (version {m.group(1) if m else line})"


def tool_report() -> dict[str, str | None]:
    """Path and version of each external tool, None when absent (for `imageapi doctor`)."""
    try:
        ffmpeg: str | None = _version(ffmpeg_path(), ["-hide_banner", "-version"])
    except ToolError:
        ffmpeg = None
    try:
        probe = ffprobe_path()
    except ToolError:
        probe = None
    exiftool = shutil.which("exiftool")
    return {
        "ffmpeg": ffmpeg,
        "ffprobe": _version(probe, ["-hide_banner", "-version"]) if probe else None,
        "exiftool": _version(exiftool, ["-ver"]) if exiftool else None,
    }


def input_args(path: Path) -> list[str]:
    """`-i` for a local file, safe for any name (no protocol but `file`)."""
    return _input_args(path)


def error_reason(stderr: bytes) -> str:
    """ffmpeg's complaint on stderr in one bounded line."""
    return _reason(stderr)


def _input_args(path: Path) -> list[str]:
    # `file:` stops a name such as "concat:..." or "http:..." being read as a protocol.
    return ["-protocol_whitelist", "file", "-i", "file:" + str(Path(path).absolute())]


def _reason(stderr: bytes) -> str:
    """ffmpeg's complaint in one line, without the "[in#0 @ 0x...]" prefixes."""
    seen: list[str] = []
    for raw in stderr.decode("utf-8", "replace").splitlines():
        line = re.sub(r"^(\[[^\]]*\]\s*)+", "", raw).strip()
        if not line or line.startswith(_NOISE) or line in seen:
            continue
        seen.append(line)
    text = "; ".join(seen[:3]) or "no output"
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


# --------------------------------------------------------------------------------------------
# Probing


@dataclass
class VideoInfo:
    duration: float | None = None       # seconds, to 10 ms
    width: int | None = None            # as stored, before rotation
    height: int | None = None
    rotation: int = 0                   # degrees clockwise to display upright: 0/90/180/270
    video_codec: str | None = None
    audio_codec: str | None = None
    pix_fmt: str | None = None
    frame_rate: float | None = None     # average frames per second
    bit_rate: int | None = None         # whole file, bits/s (to 1000)
    creation_time: str | None = None    # as the container says it (UTC ISO), or None
    local_creation: str | None = None   # Apple com.apple.quicktime.creationdate (local, with offset)
    location: str | None = None         # ISO 6709 string ("+39.0513-094.2887+259.861/") when present
    tags: dict[str, str] = field(default_factory=dict)  # container-level metadata, keys lower-cased


def probe(path: Path, timeout: float = 30.0) -> VideoInfo:
    """What the container and its first real video stream say.

    MediaError when the file is unreadable or not a video (UnsupportedMediaError when it has no
    video stream); ToolError when the tool is missing or times out.
    """
    cmd, json_out = _probe_command(path)
    return _probe_result(json_out, run(cmd, timeout))


async def probe_async(path: Path, timeout: float = 30.0, runner: AsyncRunner | None = None) -> VideoInfo:
    """`probe` for the event loop (through `runner`, `run_async` by default): killed with its task."""
    cmd, json_out = _probe_command(path)
    return _probe_result(json_out, await (runner or run_async)(cmd, timeout))


def _probe_command(path: Path) -> tuple[list[str], bool]:
    """The probing command, and whether it prints ffprobe JSON (else the ffmpeg banner)."""
    probe_exe = ffprobe_path()
    if probe_exe:
        return [probe_exe, "-hide_banner", "-v", "error", "-print_format", "json",
                "-show_format", "-show_streams", *_input_args(path)], True
    return [ffmpeg_path(), "-hide_banner", "-nostdin", *_input_args(path)], False


def _probe_result(json_out: bool, out: subprocess.CompletedProcess[bytes]) -> VideoInfo:
    if json_out:
        if out.returncode != 0:
            raise MediaError(f"not a readable video: {_reason(out.stderr)}")
        try:
            doc = json.loads(out.stdout.decode("utf-8", "replace"))
        except ValueError as exc:
            raise ToolError(f"ffprobe printed invalid JSON: {exc}") from exc
        return parse_ffprobe_json(doc)
    # With no output file ffmpeg always exits non-zero; success is the "Input #0" banner.
    return parse_ffmpeg_banner(out.stderr.decode("utf-8", "replace"))


def _rotation_cw(counterclockwise: float) -> int:
    """A display-matrix angle (counter-clockwise, ffmpeg's sign) as clockwise 0/90/180/270."""
    if not math.isfinite(counterclockwise):
        return 0
    return int(round(-counterclockwise / 90.0)) * 90 % 360


def _tag_rotation(value: str | None) -> int | None:
    """The old `rotate` stream tag (clockwise degrees)."""
    try:
        return int(round(float(value) / 90.0)) * 90 % 360 if value is not None else None
    except ValueError:
        return None


def _null_time(value: str | None) -> str | None:
    if not value:
        return None
    value = value.split(";")[0].strip()  # duplicates are joined with ";" (mvhd + udta)
    if not value or value.startswith(_NULL_TIMES):
        return None
    return value


def _finish(info: VideoInfo) -> VideoInfo:
    tags = info.tags
    info.creation_time = _null_time(tags.get("creation_time"))
    info.local_creation = _null_time(tags.get("com.apple.quicktime.creationdate"))
    info.location = (tags.get("com.apple.quicktime.location.iso6709") or tags.get("location")
                     or tags.get("location-eng") or None)
    return info


def _round_duration(seconds: float) -> float | None:
    # The banner prints hundredths, rounded half up: do the same for ffprobe's microseconds.
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return math.floor(seconds * 100 + 0.5) / 100


# ffprobe JSON


def _fraction(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    num, _, den = value.partition("/")
    try:
        n, d = float(num), float(den or 1)
    except ValueError:
        return None
    return n / d if d and n else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_ffprobe_json(doc: Any) -> VideoInfo:
    """VideoInfo from `ffprobe -print_format json -show_format -show_streams` output."""
    if not isinstance(doc, dict):
        raise MediaError("not a readable video: ffprobe found nothing")
    raw_fmt = doc.get("format")
    fmt: dict[str, Any] = raw_fmt if isinstance(raw_fmt, dict) else {}
    streams = [s for s in doc.get("streams") or [] if isinstance(s, dict)]
    fmt_name = str(fmt.get("format_name") or "")
    if not fmt_name:
        raise MediaError("not a readable video: no container found")
    if _is_image_demuxer(fmt_name):
        raise UnsupportedMediaError(f"not a video: ffprobe reads it as a still image ({fmt_name})")
    info = VideoInfo(tags={str(k).lower(): str(v) for k, v in (fmt.get("tags") or {}).items()})
    try:
        info.duration = _round_duration(float(fmt["duration"]))
    except (KeyError, TypeError, ValueError):
        info.duration = None
    bit_rate = _int(fmt.get("bit_rate"))
    info.bit_rate = bit_rate // 1000 * 1000 if bit_rate else None

    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        raise UnsupportedMediaError("not a video: no video stream")
    video = next((s for s in videos if (s.get("disposition") or {}).get("default")), videos[0])
    info.video_codec = video.get("codec_name") or None
    info.width, info.height = _int(video.get("width")) or None, _int(video.get("height")) or None
    pix = video.get("pix_fmt")
    info.pix_fmt = pix if pix and pix != "unknown" else None
    info.frame_rate = _fraction(video.get("avg_frame_rate")) or _fraction(video.get("r_frame_rate"))
    if info.frame_rate is not None:
        info.frame_rate = round(info.frame_rate, 2)  # as the banner's "29.97 fps"
    rotation = None
    for side in video.get("side_data_list") or []:
        if isinstance(side, dict) and "rotation" in side:
            try:
                rotation = _rotation_cw(float(side["rotation"]))
            except (TypeError, ValueError):
                pass
            break
    if rotation is None:
        rotation = _tag_rotation((video.get("tags") or {}).get("rotate"))
    info.rotation = rotation or 0
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    info.audio_codec = (audio.get("codec_name") or None) if audio else None
    return _finish(info)


# `ffmpeg -i` banner

_INPUT_RE = re.compile(r"^Input #0, (.+?), from ")
_DURATION_RE = re.compile(r"^\s*Duration: (?:(\d+):(\d\d):(\d\d(?:\.\d+)?)|N/A)(.*)$")
_BITRATE_RE = re.compile(r"bitrate: (\d+) kb/s")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (\w+): (.*)$")
_META_RE = re.compile(r"^(\s*)([^:]*?)\s*:(?: (.*))?$")
_MATRIX_RE = re.compile(r"(?:displaymatrix|Display Matrix): rotation of (-?[\d.]+) degrees", re.I)
_SIZE_RE = re.compile(r"^(\d+)x(\d+)(?:\s|$)")
_FPS_RE = re.compile(r"^([\d.]+)(k?) fps$")


@dataclass
class _Block:
    """One stream's lines from the banner."""

    kind: str
    desc: str
    tags: dict[str, str] = field(default_factory=dict)
    side: list[str] = field(default_factory=list)


def _split_top(desc: str) -> list[str]:
    """Split a stream description on commas outside parentheses and brackets."""
    parts: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(desc):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(desc[start:i].strip())
            start = i + 1
    parts.append(desc[start:].strip())
    return parts


def parse_ffmpeg_banner(text: str) -> VideoInfo:
    """VideoInfo from the stderr of `ffmpeg -hide_banner -i FILE` (old and new layouts)."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _INPUT_RE.match(line)), None)
    if start is None:
        raise MediaError(f"not a readable video: {_reason(text.encode())}")
    fmt_name = _INPUT_RE.match(lines[start]).group(1)  # type: ignore[union-attr]
    if _is_image_demuxer(fmt_name):
        raise UnsupportedMediaError(f"not a video: ffmpeg reads it as a still image ({fmt_name})")

    info = VideoInfo()
    blocks: list[_Block] = []
    owner: dict[str, str] = info.tags       # whose "Metadata:" comes next
    section: dict[str, str] | None = None   # where metadata lines go now
    in_side = False
    last_key: str | None = None
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break  # the banner for input #0 is over ("At least one output file...", "Input #1")
        stripped = line.strip()
        m = _DURATION_RE.match(line)
        if m:
            if m.group(1) is not None:
                info.duration = _round_duration(
                    int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3)))
            b = _BITRATE_RE.search(m.group(4) or "")
            info.bit_rate = int(b.group(1)) * 1000 if b else None
            section, in_side = None, False
            continue
        m = _STREAM_RE.match(line)
        if m:
            blocks.append(_Block(m.group(1), m.group(2)))
            owner, section, in_side = blocks[-1].tags, None, False
            continue
        if stripped.startswith(("Chapter #", "Chapters:", "Program ")):
            owner, section, in_side = {}, None, False   # their metadata is not the file's
            continue
        if stripped == "Metadata:":
            section, in_side, last_key = owner, False, None
            continue
        if stripped == "Side data:":
            section, in_side = None, True
            continue
        if in_side and blocks:
            blocks[-1].side.append(stripped)
            continue
        if section is not None:
            mm = _META_RE.match(line)
            if not mm:
                continue
            key, value = mm.group(2).strip().lower(), (mm.group(3) or "").rstrip()
            if not key and last_key is not None:  # a multi-line value continues
                section[last_key] += "\n" + value
            elif key:
                section.setdefault(key, value)
                last_key = key
    _fill_streams(info, blocks)
    return _finish(info)


def _fill_streams(info: VideoInfo, blocks: list[_Block]) -> None:
    videos = [b for b in blocks if b.kind == "Video" and "(attached pic)" not in b.desc]
    if not videos:
        raise UnsupportedMediaError("not a video: no video stream")
    video = next((b for b in videos if b.desc.rstrip().endswith("(default)")), videos[0])
    parts = _split_top(video.desc)
    codec = parts[0].split()[0] if parts[0] else ""
    info.video_codec = codec or None
    for i, part in enumerate(parts[1:], start=1):
        size = _SIZE_RE.match(part)
        if size and info.width is None:
            info.width, info.height = int(size.group(1)), int(size.group(2))
            # The pixel format, when known, is the part just before the size.
            if i >= 2:
                pix = parts[i - 1].split("(")[0].strip()
                info.pix_fmt = pix if pix and pix not in ("none", "unknown") else None
            continue
        fps = _FPS_RE.match(part)
        if fps:
            info.frame_rate = float(fps.group(1)) * (1000 if fps.group(2) else 1)
    rotation = None
    for side in video.side:
        m = _MATRIX_RE.search(side)
        if m:
            rotation = _rotation_cw(float(m.group(1)))
            break
    if rotation is None:
        rotation = _tag_rotation(video.tags.get("rotate"))
    info.rotation = rotation or 0
    audio = next((b for b in blocks if b.kind == "Audio"), None)
    if audio is not None:
        first = _split_top(audio.desc)[0].split()
        info.audio_codec = first[0] if first else None


def _is_image_demuxer(name: str) -> bool:
    names = name.split(",")
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in names)


# --------------------------------------------------------------------------------------------
# Frames


def extract_frame(path: Path, at: float, box: int, timeout: float = 60.0) -> bytes:
    """One JPEG frame at `at` seconds, upright, scaled to fit box x box (never enlarged).

    MediaError when no frame comes out (past the end, undecodable), ToolError on timeout.
    """
    if not math.isfinite(at) or at < 0:
        raise UsageError(f"frame time must be a non-negative number of seconds, not {at!r}")
    if box < 16:
        raise UsageError(f"thumbnail box must be at least 16 pixels, not {box}")
    # ffmpeg autorotates by the display matrix before the filters run (on by default in every
    # version; a bare `-autorotate` is not written: before 7.0 it takes the next word as its value),
    # so the scale sees the upright frame. The first scale squares non-square pixels (anamorphic
    # DV, some phones).
    vf = (f"scale='trunc(if(gt(sar,0),iw*sar,iw))':'ih',setsar=1,"
          f"scale='min(iw,{box})':'min(ih,{box})':force_original_aspect_ratio=decrease,"
          # Full-range 8-bit 4:2:0 is what the JPEG encoder takes from any source (10-bit HDR,
          # TV range); fixing it here also keeps an empty run quiet instead of failing to open it.
          f"format=yuvj420p")
    cmd = [
        ffmpeg_path(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-ss", f"{at:.3f}", *_input_args(path),
        "-map", "0:V:0",  # the first real video stream, never cover art
        "-an", "-sn", "-dn", "-frames:v", "1", "-vf", vf,
        "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "3", "pipe:1",
    ]
    out = run(cmd, timeout)
    data = out.stdout
    if not data.startswith(b"\xff\xd8"):
        reason = _reason(out.stderr) if out.stderr.strip() else "the video ends before that"
        raise MediaError(f"no frame at {at:g}s: {reason}")
    return data
