"""Bounded readers of the RAW containers that are not TIFF files: Minolta MRW, Canon CIFF (CRW),
Sigma/Foveon X3F and Kyocera's Contax N Digital RAW.

Each reader finds what raw.py (previews) and exif.py (metadata) need: where the embedded JPEGs
are, an embedded TIFF block (MRW's TTW segment, read by tiff.py like any TIFF), and the camera's
own records (make, model, capture date, pixel size, rotation) when the format keeps them outside
EXIF. Like tiff.py, nothing here raises on bad content: every position and length is checked
against the data before use, every count is capped, directories already read are refused
(cycles), and the caller gets less.

Layouts as exiftool reads them (Image::ExifTool::MinoltaRaw, CanonRaw, SigmaRaw, KyoceraRaw).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imageapi.core.tiff import Buffer

MAX_MRW_BLOCKS = 64        # a real MRW has 4 or 5 (PRD, TTW, WBG, RIF, padding)
MAX_CIFF_HEAPS = 32        # a real CRW has about 10 nested heaps
MAX_CIFF_DEPTH = 4
MAX_CIFF_ENTRIES = 512     # records per heap directory (a real one has a few dozen)
MAX_X3F_SECTIONS = 256     # a real X3F has 3 to 10
MAX_X3F_PROPERTIES = 1024  # name/value pairs in the PROP section (a real one has ~50)
MAX_PROPERTY_CHARS = 256   # UTF-16 units read for one property name or value
MAX_TEXT = 64              # bytes kept of a make or model

KYOCERA_HEADER = 156

# CIFF record ids (the tag without its two location bits).
CIFF_MAKE_MODEL = 0x080A
CIFF_TIME_STAMP = 0x180E
CIFF_IMAGE_INFO = 0x1810
CIFF_JPG_FROM_RAW = 0x2007
CIFF_THUMBNAIL = 0x2008
CIFF_HEAP_TYPES = (0x28, 0x30)    # record types that hold a sub-heap

X3F_JPEG = 18      # SECi image format: JPEG
X3F_PREVIEW = 2    # SECi image type: processed picture (as opposed to the sensor data)

# Camera rotation in degrees clockwise (CIFF ImageInfo, X3F header) -> EXIF orientation.
ROTATIONS = {0: 1, 90: 6, 180: 3, 270: 8, -90: 8, -180: 3, -270: 6}


@dataclass
class Container:
    """What one non-TIFF RAW container holds. Positions are absolute in the data."""

    format: str                                           # MRW, CIFF, X3F, Kyocera
    jpegs: list[tuple[str, int, int]] = field(default_factory=list)   # (source, pos, length)
    tiff: tuple[int, int] | None = None                   # (start, end) of an embedded TIFF
    make: str | None = None
    model: str | None = None
    taken_at: str | None = None                           # local wall clock, "YYYY-MM-DDTHH:MM:SS"
    width: int | None = None
    height: int | None = None
    orientation: int | None = None                        # EXIF 1..8 from the camera's rotation
    no_preview: str | None = None                         # why this format never holds a preview


def sniff(data: Buffer) -> str | None:
    """MRW, CIFF, X3F or Kyocera from the first bytes; None for anything else."""
    head = bytes(data[:32])
    if head.startswith(b"\0MRM"):
        return "MRW"
    if head[:2] in (b"II", b"MM") and head[6:14] == b"HEAPCCDR":
        return "CIFF"
    if head.startswith(b"FOVb"):
        return "X3F"
    if head[0x19:0x20] == b"ARECOYK":   # "KYOCERA" stored reversed
        return "Kyocera"
    return None


def read(data: Buffer) -> Container | None:
    """The container's contents, None when the data is none of these formats."""
    kind = sniff(data)
    if kind == "MRW":
        return _mrw(data)
    if kind == "CIFF":
        return _ciff(data)
    if kind == "X3F":
        return _x3f(data)
    if kind == "Kyocera":
        return _kyocera(data)
    return None


def metadata_blobs(data: Buffer, box: Container) -> list[tuple[str, bytes]]:
    """The blocks of `box` that hold EXIF for exif.py: ("MRW-TTW", the TIFF block of an MRW) and
    ("X3F-JPEG", the first X3F preview that starts with an Exif segment, as later models write
    it: exiftool's JpgFromRaw)."""
    out: list[tuple[str, bytes]] = []
    if box.tiff is not None:
        out.append(("MRW-TTW", bytes(data[box.tiff[0]:box.tiff[1]])))
    if box.format == "X3F":
        for _, pos, length in box.jpegs:
            if bytes(data[pos:pos + 4]) == b"\xff\xd8\xff\xe1" and bytes(data[pos + 6:pos + 10]) == b"Exif":
                out.append(("X3F-JPEG", bytes(data[pos:pos + length])))
                break
    return out


# --- helpers ----------------------------------------------------------------------------------


