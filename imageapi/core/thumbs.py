"""Upright JPEG renditions of any indexed media, and thumbnails written atomically next to a sentinel.

`render` turns an image, HEIC/HEIF/AVIF, RAW (through its embedded preview) or video (one frame)
into a JPEG that fits a square box, orientation applied, never upscaled. It is used for the
library's thumbnails, for the server's larger previews and for face detection.
`make_thumbnail` writes one such rendition to disk and reports the outcome as a `ThumbResult`.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import pillow_heif
from PIL import Image

from imageapi.core.errors import ImageapiError, MediaError, ToolError, UnsupportedMediaError, UsageError
from imageapi.core.libraries import sentinel_path
from imageapi.core.media import ThumbResult

# HEIF/HEIC through libheif. Its Pillow plugin applies irot/imir itself and resets the EXIF
# orientation to 1, and its `draft` picks an embedded thumbnail at least as large as asked.
pillow_heif.register_heif_opener()

# What Pillow may open for an image, HEIC or a RAW preview. A closed list keeps exotic plugins
# (EPS runs Ghostscript in a subprocess, with no timeout) away from untrusted files. A file's
# content, not its name, picks the decoder: Google Takeout's ".HEIC" files are often JPEGs.
# ("JPEG" also opens multi-picture JPEGs, whose format then reads "MPO".)
RASTER_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")
JPEG_FORMATS = ("JPEG", "MPO")

# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
ORIENTATION_TAG = 0x0112

VIDEO_FRAME_AT = 3.0      # seconds into a clip; shorter clips use their middle
VIDEO_TIMEOUT = 60.0      # per ffmpeg/ffprobe call
BACKGROUND = (255, 255, 255)  # what transparent pixels become in a JPEG
TEMP_NAME_RE = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{8}$", re.DOTALL)
TEMP_NAME_KEEP = 200      # bytes of the thumbnail's name kept in its temporary name


@dataclass(frozen=True)
class Rendered:
    jpeg: bytes
    width: int
    height: int


def render(
    src: Path,
    kind: str,
    box: int,
    *,
    data: bytes | None = None,
    duration: float | None = None,
    quality: int = 85,
) -> Rendered:
    """An upright JPEG of `src` fitting box x box, never upscaled.

    `data` is the file's content when the caller already read it (the file is then not reread,
    except for videos, which ffmpeg reads itself). `duration` (videos) saves a probe.
    Raises UnsupportedMediaError when the content gives no picture, MediaError when the file cannot
    be read, ToolError when an external tool times out or fails to run, UsageError for bad arguments.
    """
    if box < 1:
        raise UsageError(f"thumbnail box must be at least 1 pixel, not {box}")
    if not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be 1..100, not {quality}")
    if kind in ("image", "heic"):
        with _content_errors(src), _source(src, data) as fp:
            im, size, orientation = _open_raster(fp, box)
            return _finish(im, size, orientation, quality)
    if kind == "raw":
        return _render_raw(src, data, box, quality)
    if kind == "video":
        return _render_video(src, box, duration, quality)
    raise UsageError(f"unknown media kind {kind!r}")


def make_thumbnail(
    src: Path,
    kind: str,
    dest: Path,
    box: int = 400,
    *,
    data: bytes | None = None,
    duration: float | None = None,
) -> ThumbResult:
    """Render `src` and write the JPEG to `dest` atomically. Never raises for bad content.

    done: dest written, a stale sentinel removed. unsupported: the zero-byte sentinel
    `<dest>.unsupported` written and a stale dest removed. failed (something transient: a timeout,
    a read or write error, memory): nothing changed on disk, a later run retries.
    """
    sentinel = sentinel_path(dest)
    try:
        rendered = render(src, kind, box, data=data, duration=duration)
    except UsageError:
        raise  # a caller's bug, not the file's
    except UnsupportedMediaError as exc:
        return _mark_unsupported(dest, sentinel, exc.message, kind)
    except (MediaError, ToolError) as exc:
        return ThumbResult("failed", exc.message)
    except MemoryError:
        return ThumbResult("failed", "out of memory while rendering")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, rendered.jpeg)
        _remove_sentinel(sentinel)
    except OSError as exc:
        return ThumbResult("failed", f"cannot write thumbnail {dest}: {exc.strerror or exc}")
    return ThumbResult("done", None, rendered.width, rendered.height)


def _remove_sentinel(sentinel: Path) -> None:
    """Remove a stale sentinel. A source name near NAME_MAX leaves no room for the ".unsupported"
    suffix: that sentinel cannot exist, and the thumbnail itself is fine."""
    try:
        sentinel.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise


def temp_name(dest: Path) -> Path:
    """A temporary name next to `dest`: hidden, recognisable (".<name>.tmp-<pid>-<random>") and
    never ending with dest's own name, so a scan or cleanup can never take it for a thumbnail."""
    name = dest.name
    if len(os.fsencode(name)) > TEMP_NAME_KEEP:
        # A source name near NAME_MAX (255 bytes) still gets its thumbnail: the temporary name
        # keeps only the start of it (possibly cut inside a character: names are bytes).
        name = os.fsdecode(os.fsencode(name)[:TEMP_NAME_KEEP])
    return dest.with_name(f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of temp_name's: left behind only when a process was killed
    while writing, safe to delete once no scan is running."""
    return TEMP_NAME_RE.match(name) is not None


def write_atomic(dest: Path, payload: bytes) -> None:
    """Write a temporary file in dest's folder, then rename it over dest: a reader (or a kill -9)
    sees the old file or the complete new one, never a truncated one. The temporary file is
    removed when anything fails."""
    tmp = temp_name(dest)
    try:
        with open(tmp, "xb") as fh:
            _write_all(fh, payload)
        os.replace(tmp, dest)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


def _write_all(fh: IO[bytes], payload: bytes) -> None:
    fh.write(payload)


def _mark_unsupported(dest: Path, sentinel: Path, reason: str, kind: str) -> ThumbResult:
    from imageapi.core.ffmpeg_caps import thumb_tools

    try:
        sentinel.parent.mkdir(parents=True, exist_ok=True)
        sentinel.touch()
        with suppress(FileNotFoundError):
            dest.unlink()
    except OSError as exc:
        return ThumbResult("failed", f"{reason}; cannot write {sentinel}: {exc.strerror or exc}")
    # The tools it was tried with: a sentinel is not forever when they change.
    return ThumbResult("unsupported", reason, tool=thumb_tools(kind))


@contextmanager
def _content_errors(src: Path) -> Iterator[None]:
    """Turn what a decoder raises on untrusted content into the core's errors.

    Pillow and libheif raise many types on broken files (OSError without errno, SyntaxError,
    ValueError, struct.error, EOFError, DecompressionBombError, ...), so everything is caught here;
    an OSError with an errno is a real read error of the file and stays retryable."""
    try:
        yield
    except (ImageapiError, MemoryError):
        raise
    except OSError as exc:
        if exc.errno is not None:
            raise MediaError(f"cannot read {src}: {exc.strerror or exc}") from exc
        raise UnsupportedMediaError(f"{src.name}: no picture: {exc}") from exc
    except Exception as exc:
        raise UnsupportedMediaError(f"{src.name}: no picture: {type(exc).__name__}: {exc}") from exc


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of width x height scaled down to fit box x box (unchanged when it already fits)."""
    if width <= box and height <= box:
        return width, height
    if width >= height:
        return box, max(1, round(height * box / width))
    return max(1, round(width * box / height)), box


@contextmanager
def _source(src: Path, data: bytes | None) -> Iterator[IO[bytes]]:
    """The file's bytes as a seekable binary file: the caller's copy, or the file itself."""
    if data is not None:
        yield io.BytesIO(data)
        return
    with open(src, "rb") as fh:
        yield fh


def _open_raster(fp: IO[bytes], box: int) -> tuple[Image.Image, tuple[int, int], int]:
    """Open an image and prepare the cheapest decode that still gives the fitted size:
    JPEG's DCT-domain scaling (1/2, 1/4, 1/8), or a HEIF's embedded thumbnail.
    Returns the image, the fitted size (from the full size: the draft's is rounded up) and the
    orientation to apply."""
    im = Image.open(fp, formats=RASTER_FORMATS)
    if im.format in ("HEIF", "AVIF") and bmff_truncated(fp):
        # libheif paints the tiles of a cut file green instead of failing: refuse it here.
        raise UnsupportedMediaError("truncated HEIF/AVIF file: its last box runs past the end")
    orientation = _orientation(im)
    size = fit(*im.size, box)
    # Ask for the final fitted size: the scale chosen is the largest that stays >= it
    # (Image.thumbnail would ask for twice the box and decode at 1/4 instead of 1/8).
    im.draft("RGB" if im.format in JPEG_FORMATS else None, size)
    return im, size, orientation


def bmff_truncated(fp: IO[bytes]) -> bool:
    """Whether an ISO BMFF file (HEIF, AVIF, MP4) is cut short: a top-level box claims more bytes
    than the file has, or a box header is incomplete. Reads only the box headers."""
    here = fp.tell()
    try:
        end = fp.seek(0, os.SEEK_END)
        pos = 0
        while pos < end:
            fp.seek(pos)
            header = fp.read(16)
            if len(header) < 8:
                return True
            size = int.from_bytes(header[0:4], "big")
            if size == 1:  # 64-bit size after the type
                if len(header) < 16:
                    return True
                size = int.from_bytes(header[8:16], "big")
                if size < 16:
                    return True
            elif size == 0:  # the box runs to the end of the file
                return False
            elif size < 8:
                return True
            pos += size
        return pos > end
    finally:
        fp.seek(here)


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation, 1 when absent, out of range or unreadable (malformed EXIF is common
    and must cost the orientation only, never the picture)."""
    try:
        value = im.getexif().get(ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    except Exception:
        return 1


def _finish(im: Image.Image, size: tuple[int, int], orientation: int, quality: int) -> Rendered:
    """Decode (as prepared), flatten to RGB or L, resize to `size`, orient and encode."""
    im.load()
    icc = im.info.get("icc_profile")
    im = _flatten(im)
    if size != im.size:
        # reducing_gap: a cheap integer reduce first when the image is still far above the
        # target (non-JPEG sources, which had no DCT scaling); Lanczos does the final step.
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orientation in TRANSPOSES:
        im = im.transpose(TRANSPOSES[orientation])
    out = io.BytesIO()
    extra = {"icc_profile": icc} if _icc_matches(icc, im.mode) else {}
    im.save(out, "JPEG", quality=quality, optimize=False, **extra)
    return Rendered(out.getvalue(), im.width, im.height)


def _icc_matches(icc: object, mode: str) -> bool:
    """Keep a colour profile (Display P3 from phones, Adobe RGB from cameras) only when it
    describes the pixels written: its colour space signature sits at bytes 16..20."""
    if not isinstance(icc, bytes) or len(icc) < 128:
        return False
    return icc[16:20] == (b"RGB " if mode == "RGB" else b"GRAY")


def _flatten(im: Image.Image) -> Image.Image:
    """RGB or L, what a JPEG holds: alpha composited on white, 16-bit and float scaled to 8 bits,
    palettes, CMYK and other colour spaces converted."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I;16"):
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    if mode in ("I", "F"):
        return _scale_to_l(im)
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return im.convert("RGB")


