"""A real run of every kind of ffmpeg command imageapi builds, on a clip made for the purpose: what
`imageapi doctor` runs to say whether video works with the ffmpeg in use, and if not, which step
fails with ffmpeg's own message."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imageapi.core import ffmpeg, ffmpeg_caps
from imageapi.core.errors import ImageapiError, MediaError

STEP_TIMEOUT = 60.0


@dataclass
class SmokeResult:
    ok: bool
    steps: list[str]            # the steps that passed, in order
    failed: str | None = None   # the step that failed
    message: str | None = None  # why (ffmpeg's complaint)


def _check_run(cmd: list[str], cwd: Path | None = None) -> None:
    out = ffmpeg.run(cmd, STEP_TIMEOUT, cwd=cwd)
    if out.returncode != 0:
        raise MediaError(f"exit code {out.returncode}: {ffmpeg.error_reason(out.stderr)}")


def smoke_test() -> SmokeResult:
    """Make a 1 s H.264/AAC clip, probe it, take a frame as thumbnails do, remux it into HLS
    segments as copy mode does and transcode it as the other mode does, and make a preview clip
    and GIF as the video wall does."""
    from imageapi.core import hls, previews

    result = SmokeResult(True, [])
    with tempfile.TemporaryDirectory(prefix="imageapi-doctor-") as tmp_dir:
        tmp = Path(tmp_dir)
        clip = tmp / "clip.mp4"
        hls_dir = tmp / "hls"
        hls_dir.mkdir()

        def make_clip() -> None:
            exe = ffmpeg.ffmpeg_path()
            _check_run([exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                        "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=1",
                        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1",
                        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
                        "-c:a", "aac", "-shortest", str(clip)])

        def probe() -> None:
            info = ffmpeg.probe(clip, STEP_TIMEOUT)
            if info.video_codec != "h264" or not info.duration or abs(info.duration - 1.0) > 0.2:
                raise MediaError(f"read back as {info.video_codec} of {info.duration} s, not h264 of 1 s")

        def frame() -> None:
            data = ffmpeg.extract_frame(clip, 0.5, 64, STEP_TIMEOUT)
            if not data.startswith(b"\xff\xd8"):
                raise MediaError("no JPEG came out")

        def segments(plan: hls.Plan) -> None:
            out = hls_dir / plan.variant
            out.mkdir()
            _check_run(hls.segment_command(clip, plan), cwd=out)
            made = sorted(p.name for p in out.iterdir())
            if hls.PLAYLIST not in made or hls.INIT not in made or not any(n.endswith(".m4s") for n in made):
                raise MediaError(f"the playlist or a segment is missing: {', '.join(made) or 'nothing'} written")

        def remux() -> None:
            segments(hls.Plan("copy", "copy", "copy", "h264"))

        def transcode() -> None:
            segments(hls.Plan("h264", "encode", "encode", "h264"))

        def preview() -> None:
            dest, gif = tmp / "preview.mp4", tmp / "preview.gif"
            _check_run(previews.clip_command(clip, previews.sample_windows(1.0), dest))
            _check_run(previews.gif_command(dest, gif))
            if dest.stat().st_size == 0 or gif.stat().st_size == 0:
                raise MediaError("an empty preview clip or GIF")

        steps = (("make a 1 s clip (libx264, aac)", make_clip), ("probe it", probe),
                 ("take a frame (thumbnails)", frame), ("remux into HLS segments (copy mode)", remux),
                 ("transcode into HLS segments (other codecs, rotated videos)", transcode),
                 ("make a preview clip and GIF (video wall)", preview))
        for name, step in steps:
            try:
                step()
            except (ImageapiError, OSError) as exc:
                message = exc.message if isinstance(exc, ImageapiError) else str(exc)
                return SmokeResult(False, result.steps, name, message)
            result.steps.append(name)
    return result


def describe() -> tuple[str, str]:
    """The ffmpeg in use in one line (path, version, where it comes from), and the same for ffprobe."""
    path = ffmpeg.ffmpeg_path()
    source = ("IMAGEAPI_FFMPEG" if os.environ.get("IMAGEAPI_FFMPEG")
              else "PATH" if shutil.which("ffmpeg") == path else "imageio-ffmpeg package")
    line = f"{path} (version {ffmpeg_caps.version(path)}, from {source})"
    probe = ffmpeg.ffprobe_path()
    if probe is None:
        chosen = (os.environ.get("IMAGEAPI_FFPROBE") or "").strip().lower() == "none"
        probe_line = ("none (IMAGEAPI_FFPROBE=none)" if chosen else "not found") + \
            ": video facts are read from `ffmpeg -i` instead"
    else:
        probe_line = f"{probe} (version {ffmpeg_caps.version(probe)})"
    return line, probe_line
