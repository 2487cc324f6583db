"""Metadata of one file: EXIF (exifread), XMP, HEIC (pillow-heif), RAW containers and videos (ffmpeg).

RAW formats that keep the camera's records outside EXIF (Canon CIFF/CRW, Sigma X3F, Kyocera; the
sizes of Minolta MRW) are read by rawformats.py; their values count after EXIF's.

The container is recognised by its content, not its name, and each source is read on its own:
a broken EXIF block costs that block (recorded in Metadata.warnings), not the XMP next to it nor
the pixel size. Stills never raise for bad content. Videos raise MediaError when ffmpeg cannot read
them (the caller records it), ToolError when ffmpeg is missing or times out.

Pixel size follows exiftool's ImageWidth/ImageHeight: the JPEG frame header (not EXIF's
ExifImageWidth), the HEIF primary image as stored (before its irot), and for TIFF-based files the
IFD marked as the full-resolution image (NewSubfileType 0) if any, else the first IFD that gives a
size (IFD0 for CR2 and plain TIFFs, the raw SubIFD for NEF and DNG).
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import math
import mmap
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

import exifread

from imageapi.core import rawformats, xmp
from imageapi.core.media import Metadata
from imageapi.core.tiff import Ifd, TiffFile

Buffer = bytes | bytearray | memoryview | mmap.mmap

MAX_WARNINGS = 12
MAX_IFD_CHAIN = 16        # IFD0, IFD1, ... handed to exifread (multi-page TIFFs have more; IFD0 says it all)
MAX_IFD_ENTRIES = 512     # a real IFD has a few dozen; a corrupt count makes exifread loop 65535 times
MAX_VALUES = 64           # numbers in one entry worth decoding (GPS triples, lens specs, ...)
MAX_TEXT = 4096           # bytes of one text entry
MAX_JPEG_SEGMENTS = 512

# TIFF tags
T_MAKE, T_MODEL, T_ORIENTATION, T_XMP = 0x010F, 0x0110, 0x0112, 0x02BC
T_EXPOSURE, T_FNUMBER, T_ISO, T_REI, T_ISO_SPEED = 0x829A, 0x829D, 0x8827, 0x8832, 0x8833
T_ORIGINAL, T_DIGITIZED = 0x9003, 0x9004
T_OFFSET, T_OFFSET_ORIGINAL, T_OFFSET_DIGITIZED = 0x9010, 0x9011, 0x9012
T_FOCAL, T_LENS = 0x920A, 0xA434
T_EXIF_IFD, T_GPS_IFD, T_INTEROP_IFD = 0x8769, 0x8825, 0xA005
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON, GPS_ALT_REF, GPS_ALT = 1, 2, 3, 4, 5, 6

# exifread names tags "<IFD> <Tag>"; these IFDs are the ones we use.
_GROUPS = {"Image": "ifd0", "EXIF": "exif", "GPS": "gps"}

# XMP dates in order of preference as the capture date, and the ones that may lend their UTC
# offset to an EXIF date showing the same wall-clock time.
XMP_DATE_KEYS = ("exif:DateTimeOriginal", "xmp:CreateDate", "exif:DateTimeDigitized", "photoshop:DateCreated")

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1",
                          b"avif", b"avis", b"mif2"})
RAF_MAGIC = b"FUJIFILMCCD-RAW"


# --------------------------------------------------------------------------------------------
# exifread's log lines are about the file's content: collect them as warnings of the current call
# (per thread) instead of letting them reach the application's logging or stderr.


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        sink: list[str] | None = getattr(self.local, "sink", None)
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.append(f"exifread: {record.getMessage()}")

    @contextlib.contextmanager
    def collecting(self, sink: list[str]) -> Iterator[None]:
        previous = getattr(self.local, "sink", None)
        self.local.sink = sink
        try:
            yield
        finally:
            self.local.sink = previous


_collector = _LogCollector()
_exifread_log = logging.getLogger("exifread")
_exifread_log.addHandler(_collector)
_exifread_log.propagate = False


# --------------------------------------------------------------------------------------------
# What was found in the file, before it becomes Metadata


@dataclass
class _Found:
    tags: dict[tuple[str, int], Any] = field(default_factory=dict)   # (group, tag id) -> IfdTag
    xmp: dict[str, str] = field(default_factory=dict)
    size: tuple[int, int] | None = None
    container: rawformats.Container | None = None   # MRW, CIFF, X3F, Kyocera records
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)

    def add_exif(self, blob: Buffer, label: str, remap: str | None = None) -> None:
        """The EXIF tags of a TIFF-structured blob. `remap` renames IFD0 (CR3's CMT2 is the EXIF
        IFD and CMT4 the GPS IFD, each stored as a TIFF whose IFD0 it is)."""
        found: dict[str, Any] = {}
        sink: list[str] = []
        try:
            with _collector.collecting(sink):
                found = exifread.process_file(_exifread_input(blob), details=False, extract_thumbnail=False)
        except Exception as exc:  # exifread has crashed on malformed EXIF before (corpus bad/)
            self.warn(f"{label}: unreadable EXIF ({type(exc).__name__}: {exc})")
        for message in sink:
            self.warn(f"{label}: {message}")
        for name, tag in found.items():
            ifd, _, _ = name.partition(" ")
            group = _GROUPS.get(ifd)
            if group is None or not hasattr(tag, "tag"):
                continue
            if remap is not None and group == "ifd0":
                group = remap
            self.tags.setdefault((group, int(tag.tag)), tag)

    def add_xmp(self, packet: bytes | str | None, label: str) -> None:
        if not packet:
            return
        try:
            values = xmp.parse(packet)
        except Exception as exc:  # a parser bug must not cost the rest
            self.warn(f"{label}: unreadable XMP ({type(exc).__name__})")
            return
        for key, value in values.items():
            self.xmp.setdefault(key, value)

    def get(self, tag: int, *groups: str) -> Any:
        for group in groups:
            found = self.tags.get((group, tag))
            if found is not None:
                return found
        return None


# --------------------------------------------------------------------------------------------
# Public entry point


def read_metadata(path: Path, kind: str, data: bytes | None = None) -> Metadata:
    """Metadata of the file at `path` of `kind` (image, heic, raw, video).

    `data` is the whole file when the caller already read it. Stills never raise: problems become
    Metadata.warnings. Videos raise MediaError (unreadable, not a video) or ToolError.
    """
    if kind == "video":
        return _video_metadata(Path(path))
    found = _Found()
    try:
        with _buffer(Path(path), data) as buf:
            _read_still(buf, kind, found)
    except OSError as exc:
        found.warn(f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # hostile content must cost the metadata, never the scan
        found.warn(f"metadata reader failed: {type(exc).__name__}: {exc}")
    return _to_metadata(found)


@contextlib.contextmanager
def _buffer(path: Path, data: bytes | None) -> Iterator[Buffer]:
    if data is not None:
        yield data
        return
    with open(path, "rb") as f:
        try:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            yield b""
            return
        try:
            yield mm
        finally:
            mm.close()


def _sniff(buf: Buffer) -> str:
    head = bytes(buf[:16])
    if head.startswith(b"\xff\xd8"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00"):
        return "tiff"
    if head.startswith(RAF_MAGIC):
        return "raf"
    if rawformats.sniff(buf) is not None:
        return "rawformats"
    if head[4:8] == b"ftyp":
        if head[8:12] == b"crx ":
            return "cr3"
        if head[8:12] in _HEIF_BRANDS or _has_heif_brand(buf):
            return "heif"
        return "isobmff"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head[:4] == b"RIFF" and head[8:12] == b"WEBP" \
            or head[:6] in (b"GIF87a", b"GIF89a") or head[:2] == b"BM":
        return "pillow"
    return "unknown"


def _has_heif_brand(buf: Buffer) -> bool:
    size = struct.unpack(">I", bytes(buf[:4]))[0]
    brands = bytes(buf[16:min(size, 256, len(buf))])
    return any(brands[i:i + 4] in _HEIF_BRANDS for i in range(0, len(brands) - 3, 4))


def _read_still(buf: Buffer, kind: str, found: _Found) -> None:
    if len(buf) == 0:
        found.warn("empty file")
        return
    container = _sniff(buf)
    if container == "jpeg":
        _read_jpeg(buf, found, "JPEG")
    elif container == "tiff":
        _read_tiff(buf, found)
    elif container == "heif":
        _read_heif(buf, found)
    elif container in ("cr3", "raf"):
        _read_raw_container(buf, container, found)
    elif container == "rawformats":
        _read_other_raw(buf, found)
    elif container == "pillow":
        _read_with_pillow(buf, found)
    elif container == "isobmff":
        found.warn("an ISO media file (a video?) where a still image was expected")
    else:
        found.warn(f"unrecognised content for a {kind} file: {bytes(buf[:8])!r}")


# --------------------------------------------------------------------------------------------
# Containers


def _read_jpeg(buf: Buffer, found: _Found, label: str) -> None:
    exif_done = False
    for marker, payload in _jpeg_segments(buf, found):
        if marker == 0xE1 and not exif_done and payload[:4] == b"Exif":
            exif_done = True
            found.add_exif(payload[6:], label)
        elif marker == 0xE1:
            found.add_xmp(xmp.packet_from_jpeg_app1(payload), label)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and found.size is None:
            if len(payload) >= 5:
                height, width = struct.unpack(">HH", payload[1:5])
                if width and height:
                    found.size = (width, height)


def _jpeg_segments(buf: Buffer, found: _Found) -> Iterator[tuple[int, bytes]]:
    """(marker, payload) of the header segments, up to the first scan."""
    pos, end = 2, len(buf)
    for _ in range(MAX_JPEG_SEGMENTS):
        while pos < end and buf[pos] == 0xFF and pos + 1 < end and buf[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > end or buf[pos] != 0xFF:
            if pos < end:
                found.warn("JPEG: broken segment structure")
            return
        marker = buf[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            return
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2:
            found.warn("JPEG: broken segment length")
            return
        payload = bytes(buf[pos + 4:pos + 2 + length])
        yield marker, payload
        if pos + 2 + length > end:
            found.warn("JPEG: file ends inside its headers")
            return
        pos += 2 + length


def _exif_tiff(blob: Buffer) -> TiffFile | None:
    """The TIFF structure of an EXIF blob or TIFF file, read leniently: any magic number, and IFDs
    with no or too many entries are kept, as exifread reads them (see tiff.py)."""
    return TiffFile.parse(blob, lenient=True)


def _tiff_size(tf: TiffFile | None) -> tuple[int, int] | None:
    """exiftool's ImageWidth/ImageHeight: the full-resolution IFD's, else the first IFD's."""
    return _size_of(tf.walk(MAX_IFD_CHAIN)) if tf is not None else None