def _scale_to_l(im: Image.Image) -> Image.Image:
    """32-bit integer or float greyscale to 8 bits: 16-bit ranges (PNG, TIFF) as 16 bits, floats in
    0..1 as such, anything else stretched from its own extremes."""
    lo, hi = cast(tuple[float, float], im.getextrema())  # one band: (min, max)
    if im.mode == "I" and 0 <= lo and hi <= 255:
        return im.convert("L")
    if im.mode == "I" and 0 <= lo and hi <= 65535:
        return im.point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "F" and 0 <= lo and hi <= 1.0:
        return im.point(lambda v: v * 255).convert("L")
    span = float(hi - lo) or 1.0
    return im.convert("F").point(lambda v: (v - lo) * (255 / span)).convert("L")


def _render_raw(src: Path, data: bytes | None, box: int, quality: int) -> Rendered:
    """A RAW's largest valid embedded JPEG preview, decoded at the smallest DCT scale that fits,
    turned by the RAW's own orientation (the preview's EXIF, if any, is not the RAW's)."""
    from imageapi.core import raw

    with _content_errors(src):
        preview = raw.extract_preview(src, data)
        im = Image.open(io.BytesIO(preview.jpeg), formats=("JPEG",))
        size = fit(*im.size, box)
        im.draft("RGB", size)
        orientation = preview.orientation if 1 <= preview.orientation <= 8 else 1
        return _finish(im, size, orientation, quality)


