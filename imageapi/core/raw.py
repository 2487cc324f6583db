"""The embedded JPEG preview of a RAW file, read from the file's own structure.

RAW thumbnails come from the largest valid embedded JPEG: the reader walks the TIFF structure
(IFD chain, SubIFDs, the EXIF IFD and the Nikon/Olympus/Minolta maker-note previews), the
Fujifilm RAF header, the Canon CR3 boxes and the containers rawformats.py reads (Minolta MRW,
whose TTW block is a TIFF; Canon CIFF/CRW; Sigma X3F), collects every JPEG it points to, ranks
them by the pixel size their SOF header declares and decodes them (Pillow, at 1/8 scale) largest
first until one decodes. Placeholders (1x1, 8x8, a few dozen bytes of "dummy": under MIN_SIDE)
never count, whoever extracts them.

When the structure yields nothing, exiftool (if installed) and then ffmpeg get a try, each with a
timeout; `fallbacks=False` turns them off (the fuzz tests, callers that must not spawn processes).
"""

from __future__ import annotations

import io
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imageapi.core import ffmpeg, rawformats
from imageapi.core import tiff as t
from imageapi.core.errors import ToolError, UnsupportedMediaError

# A preview smaller than this on either side is a placeholder, not a picture. Placeholders are
# 1x1, 8x8 (Fujifilm's RAF header JPEG) or a few dozen bytes of "dummy"; the smallest real
# embedded pictures are EXIF/DCF thumbnails (160x120). 32 lies well between the two, and a
# thumbnail blown up from fewer pixels would show nothing recognisable.
MIN_SIDE = 32
# Larger than any camera's preview; beyond this a JPEG header is lying (or is a bomb). Below
# Pillow's decompression-bomb warning threshold (89.5 MP), so decoding never warns.
MAX_PREVIEW_PIXELS = 80_000_000
MAX_CANDIDATES = 64       # JPEG pointers collected from one file
MAX_DECODES = 8           # of which at most this many are decoded (largest first)
MAX_JPEG_MARKERS = 256    # header segments scanned in one JPEG
MAX_FILL_BYTES = 64       # 0xFF padding before one marker
MAX_BOXES = 512           # ISO-BMFF boxes read from one CR3
MAX_SUBIFD_DEPTH = 3

EXIFTOOL_TIMEOUT = 15.0   # seconds per exiftool call
FFMPEG_TIMEOUT = 30.0
EXIFTOOL_TAGS = ("PreviewImage", "JpgFromRaw", "OtherImage")

RAF_MAGIC = b"FUJIFILMCCD-RAW"
CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")   # CR3 metadata (CMTn, THMB)
PREVIEW_UUID = bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16")  # CR3 PRVW
CMT_BOXES = (b"CMT1", b"CMT2", b"CMT3", b"CMT4")

# Maker-note tags that lead to previews.
NIKON_PREVIEW_IFD = 0x0011
OLYMPUS_CAMERA_SETTINGS = 0x2020
OLYMPUS_THUMBNAIL = 0x0100           # main maker-note IFD: a small JPEG stored inline
OLYMPUS_PREVIEW_START = 0x0101       # inside CameraSettings
OLYMPUS_PREVIEW_LENGTH = 0x0102
OLYMPUS_OLD_PREVIEW_START = 0x0088   # old "OLYMP\0" maker notes, main IFD
OLYMPUS_OLD_PREVIEW_LENGTH = 0x0089
PANASONIC_JPG_FROM_RAW = 0x002E      # RW2 IFD0: a whole JPEG stored inline
MINOLTA_THUMBNAIL = 0x0081           # a JPEG stored inline (DiMAGE 7)
MINOLTA_PREVIEW_START = 0x0088       # offsets relative to the TIFF header (DiMAGE A1/A2, ...)
MINOLTA_PREVIEW_LENGTH = 0x0089
# Maker notes of Minolta cameras that are not Minolta's own IFD (exiftool's MakerNoteMinolta).
MINOLTA_OTHER_NOTES = (b"MINOL", b"CAMER", b"MLY0", b"KC", b"+M+M", b"\xd7")
TAG_MAKE = 0x010F

# SOF markers a JPEG decoder here can do: baseline, extended, progressive Huffman.
DECODABLE_SOF = frozenset({0xC0, 0xC1, 0xC2})
ALL_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