def _size_of(ifds: list[Ifd]) -> tuple[int, int] | None:
    first: tuple[int, int] | None = None
    for ifd in ifds:
        size = ifd.dimensions()
        if size is None:
            continue
        if ifd.is_full_resolution():
            return size
        if first is None:
            first = size
    return first


def _taming_patches(blob: Buffer) -> dict[int, bytes]:
    """Byte patches that keep exifread fast on hostile structure, which it trusts: an IFD chain
    cut after MAX_IFD_CHAIN, entry counts capped at MAX_IFD_ENTRIES, long text capped, and long
    numeric arrays (never a value we use; exifread decodes up to 999 values each) turned into a
    type it skips. Applied to the IFDs exifread reads: the chain, EXIF, GPS and Interop IFDs."""
    tf = _exif_tiff(blob)
    if tf is None:
        return {}
    patches: dict[int, bytes] = {}
    end = tf.endian

    def tame(ifd: Ifd, next_value: int | None) -> list[int]:
        count = min(ifd.count, MAX_IFD_ENTRIES)
        if ifd.count > count:
            patches[ifd.offset] = struct.pack(end + "H", count)
            if next_value is None:
                next_value = ifd.next_offset  # exifread looks for it after the entries it reads
        after = ifd.offset + 2 + 12 * count
        if next_value is not None and after + 4 <= tf.size:
            patches[after] = struct.pack(end + "I", next_value)
        pointers: list[int] = []
        for pos, tag, typ, n in ifd.slots(count):
            if typ == 2 and n > MAX_TEXT:
                patches[pos + 4] = struct.pack(end + "I", MAX_TEXT)
            elif typ != 2 and n > MAX_VALUES:
                patches[pos + 2] = struct.pack(end + "H", 0)  # "proprietary": skipped
            elif tag in (T_EXIF_IFD, T_GPS_IFD, T_INTEROP_IFD) and n >= 1:
                target = ifd.first(tag)   # exifread follows the first value, whatever its type
                if target:
                    pointers.append(ifd.tiff.base + target)
        return pointers

    chain = tf.chain(limit=MAX_IFD_CHAIN)
    queue: list[int] = []
    for i, ifd in enumerate(chain):
        last = i == len(chain) - 1
        queue.extend(tame(ifd, 0 if last and ifd.next_offset else None))
    for _ in range(64):
        if not queue:
            break
        sub = tf.ifd(queue.pop(0))
        if sub is not None:
            queue.extend(tame(sub, None))
    return patches