def _render_video(src: Path, box: int, duration: float | None, quality: int) -> Rendered:
    """One frame at the 3 s mark (the middle of shorter clips), upright and fitted by ffmpeg.
    ffmpeg's JPEG is kept as it is (no second lossy pass) unless it is larger than asked."""
    from imageapi.core import ffmpeg

    try:
        os.stat(src)  # a vanished or unreadable file is retryable, not unsupported
    except OSError as exc:
        raise MediaError(f"cannot read {src}: {exc.strerror or exc}") from exc
    # The file is there, so a MediaError from ffmpeg means its content gives no frame.
    try:
        if duration is None:
            duration = ffmpeg.probe(src, VIDEO_TIMEOUT).duration
        at = min(VIDEO_FRAME_AT, duration / 2) if duration and duration > 0 else 0.0
        try:
            frame = ffmpeg.extract_frame(src, at, box, VIDEO_TIMEOUT)
        except MediaError:
            if at <= 0:
                raise
            # Container durations lie (broken muxers, cut files): the first frame then.
            frame = ffmpeg.extract_frame(src, 0.0, box, VIDEO_TIMEOUT)
    except UnsupportedMediaError:
        raise
    except MediaError as exc:
        raise UnsupportedMediaError(f"{src.name}: no video frame: {exc.message}") from exc
    with _content_errors(src):
        im = Image.open(io.BytesIO(frame), formats=("JPEG",))
        if im.width <= box and im.height <= box:
            return Rendered(frame, im.width, im.height)
        return _finish(im, fit(*im.size, box), 1, quality)