@dataclass(frozen=True)
class Preview:
    jpeg: bytes          # the JPEG bytes as stored in the file
    width: int           # the JPEG's own pixel size (before orientation)
    height: int
    orientation: int     # 1..8, the RAW's own EXIF orientation (1 when absent)
    source: str          # where it came from: "IFD0", "SubIFD2", "Nikon PreviewIFD", "RAF", "ffmpeg", ...


@dataclass(frozen=True)
class _Candidate:
    source: str
    pos: int
    length: int
    width: int     # from the JPEG's SOF header, before decoding
    height: int
    repaired: bytes | None = None   # the JPEG with its first byte put right (some Minolta previews)


# --- JPEG headers ---------------------------------------------------------------------------


def _jpeg_segments(data: t.Buffer, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(marker, payload position, payload length) of a JPEG's header segments, SOS the last.

    Stops early at anything malformed (junk between segments, long runs of fill bytes): Pillow
    skips such bytes one at a time in Python, so a candidate must have clean headers to be tried.
    """
    if end - pos < 4 or data[pos] != 0xFF or data[pos + 1] != 0xD8:
        return
    p = pos + 2
    for _ in range(MAX_JPEG_MARKERS):
        if p + 4 > end or data[p] != 0xFF:
            return
        fill = 0
        while data[p + 1] == 0xFF:   # fill bytes before the marker
            p += 1
            fill += 1
            if fill > MAX_FILL_BYTES or p + 4 > end:
                return
        marker = data[p + 1]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:   # standalone markers, no length
            p += 2
            continue
        if marker in (0x00, 0xD8, 0xD9):   # not a header segment: the headers are broken
            return
        seg_len = (data[p + 2] << 8) | data[p + 3]
        if seg_len < 2 or p + 2 + seg_len > end:
            return
        yield marker, p + 4, seg_len - 2
        if marker == 0xDA:   # SOS: entropy-coded data follows, the headers are over
            return
        p += 2 + seg_len


def _jpeg_size(data: t.Buffer, pos: int, length: int) -> tuple[int, int, int] | None:
    """(SOF marker, width, height) from a JPEG whose headers run cleanly from SOI to SOS."""
    frame: tuple[int, int, int] | None = None
    for marker, seg, seg_len in _jpeg_segments(data, pos, pos + length):
        if marker in ALL_SOF and frame is None:
            if seg_len < 5:
                return None
            height = (data[seg + 1] << 8) | data[seg + 2]
            width = (data[seg + 3] << 8) | data[seg + 4]
            frame = (marker, width, height)
        elif marker == 0xDA:
            return frame
    return None


def _jpeg_exif_tiff(data: t.Buffer, pos: int, length: int) -> int | None:
    """Where the TIFF header of a JPEG's APP1 Exif segment starts, None when there is none."""
    for marker, seg, seg_len in _jpeg_segments(data, pos, pos + length):
        if marker == 0xE1 and seg_len > 14 and bytes(data[seg:seg + 6]) == b"Exif\0\0":
            return seg + 6
    return None


def _decodes(jpeg: bytes, width: int, height: int) -> bool:
    """True when Pillow decodes the JPEG (at reduced scale) to the size its header declares."""
    try:
        with Image.open(io.BytesIO(jpeg), formats=("JPEG", "MPO")) as im:
            if im.size != (width, height):
                return False
            im.draft(None, (max(1, width // 8), max(1, height // 8)))
            im.load()
        return True
    except Exception:  # any decoder failure on untrusted bytes means "not valid"
        return False


# --- collecting candidates ------------------------------------------------------------------


class _Collector:
    """Every JPEG the structure points to, checked against the data and its own header."""

    def __init__(self, data: t.Buffer) -> None:
        self.data = data
        self.budget = t.Budget()
        self.found: list[_Candidate] = []
        self.seen: set[tuple[int, int]] = set()
        self.orientation = 1
        self.make = ""   # IFD0's Make: Minolta maker notes have no header to recognise them by

    def add(self, source: str, pos: int, length: int, *, repair: bool = False) -> None:
        if len(self.found) >= MAX_CANDIDATES or (pos, length) in self.seen:
            return
        if pos < 0 or length < 4 or pos + length > len(self.data):
            return
        self.seen.add((pos, length))
        repaired = None
        if repair and self.data[pos] != 0xFF and bytes(self.data[pos + 1:pos + 4]) == b"\xd8\xff\xdb":
            # Some Minolta cameras write the preview's first byte wrong; exiftool repairs it so too.
            repaired = b"\xff" + bytes(self.data[pos + 1:pos + length])
        header = (_jpeg_size(self.data, pos, length) if repaired is None
                  else _jpeg_size(repaired, 0, length))
        if header is None:
            return
        marker, width, height = header
        if marker not in DECODABLE_SOF or min(width, height) < MIN_SIDE:
            return
        if width * height > MAX_PREVIEW_PIXELS:
            return
        self.found.append(_Candidate(source, pos, length, width, height, repaired))

    def best(self) -> tuple[_Candidate, bytes] | None:
        # Largest declared area first; among equals, the first found. Decode until one is valid.
        ranked = sorted(self.found, key=lambda c: -(c.width * c.height))
        for cand in ranked[:MAX_DECODES]:
            jpeg = cand.repaired or bytes(self.data[cand.pos:cand.pos + cand.length])
            if _decodes(jpeg, cand.width, cand.height):
                return cand, jpeg
        return None

    # TIFF structures

    def tiff(self, tf: t.TiffFile) -> None:
        """Walk the RAW's TIFF: the IFD chain, their SubIFDs, EXIF IFDs and maker notes."""
        for i, ifd in enumerate(tf.chain()):
            name = f"IFD{i}"
            if i == 0:
                self.orientation = t.orientation_of(ifd)
                self.make = (ifd.raw(TAG_MAKE) or b"")[:64].split(b"\0")[0].decode("latin-1").strip()
            self.ifd(ifd, name)
            if tf.magic == t.MAGIC_RW2 and i == 0:
                self.inline(ifd, PANASONIC_JPG_FROM_RAW, "Panasonic JpgFromRaw")
            # IFD0's SubIFDs are plain "SubIFD..." (as exiftool names them); others get a prefix.
            self.subifds(ifd, "" if i == 0 else f"{name} ", 0)
            self.exif(ifd)

    def subifds(self, ifd: t.Ifd, prefix: str, depth: int) -> None:
        if depth >= MAX_SUBIFD_DEPTH:
            return
        for j, pos in enumerate(ifd.pointers(t.TAG_SUBIFDS)):
            sub = ifd.tiff.ifd(pos)
            if sub is None:
                continue
            # Named as exiftool names them: SubIFD, SubIFD1, SubIFD2, ...
            name = f"{prefix}SubIFD{j or ''}"
            self.ifd(sub, name)
            self.subifds(sub, f"{name} ", depth + 1)
            self.exif(sub)

    def ifd(self, ifd: t.Ifd, name: str) -> None:
        """The JPEGs one IFD points to: JPEGInterchangeFormat, or JPEG-compressed strips."""
        base = ifd.tiff.base
        offset, length = ifd.first(t.TAG_JPEG_OFFSET), ifd.first(t.TAG_JPEG_LENGTH)
        if offset is not None and length is not None:
            self.add(name, base + offset, length)
        if ifd.first(t.TAG_COMPRESSION) in (6, 7):
            offsets = ifd.ints(t.TAG_STRIP_OFFSETS)
            counts = ifd.ints(t.TAG_STRIP_BYTE_COUNTS)
            if offsets and len(offsets) == len(counts) and _contiguous(offsets, counts):
                self.add(name, base + offsets[0], sum(counts))

    def inline(self, ifd: t.Ifd, tag: int, name: str) -> None:
        """A JPEG stored as the value of an UNDEFINED tag."""
        e = ifd.entries.get(tag)
        if e is not None and e.type == t.TYPE_UNDEFINED:
            self.add(name, e.offset, e.size)

    def exif(self, ifd: t.Ifd) -> None:
        for pos in ifd.pointers(t.TAG_EXIF_IFD):
            exif = ifd.tiff.ifd(pos)
            if exif is None:
                continue
            note = exif.entries.get(t.TAG_MAKERNOTE)
            if note is not None:
                self.makernote(ifd.tiff, note.offset, note.size)

    def makernote(self, outer: t.TiffFile, pos: int, size: int) -> None:
        head = bytes(self.data[pos:pos + min(size, 16)])
        if head.startswith(b"Nikon\0") and size > 18:
            # Type 2/3: "Nikon\0", version, then a TIFF header; offsets relative to that header.
            tf = t.TiffFile.parse(self.data, pos + 10, self.budget)
            if tf is not None:
                self.nikon(tf)
        elif head.startswith(b"OLYMPUS\0") and size > 14:
            # New Olympus: "OLYMPUS\0" + byte order + version; offsets relative to the note.
            endian = {b"II": "<", b"MM": ">"}.get(head[8:10])
            if endian is not None:
                self.olympus(t.TiffFile(self.data, pos, endian, t.MAGIC_TIFF, pos + 12, self.budget))
        elif head.startswith(b"OLYMP\0") and size > 10:
            # Old Olympus: the IFD follows an 8-byte header; offsets relative to the RAW's TIFF.
            self.olympus(t.TiffFile(self.data, outer.base, outer.endian, t.MAGIC_TIFF, pos + 8,
                                    self.budget))
        elif self.make.lower().startswith(("minolta", "konica minolta")) and size > 14 \
                and not head.startswith(MINOLTA_OTHER_NOTES):
            # Minolta: a bare IFD in the RAW's byte order; offsets relative to the RAW's TIFF.
            self.minolta(t.TiffFile(self.data, outer.base, outer.endian, t.MAGIC_TIFF, pos,
                                    self.budget))

    def nikon(self, tf: t.TiffFile) -> None:
        main = tf.ifd(tf.first_ifd)
        if main is None:
            return
        for pos in main.pointers(NIKON_PREVIEW_IFD):
            preview = tf.ifd(pos)
            if preview is not None:
                self.ifd(preview, "Nikon PreviewIFD")

    def olympus(self, tf: t.TiffFile) -> None:
        main = tf.ifd(tf.first_ifd)
        if main is None:
            return
        self.inline(main, OLYMPUS_THUMBNAIL, "Olympus ThumbnailImage")
        start = main.first(OLYMPUS_OLD_PREVIEW_START)
        length = main.first(OLYMPUS_OLD_PREVIEW_LENGTH)
        if start is not None and length is not None:
            self.add("Olympus PreviewImage", tf.base + start, length)
        for pos in main.pointers(OLYMPUS_CAMERA_SETTINGS):
            settings = tf.ifd(pos)
            if settings is None:
                continue
            start = settings.first(OLYMPUS_PREVIEW_START)
            length = settings.first(OLYMPUS_PREVIEW_LENGTH)
            if start is not None and length is not None:
                self.add("Olympus PreviewImage", tf.base + start, length)

    def minolta(self, tf: t.TiffFile) -> None:
        main = tf.ifd(tf.first_ifd)
        if main is None:
            return
        thumb = main.entries.get(MINOLTA_THUMBNAIL)
        if thumb is not None and thumb.type == t.TYPE_UNDEFINED:
            self.add("Minolta ThumbnailImage", thumb.offset, thumb.size, repair=True)
        start = main.first(MINOLTA_PREVIEW_START)
        length = main.first(MINOLTA_PREVIEW_LENGTH)
        if start is not None and length is not None:
            self.add("Minolta PreviewImage", tf.base + start, length, repair=True)

    # Other containers

    def container(self, box: rawformats.Container) -> None:
        """MRW, CIFF, X3F, Kyocera: their JPEGs, and MRW's TIFF block walked like any TIFF."""
        for source, pos, length in box.jpegs:
            self.add(source, pos, length)
        if box.tiff is not None:
            tf = t.TiffFile.parse(self.data, box.tiff[0], self.budget)
            if tf is not None:
                self.tiff(tf)
        if box.orientation is not None:
            self.orientation = box.orientation

    def raf(self) -> None:
        """Fujifilm RAF: a big-endian pointer at 84..91 to a JPEG, whose EXIF has an IFD1 thumbnail."""
        if len(self.data) < 92:
            return
        pos, length = struct.unpack_from(">II", self.data, 84)
        self.add("RAF", pos, length)
        exif_at = _jpeg_exif_tiff(self.data, pos, min(length, len(self.data) - pos))
        if exif_at is not None:
            tf = t.TiffFile.parse(self.data, exif_at, self.budget)
            if tf is not None:
                chain = tf.chain()
                if chain:
                    self.orientation = t.orientation_of(chain[0])
                for i, ifd in enumerate(chain):
                    self.ifd(ifd, f"RAF IFD{i}")

    def cr3(self) -> None:
        """Canon CR3: PRVW (the big preview) and THMB (the thumbnail); orientation from CMT1."""
        for kind, start, end in _cr3_boxes(self.data):
            if kind in (b"THMB", b"PRVW"):
                # JPEG at payload+16; its length is a u32 at payload+8 (THMB) or +12 (PRVW).
                size_at = start + (8 if kind == b"THMB" else 12)
                if size_at + 4 > end:
                    continue
                (length,) = struct.unpack_from(">I", self.data, size_at)
                jpeg_at = start + 16
                self.add(f"CR3 {kind.decode()}", jpeg_at, min(length, end - jpeg_at))
            elif kind == b"CMT1":
                # Parsed on its own (offsets are relative to the blob); only the orientation is used.
                tf = t.TiffFile.parse(bytes(self.data[start:end]))
                if tf is not None:
                    self.orientation = t.orientation_of(tf.ifd(tf.first_ifd))


def _contiguous(offsets: list[int], counts: list[int]) -> bool:
    """Strips that follow each other form one JPEG; scattered ones are not a JPEG stream."""
    return all(offsets[i] + counts[i] == offsets[i + 1] for i in range(len(offsets) - 1))


# --- ISO-BMFF (CR3) -------------------------------------------------------------------------


def _boxes(data: t.Buffer, start: int, end: int, count: list[int]) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of the boxes in [start, end). A box that claims more than its
    parent holds is cut to the parent (truncated files). `count` is a shared box budget."""
    pos = start
    while pos + 8 <= end and count[0] > 0:
        count[0] -= 1
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        box_end = min(pos + size, end)
        yield kind, pos + header, box_end
        pos += size


def _cr3_boxes(data: t.Buffer) -> Iterator[tuple[bytes, int, int]]:
    """The CR3 boxes that matter: CMT1..4 and THMB in the Canon uuid, PRVW in the preview uuid."""
    budget = [MAX_BOXES]
    size = len(data)
    for kind, start, end in _boxes(data, 0, size, budget):
        if kind == b"moov":
            for sub, s_start, s_end in _boxes(data, start, end, budget):
                if sub == b"uuid" and bytes(data[s_start:s_start + 16]) == CANON_UUID:
                    yield from _boxes(data, s_start + 16, s_end, budget)
        elif kind == b"uuid" and bytes(data[start:start + 16]) == PREVIEW_UUID:
            # 16-byte uuid, then 8 bytes Canon does not document, then the PRVW box.
            yield from _boxes(data, start + 24, end, budget)


def _is_cr3(data: t.Buffer) -> bool:
    return bytes(data[4:12]) == b"ftypcrx "


# --- public API -----------------------------------------------------------------------------


def container_tiff_blobs(data: bytes) -> list[tuple[str, bytes]]:
    """The TIFF/EXIF blobs of containers exifread cannot parse itself.

    CR3: ("CMT1", b"II*\\0...") .. ("CMT4", ...) (IFD0, EXIF IFD, Canon maker note, GPS IFD).
    RAF: ("RAF-JPEG", the embedded JPEG, whose EXIF holds make, model and dates).
    MRW: ("MRW-TTW", its TIFF block). X3F: ("X3F-JPEG", the first preview that carries EXIF).
    [] otherwise (the other records of MRW, CIFF, X3F and Kyocera files: rawformats.read).
    """
    if _is_cr3(data):
        out: list[tuple[str, bytes]] = []
        for kind, start, end in _cr3_boxes(data):
            if kind in CMT_BOXES and end - start >= 8:
                out.append((kind.decode(), bytes(data[start:end])))
        return out
    if data.startswith(RAF_MAGIC) and len(data) >= 92:
        pos, length = struct.unpack_from(">II", data, 84)
        if length >= 4 and pos + length <= len(data) and data[pos:pos + 2] == b"\xff\xd8":
            return [("RAF-JPEG", bytes(data[pos:pos + length]))]
    box = rawformats.read(data)
    return rawformats.metadata_blobs(data, box) if box is not None else []


def _collect(data: bytes) -> tuple[_Collector, rawformats.Container | None, bool]:
    """The candidates of a file, the non-TIFF container it is (if one), and whether it was a
    container this reader knows at all."""
    col = _Collector(data)
    box = rawformats.read(data)
    if data.startswith(RAF_MAGIC):
        col.raf()
    elif _is_cr3(data):
        col.cr3()
    elif box is not None:
        col.container(box)
    else:
        tf = t.TiffFile.parse(data, 0, col.budget)
        if tf is None:
            return col, None, False
        col.tiff(tf)
    return col, box, True


def embedded_jpegs(data: bytes) -> list[tuple[str, int, int]]:
    """(source, width, height) of every JPEG the structure points to whose frame header is usable
    and larger than a placeholder, in the order found; sizes from the header, not yet decoded.
    For diagnostics and tests: extract_preview picks from exactly these."""
    col, _, _ = _collect(data)
    return [(c.source, c.width, c.height) for c in col.found]


def extract_preview(path: Path, data: bytes | None = None, *, fallbacks: bool = True) -> Preview:
    """The largest valid embedded JPEG preview of a RAW (or TIFF) file.

    `data` is the whole file when the caller already read it. Raises UnsupportedMediaError when
    there is no valid preview; OSError from reading an unreadable file passes through.
    """
    if data is None:
        data = Path(path).read_bytes()
    col, box, container = _collect(data)
    best = col.best()
    if best is not None:
        cand, jpeg = best
        return Preview(jpeg, cand.width, cand.height, col.orientation, cand.source)
    if not data:
        raise UnsupportedMediaError("empty file: no embedded preview")
    if box is not None and box.no_preview:
        raise UnsupportedMediaError(box.no_preview)   # the format never holds one: no tool will find one
    if box is not None and not col.seen:
        reason = f"no embedded preview in this {box.format} file"
    elif container:
        reason = "no embedded preview larger than a placeholder"
    else:
        reason = "not a RAW file this reader understands (no TIFF, RAF, CR3, MRW, CIFF or X3F structure)"
    if fallbacks:
        found, tried = _from_tools(Path(path), col.orientation)
        if found is not None:
            return found
        if tried:
            reason += f"; {' and '.join(tried)} could not extract one either"
    raise UnsupportedMediaError(reason)


# --- external tools -------------------------------------------------------------------------


def _tool_stdout(args: list[str], timeout: float) -> bytes | None:
    """stdout of a tool that succeeded; None when it failed, timed out or is missing (a fallback
    that does not work just means there is no preview)."""
    try:
        out = ffmpeg.run(args, timeout)
    except ToolError:
        return None
    return out.stdout if out.returncode == 0 and out.stdout else None


def _valid_tool_output(out: bytes | None, min_side: int) -> tuple[int, int] | None:
    if out is None:
        return None
    header = _jpeg_size(out, 0, len(out))
    if header is None or header[0] not in DECODABLE_SOF:
        return None
    _, width, height = header
    if min(width, height) < min_side or width * height > MAX_PREVIEW_PIXELS:
        return None
    return (width, height) if _decodes(out, width, height) else None


def _from_tools(path: Path, orientation: int) -> tuple[Preview | None, list[str]]:
    """exiftool's stored previews, then ffmpeg's decode; also the names of the tools tried."""
    tried: list[str] = []
    target = str(path.absolute())   # absolute: a name starting with "-" is never an option
    exiftool = shutil.which("exiftool")
    if exiftool:
        tried.append("exiftool")
        for tag in EXIFTOOL_TAGS:
            out = _tool_stdout([exiftool, "-b", f"-{tag}", target], EXIFTOOL_TIMEOUT)
            size = _valid_tool_output(out, MIN_SIDE)   # stored previews: placeholders exist
            if out is not None and size is not None:
                return Preview(out, size[0], size[1], orientation, f"exiftool:{tag}"), tried
    try:
        exe = ffmpeg.ffmpeg_path()
    except ToolError:
        return None, tried
    tried.append("ffmpeg")
    # Only the file protocol, and "file:" so a name like "http:..." is never a URL.
    out = _tool_stdout([exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1",
                        "-protocol_whitelist", "file", "-i", f"file:{target}", "-frames:v", "1",
                        "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "2", "pipe:1"], FFMPEG_TIMEOUT)
    # ffmpeg decodes the first picture of the container: in a RAW that is an embedded thumbnail
    # (IFD0), and a 1x1 one is a placeholder like any other.
    size = _valid_tool_output(out, MIN_SIDE)
    if out is not None and size is not None:
        return Preview(out, size[0], size[1], orientation, "ffmpeg"), tried
    return None, tried