class _Overlay(io.RawIOBase):
    """A read-only file over a buffer with a few byte patches laid on top (no copy of the data)."""

    def __init__(self, buf: Buffer, patches: dict[int, bytes]) -> None:
        super().__init__()
        self.buf, self.pos = buf, 0
        self.patches = sorted(patches.items())
        self.starts = [p for p, _ in self.patches]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: len(self.buf)}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int | None = -1) -> bytes:
        start = self.pos
        stop = len(self.buf) if size is None or size < 0 else min(len(self.buf), start + size)
        if stop <= start:
            return b""
        chunk = bytearray(self.buf[start:stop])
        # Patches are at most 4 bytes long: only those starting from start - 3 can overlap.
        for i in range(bisect.bisect_left(self.starts, start - 3), len(self.patches)):
            at, value = self.patches[i]
            if at >= stop:
                break
            for j, byte in enumerate(value):
                if start <= at + j < stop:
                    chunk[at + j - start] = byte
        self.pos = stop
        return bytes(chunk)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _exifread_input(blob: Buffer) -> BinaryIO:
    patches = _taming_patches(blob)
    if not patches and isinstance(blob, bytes):
        return io.BytesIO(blob)  # shares the bytes, no copy
    return cast(BinaryIO, _Overlay(blob, patches))