def _text(raw: bytes) -> str | None:
    value = raw.split(b"\0", 1)[0][:MAX_TEXT].decode("latin-1").strip()
    return value or None


def _unix_wall(seconds: int) -> str | None:
    """A camera's clock as seconds since 1970, read as exiftool does (as UTC: the cameras that
    store it have no time zone, so the value is the local wall-clock time)."""
    if seconds <= 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return None


def _exif_wall(text: str | None) -> str | None:
    """ "YYYY:MM:DD HH:MM:SS" -> "YYYY-MM-DDTHH:MM:SS", None when it is no real date."""
    if not text:
        return None
    try:
        return datetime.strptime(text.strip()[:19], "%Y:%m:%d %H:%M:%S").strftime("%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None


# --- Minolta MRW ------------------------------------------------------------------------------


def _mrw(data: Buffer) -> Container:
    """"\\0MRM", a big-endian length, then blocks (4-byte name, big-endian length, payload):
    PRD (sizes), WBG, RIF, and TTW, a whole TIFF (IFD0, EXIF and the Minolta maker note, whose
    PreviewImageStart/Length or ThumbnailImage holds the preview)."""
    out = Container("MRW")
    size = len(data)
    if size < 8:
        return out
    (meta_len,) = struct.unpack_from(">I", data, 4)
    end = min(size, 8 + meta_len)
    pos = 8
    for _ in range(MAX_MRW_BLOCKS):
        if pos + 8 > end:
            break
        name, length = struct.unpack_from(">4sI", data, pos)
        start = pos + 8
        stop = min(start + length, end)
        if name == b"\0TTW" and out.tiff is None and stop - start >= 8:
            out.tiff = (start, stop)
        elif name == b"\0PRD" and stop - start >= 16 and out.width is None:
            height, width = struct.unpack_from(">HH", data, start + 12)
            if width and height:
                out.width, out.height = width, height
        pos = start + length
    return out


# --- Canon CIFF (CRW) -------------------------------------------------------------------------


def _ciff(data: Buffer) -> Container:
    """A byte order, the header length, "HEAPCCDR", then the root heap up to the end of the file.
    A heap ends with the offset of its directory: a count, then 10-byte records (tag, size,
    offset from the heap's start); records of type 0x28/0x30 are heaps themselves."""
    out = Container("CIFF")
    endian = "<" if bytes(data[:2]) == b"II" else ">"
    size = len(data)
    if size < 14:
        return out
    (header_len,) = struct.unpack_from(endian + "I", data, 2)
    records: dict[int, tuple[int, int]] = {}
    if 14 <= header_len < size:
        _ciff_heap(data, endian, header_len, size, 0, [MAX_CIFF_HEAPS], set(), records)

    def value(tag: int, minimum: int) -> tuple[int, int] | None:
        found = records.get(tag)
        return found if found is not None and found[1] >= minimum else None

    if (mm := value(CIFF_MAKE_MODEL, 2)) is not None:
        parts = bytes(data[mm[0]:mm[0] + min(mm[1], 2 * MAX_TEXT)]).split(b"\0")
        out.make = _text(parts[0])
        out.model = _text(parts[1]) if len(parts) > 1 else None
    if (ts := value(CIFF_TIME_STAMP, 4)) is not None:
        out.taken_at = _unix_wall(struct.unpack_from(endian + "I", data, ts[0])[0])
    if (info := value(CIFF_IMAGE_INFO, 16)) is not None:
        width, height, _, rotation = struct.unpack_from(endian + "IIfi", data, info[0])
        if width and height:
            out.width, out.height = width, height
        out.orientation = ROTATIONS.get(rotation)
    for tag, source in ((CIFF_JPG_FROM_RAW, "CIFF JpgFromRaw"), (CIFF_THUMBNAIL, "CIFF ThumbnailImage")):
        if (found := value(tag, 4)) is not None:
            out.jpegs.append((source, found[0], found[1]))
    return out


def _ciff_heap(data: Buffer, endian: str, start: int, end: int, depth: int, budget: list[int],
               visited: set[int], records: dict[int, tuple[int, int]]) -> None:
    if end - start < 6 or budget[0] <= 0:
        return
    budget[0] -= 1
    (dir_offset,) = struct.unpack_from(endian + "I", data, end - 4)
    directory = start + dir_offset
    if directory + 2 > end - 4 or directory in visited:
        return
    visited.add(directory)
    (count,) = struct.unpack_from(endian + "H", data, directory)
    count = min(count, MAX_CIFF_ENTRIES, (end - 4 - directory - 2) // 10)
    for i in range(count):
        entry = directory + 2 + 10 * i
        tag, length, offset = struct.unpack_from(endian + "HII", data, entry)
        if tag & 0x8000:   # not a record: the directory is broken from here
            return
        tag_id, kind = tag & 0x3FFF, (tag >> 8) & 0x38
        if tag & 0x4000:   # the value is the 8 bytes of the record itself
            records.setdefault(tag_id, (entry + 2, 8))
            continue
        pos = start + offset
        if length > end - start or pos + length > end:   # not inside this heap
            continue
        if kind in CIFF_HEAP_TYPES:
            if depth + 1 < MAX_CIFF_DEPTH:
                _ciff_heap(data, endian, pos, pos + length, depth + 1, budget, visited, records)
        else:
            records.setdefault(tag_id, (pos, length))


# --- Sigma X3F --------------------------------------------------------------------------------


def _x3f(data: Buffer) -> Container:
    """"FOVb", a version, a header with the size and rotation, and the file's last 4 bytes point
    to the section directory ("SECd"): (offset, length, type) per section. IMAG/IMA2 sections
    are pictures ("SECi" header: type 2 and format 18 is a JPEG); PROP holds the camera's
    properties as UTF-16 name/value pairs (CAMMANUF, CAMMODEL, TIME)."""
    out = Container("X3F")
    size = len(data)
    if size < 52:
        return out
    (version,) = struct.unpack_from("<I", data, 4)
    at = 40 if version >> 16 >= 4 else 28
    width, height, rotation = struct.unpack_from("<IIi", data, at)
    if width and height:
        out.width, out.height = width, height
    out.orientation = ROTATIONS.get(rotation)
    (directory,) = struct.unpack_from("<I", data, size - 4)
    if directory + 12 > size - 4 or bytes(data[directory:directory + 4]) != b"SECd":
        return out
    (count,) = struct.unpack_from("<I", data, directory + 8)
    count = min(count, MAX_X3F_SECTIONS, (size - directory - 12) // 12)
    props_done = False
    for i in range(count):
        offset, length, kind = struct.unpack_from("<II4s", data, directory + 12 + 12 * i)
        if offset + length > size:
            continue
        if kind in (b"IMAG", b"IMA2") and length > 28 and bytes(data[offset:offset + 4]) == b"SECi":
            image_type, image_format = struct.unpack_from("<II", data, offset + 8)
            if image_type == X3F_PREVIEW and image_format == X3F_JPEG:
                out.jpegs.append((f"X3F {kind.decode()}", offset + 28, length - 28))
        elif kind == b"PROP" and not props_done:
            props_done = True
            props = _x3f_properties(data, offset, length)
            out.make = _clean(props.get("CAMMANUF"))
            out.model = _clean(props.get("CAMMODEL"))
            seconds = props.get("TIME", "")
            digits = seconds.isascii() and seconds.isdigit() and len(seconds) <= 12
            out.taken_at = _unix_wall(int(seconds)) if digits else None
    return out


def _clean(value: str | None) -> str | None:
    return (value or "").strip()[:MAX_TEXT] or None


def _x3f_properties(data: Buffer, offset: int, length: int) -> dict[str, str]:
    """The PROP section: "SECp", version, entry count, character format (0: UTF-16LE), reserved,
    character count; then (name, value) positions in characters; then the characters."""
    if length < 24 or bytes(data[offset:offset + 4]) != b"SECp":
        return {}
    entries, char_format, _, chars = struct.unpack_from("<IIII", data, offset + 8)
    table = offset + 24
    text_at = table + 8 * entries
    if char_format != 0 or text_at + 2 * chars > offset + length:
        return {}
    out: dict[str, str] = {}
    for i in range(min(entries, MAX_X3F_PROPERTIES)):
        name_at, value_at = struct.unpack_from("<II", data, table + 8 * i)
        if name_at >= chars or value_at >= chars:
            return out
        name = _utf16z(data, text_at + 2 * name_at, text_at + 2 * chars)
        if name in ("CAMMANUF", "CAMMODEL", "TIME") and name not in out:
            out[name] = _utf16z(data, text_at + 2 * value_at, text_at + 2 * chars)
    return out


def _utf16z(data: Buffer, pos: int, end: int) -> str:
    """A NUL-terminated UTF-16LE string at `pos`, at most MAX_PROPERTY_CHARS of it."""
    raw = bytes(data[pos:min(end, pos + 2 * MAX_PROPERTY_CHARS)])
    for i in range(0, len(raw) - 1, 2):
        if raw[i] == 0 and raw[i + 1] == 0:
            raw = raw[:i]
            break
    return raw[:len(raw) // 2 * 2].decode("utf-16-le", "replace")


# --- Kyocera (Contax N Digital) ---------------------------------------------------------------


def _kyocera(data: Buffer) -> Container:
    """A 156-byte header of fixed fields, its strings stored back to front; no preview."""
    out = Container("Kyocera", no_preview="Kyocera RAW files hold no embedded preview")
    if len(data) < KYOCERA_HEADER:
        return out

    def reversed_text(pos: int, length: int) -> str | None:
        return _text(bytes(data[pos:pos + length]).split(b"\0", 1)[0][::-1])

    out.make = reversed_text(0x19, 7)
    out.model = reversed_text(0x0C, 12)
    out.taken_at = _exif_wall(reversed_text(0x21, 20))
    return out