def _read_tiff(buf: Buffer, found: _Found) -> None:
    tf = _exif_tiff(buf)
    ifds = tf.walk(MAX_IFD_CHAIN) if tf is not None else []
    found.size = _size_of(ifds)
    if ifds:  # the walk starts with IFD0
        found.add_xmp(ifds[0].raw(T_XMP), "TIFF XMP")
    found.add_exif(buf, "TIFF")


def _read_heif(buf: Buffer, found: _Found) -> None:
    try:
        import pillow_heif

        heif = pillow_heif.open_heif(io.BytesIO(buf) if not isinstance(buf, bytes) else buf)
        info = heif.info
        width, height = heif.size
        # pillow-heif reports the size after the primary image's irot; exiftool (and
        # Metadata.width/height) mean the stored one.
        primary = heif[heif.primary_index] if hasattr(heif, "primary_index") else None
        transforms = getattr(getattr(primary, "_c_image", None), "transformations", ()) or ()
        if any(t[0] == "irot" and t[1] in (90, 270) for t in transforms if isinstance(t, tuple) and len(t) > 1):
            width, height = height, width
        found.size = (width, height)
        blob = info.get("exif")
        if blob:
            found.add_exif(_tiff_start(bytes(blob)), "HEIF")
        found.add_xmp(info.get("xmp"), "HEIF XMP")
        return
    except Exception as exc:  # truncated or odd files: let exifread's own HEIF reader try
        found.warn(f"HEIF: {type(exc).__name__}: {exc}")
    found.add_exif(buf, "HEIF")


def _tiff_start(blob: bytes) -> bytes:
    """The TIFF header inside a HEIF/PNG EXIF blob ("Exif\\0\\0" prefix, or an offset before it)."""
    for magic in (b"II*\x00", b"MM\x00*"):
        pos = blob.find(magic, 0, 64)
        if pos >= 0:
            return blob[pos:]
    return blob


def _read_raw_container(buf: Buffer, container: str, found: _Found) -> None:
    try:
        from imageapi.core.raw import container_tiff_blobs
    except ImportError:
        found.warn(f"{container.upper()}: no reader for this RAW container (imageapi.core.raw missing)")
        return
    blobs = container_tiff_blobs(bytes(buf))
    if not blobs:
        found.warn(f"{container.upper()}: no metadata blocks found")
    for name, blob in blobs:
        if name == "RAF-JPEG":
            _read_jpeg(blob, found, "RAF JPEG")
        elif name == "CMT1":
            found.add_exif(blob, name)
            if found.size is None:
                found.size = _tiff_size(_exif_tiff(blob))
        elif name == "CMT2":
            found.add_exif(blob, name, remap="exif")
        elif name == "CMT4":
            found.add_exif(blob, name, remap="gps")


def _read_other_raw(buf: Buffer, found: _Found) -> None:
    """MRW (its TTW block is a TIFF with the EXIF), CIFF, X3F (records of its own, and the EXIF
    of its preview in later models) and Kyocera RAW."""
    box = rawformats.read(buf)
    if box is None:
        return
    found.container = box
    if box.width and box.height:
        found.size = (box.width, box.height)
    for name, blob in rawformats.metadata_blobs(buf, box):
        if name == "MRW-TTW":
            found.add_exif(blob, "MRW TTW")
            if found.size is None:
                found.size = _tiff_size(_exif_tiff(blob))
        elif name == "X3F-JPEG":
            _read_jpeg(blob, found, "X3F JPEG")
    if not (box.make or box.model or box.taken_at or found.tags):
        found.warn(f"{box.format}: no camera records found")


def _read_with_pillow(buf: Buffer, found: _Found) -> None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(buf)) as im:
            found.size = im.size
            info = dict(im.info)
    except Exception as exc:  # includes DecompressionBombError: the header lies or is huge
        found.warn(f"image header: {type(exc).__name__}: {exc}")
        return
    blob = info.get("exif")
    if isinstance(blob, bytes | bytearray) and blob:
        found.add_exif(_tiff_start(bytes(blob)), "EXIF")
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(packet, bytes | str):
        found.add_xmp(packet, "XMP")


# --------------------------------------------------------------------------------------------
# Values


def _clean_text(value: Any) -> str | None:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", "replace")
    if isinstance(value, list):  # exifread gives a list of ints for BYTE/UNDEFINED text
        try:
            value = bytes(v for v in value if isinstance(v, int) and 0 <= v < 256).decode("utf-8", "replace")
        except ValueError:
            return None
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", " ").strip()
    return value or None


def _text(tag: Any) -> str | None:
    return _clean_text(tag.values) if tag is not None else None


def _number(value: Any) -> float | None:
    """One exifread value as a float: Ratio (0/0 -> None), int, or the tuple it makes of a float."""
    if isinstance(value, tuple):
        value = value[0] if value else None
    try:
        if hasattr(value, "denominator") and value.denominator == 0:
            return None
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _numbers(tag: Any) -> list[float | None]:
    if tag is None or isinstance(tag.values, str | bytes):
        return []
    values = tag.values if isinstance(tag.values, list) else [tag.values]
    return [_number(v) for v in values]


def _first_number(tag: Any) -> float | None:
    values = _numbers(tag)
    return values[0] if values else None


def _positive(value: float | None) -> float | None:
    return value if value is not None and value > 0 else None


_DATE_RE = re.compile(
    r"^(\d{4})[:\-./](\d{1,2})[:\-./](\d{1,2})"
    r"(?:[T ]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?(?:[.,]\d*)?\s*(Z|[+-]\d{2}:?\d{2}(?!\d|:))?)?")


def parse_date(text: str | None, *, date_only: bool = False) -> tuple[str, int | None] | None:
    """("YYYY-MM-DDTHH:MM:SS", UTC offset in minutes or None) from an EXIF, XMP or ISO date.

    Subseconds are dropped; an offset that does not parse (e.g. "20:27:09.60:04:00") is ignored.
    `date_only` accepts a date without a time (midnight). None when there is no real date
    ("0000:00:00 00:00:00", blanks, impossible values).
    """
    if not text:
        return None
    m = _DATE_RE.match(text.replace("\x00", "").strip())
    if m is None:
        return None
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if m.group(4) is None and not date_only:
        return None
    hour, minute = int(m.group(4) or 0), int(m.group(5) or 0)
    second = int(m.group(6) or 0)
    if year < 1800:
        return None
    try:
        when = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S"), parse_offset(m.group(7))


def parse_offset(text: str | None) -> int | None:
    """Minutes east of UTC from "Z", "+02:00", "-0500"; None for blanks and nonsense."""
    if not text:
        return None
    text = text.replace("\x00", "").strip()
    if text == "Z":
        return 0
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if m is None:
        return None
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if int(m.group(3)) >= 60 or minutes > 14 * 60:
        return None
    return -minutes if m.group(1) == "-" else minutes


def _is_blank_date(text: str) -> bool:
    """The ways a file says "no date": zeros, blanks, colons only."""
    return not text.strip(" :0-T\x00")


def _capture(found: _Found) -> tuple[str, int | None, str] | None:
    exif_dates = (
        ("exif_original", T_ORIGINAL, T_OFFSET_ORIGINAL),
        ("exif_digitized", T_DIGITIZED, T_OFFSET_DIGITIZED),
    )
    for source, tag, offset_tag in exif_dates:
        text = _text(found.get(tag, "exif", "ifd0"))
        if not text:
            continue
        parsed = parse_date(text)
        if parsed is None:
            if not _is_blank_date(text):
                found.warn(f"unreadable EXIF date {text!r}")
            continue
        wall, embedded = parsed
        offset = parse_offset(_text(found.get(offset_tag, "exif", "ifd0")))
        if offset is None:
            offset = embedded
        if offset is None:
            offset = parse_offset(_text(found.get(T_OFFSET, "exif", "ifd0")))
        if offset is None:
            offset = _xmp_offset_for(found, wall)
        return wall, offset, source
    if found.container is not None and found.container.taken_at:
        # The camera's own date record (exiftool's DateTimeOriginal for CRW, X3F, Kyocera).
        return found.container.taken_at, None, "exif_original"
    for allow_date_only in (False, True):
        for key in XMP_DATE_KEYS:
            parsed = parse_date(found.xmp.get(key), date_only=allow_date_only)
            if parsed is not None:
                return parsed[0], parsed[1], "xmp"
    return None


def _xmp_offset_for(found: _Found, wall: str) -> int | None:
    """The offset of an XMP date showing the same wall-clock time as the EXIF one."""
    for key in XMP_DATE_KEYS:
        parsed = parse_date(found.xmp.get(key))
        if parsed is not None and parsed[0] == wall and parsed[1] is not None:
            return parsed[1]
    return None


def _degrees(tag: Any) -> float | None:
    """Degrees from the (degrees, minutes, seconds) rationals; a missing part counts as 0."""
    parts = _numbers(tag)
    if not parts or parts[0] is None:
        return None
    total = 0.0
    for value, scale in zip(parts, (1.0, 60.0, 3600.0), strict=False):
        total += (value or 0.0) / scale
    return total


def _gps(found: _Found, meta: Metadata) -> None:
    lat, lon = _degrees(found.get(GPS_LAT, "gps")), _degrees(found.get(GPS_LON, "gps"))
    if lat is not None and lon is not None:
        if (_text(found.get(GPS_LAT_REF, "gps")) or "N").upper().startswith("S"):
            lat = -lat
        if (_text(found.get(GPS_LON_REF, "gps")) or "E").upper().startswith("W"):
            lon = -lon
        if abs(lat) > 90 or abs(lon) > 180:
            found.warn(f"GPS position out of range ({lat}, {lon})")
        elif lat == 0 and lon == 0:
            pass  # what receivers without a fix write: not a place
        else:
            meta.gps_lat, meta.gps_lon = lat, lon
    alt = _first_number(found.get(GPS_ALT, "gps"))
    if alt is not None:
        ref_tag = found.get(GPS_ALT_REF, "gps")
        ref = _first_number(ref_tag) if ref_tag is not None and not isinstance(ref_tag.values, str) \
            else _number((_text(ref_tag) or "0")[:1])
        meta.gps_alt = -abs(alt) if ref == 1 else alt


def _orientation(found: _Found) -> int | None:
    value = _first_number(found.get(T_ORIENTATION, "ifd0"))
    if value is None:
        try:
            value = float(found.xmp.get("tiff:Orientation", ""))
        except ValueError:
            value = None
    return int(value) if value is not None and value == int(value) and 1 <= value <= 8 else None


def _iso(found: _Found) -> int | None:
    for tag in (T_ISO, T_ISO_SPEED, T_REI):
        value = _positive(_first_number(found.get(tag, "exif", "ifd0")))
        if value is not None and value < 10_000_000:
            return int(value)
    return None


def _to_metadata(found: _Found) -> Metadata:
    meta = Metadata()
    steps: list[tuple[str, Callable[[], None]]] = [
        ("date", lambda: _set_capture(found, meta)),
        ("camera", lambda: _set_camera(found, meta)),
        ("exposure", lambda: _set_exposure(found, meta)),
        ("GPS", lambda: _gps(found, meta)),
        ("size", lambda: _set_size(found, meta)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # one odd value costs its field group, not the rest
            found.warn(f"{name}: {type(exc).__name__}: {exc}")
    meta.warnings = list(found.warnings)
    return meta


def _set_capture(found: _Found, meta: Metadata) -> None:
    captured = _capture(found)
    if captured is not None:
        meta.taken_at, meta.taken_at_offset, meta.taken_at_source = captured


def _set_camera(found: _Found, meta: Metadata) -> None:
    box = found.container
    meta.make = (_text(found.get(T_MAKE, "ifd0")) or (box.make if box else None)
                 or _clean_text(found.xmp.get("tiff:Make")))
    meta.model = (_text(found.get(T_MODEL, "ifd0")) or (box.model if box else None)
                  or _clean_text(found.xmp.get("tiff:Model")))
    meta.lens = (_text(found.get(T_LENS, "exif", "ifd0")) or _clean_text(found.xmp.get("aux:Lens"))
                 or _clean_text(found.xmp.get("exifEX:LensModel")))
    meta.orientation = _orientation(found)
    if meta.orientation is None and box is not None:
        meta.orientation = box.orientation


def _set_exposure(found: _Found, meta: Metadata) -> None:
    meta.exposure_time = _positive(_first_number(found.get(T_EXPOSURE, "exif", "ifd0")))
    meta.f_number = _positive(_first_number(found.get(T_FNUMBER, "exif", "ifd0")))
    meta.focal_length = _positive(_first_number(found.get(T_FOCAL, "exif", "ifd0")))
    meta.iso = _iso(found)


def _set_size(found: _Found, meta: Metadata) -> None:
    if found.size is not None:
        meta.width, meta.height = found.size


# --------------------------------------------------------------------------------------------
# Videos


_ISO6709 = re.compile(r"^([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)([+-]\d+(?:\.\d+)?)?")


def _iso6709_part(text: str, degree_digits: int) -> float:
    """±DD.D, ±DDMM.M or ±DDMMSS.S (latitude: 2 degree digits, longitude: 3)."""
    sign = -1.0 if text[0] == "-" else 1.0
    body = text[1:]
    whole = body.split(".")[0]
    if len(whole) <= degree_digits:
        return sign * float(body)
    if len(whole) <= degree_digits + 2:
        return sign * (float(body[:degree_digits]) + float(body[degree_digits:]) / 60)
    return sign * (float(body[:degree_digits]) + float(body[degree_digits:degree_digits + 2]) / 60
                   + float(body[degree_digits + 2:]) / 3600)


def parse_iso6709(text: str | None) -> tuple[float, float, float | None] | None:
    """(lat, lon, alt) from an ISO 6709 string such as "+39.0513-094.2887+259.861/"."""
    if not text:
        return None
    m = _ISO6709.match(text.strip())
    if m is None:
        return None
    try:
        lat, lon = _iso6709_part(m.group(1), 2), _iso6709_part(m.group(2), 3)
        alt = float(m.group(3)) if m.group(3) else None
    except ValueError:
        return None
    if abs(lat) > 90 or abs(lon) > 180:
        return None
    return lat, lon, alt


def _video_metadata(path: Path) -> Metadata:
    from imageapi.core import ffmpeg

    info = ffmpeg.probe(path)
    meta = Metadata(
        width=info.width, height=info.height, duration=info.duration, rotation=info.rotation,
        video_codec=info.video_codec, audio_codec=info.audio_codec,
    )
    local = parse_date(info.local_creation)
    utc = parse_date(info.creation_time)
    if local is not None:
        meta.taken_at, meta.taken_at_offset = local
        meta.taken_at_source = "video"
    elif utc is not None:
        meta.taken_at, meta.taken_at_offset = utc[0], 0  # containers store UTC
        meta.taken_at_source = "video"
    elif info.creation_time or info.local_creation:
        meta.warnings.append(f"unreadable video date {info.local_creation or info.creation_time!r}")
    position = parse_iso6709(info.location)
    if position is not None:
        lat, lon, alt = position
        if not (lat == 0 and lon == 0):
            meta.gps_lat, meta.gps_lon, meta.gps_alt = lat, lon, alt
    tags = info.tags
    meta.make = _clean_text(tags.get("com.apple.quicktime.make") or tags.get("make")
                            or tags.get("com.android.manufacturer"))
    meta.model = _clean_text(tags.get("com.apple.quicktime.model") or tags.get("model")
                             or tags.get("com.android.model"))
    return meta
