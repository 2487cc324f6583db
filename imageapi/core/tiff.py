"""A bounded, defensive reader of TIFF structures (IFDs and their entries).

Made for untrusted RAW files: every offset and length is checked against the data size before it
is used, IFD offsets already visited are refused (cycles), and one `Budget` caps how many IFDs a
whole walk may read, shared by the nested TIFFs of a file (maker notes, EXIF blobs). Nothing here
raises on bad content: a broken IFD or entry is skipped and the caller gets less.

Two callers: raw.py (embedded previews) and exif.py (pixel size, the TIFF XMP tag, and defusing
exifread's input). exif.py parses `lenient`ly: exifread trusts any header with a byte order and
reads every IFD a pointer leads to, so exif.py must see those IFDs too to patch them, including
ones this reader would otherwise refuse (no entries, more than MAX_ENTRIES of them). The same
budget, cycle and offset checks apply either way.

Offsets stored in a TIFF are relative to its header (`base`); everything this module hands out
(`Ifd.offset`, `Entry.offset`, `Ifd.pointers`) is absolute in `data`.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field

# The file (or a blob of it). raw.py reads whole files into bytes: an mmap of a file truncated on
# the NAS while mapped kills the process with SIGBUS instead of raising. exif.py hands over the
# mmap it reads stills through.
Buffer = bytes | bytearray | memoryview | mmap.mmap

# Header magics: plain TIFF, Panasonic RW2 ("IIU\0"), Olympus ORF ("IIRO", "IIRS", "MMOR").
MAGIC_TIFF = 42
MAGIC_RW2 = 0x55
MAGIC_ORF = (0x4F52, 0x5352)
MAGICS = frozenset({MAGIC_TIFF, MAGIC_RW2, *MAGIC_ORF})

# Byte size of one value of each TIFF field type (BigTIFF's 8-byte types are not read).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
INT_FORMATS = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I"}
TYPE_UNDEFINED = 7

# Real IFDs have a few hundred entries at most; cameras write a few dozen IFDs per file.
MAX_ENTRIES = 1024
MAX_IFDS = 128
MAX_VALUES = 256   # integers read from one entry (SubIFD lists, strip tables)
MAX_SUBIFD_DEPTH = 3   # SubIFDs of SubIFDs of SubIFDs, no deeper (walk)
MAX_SUBIFDS = 16       # SubIFD pointers followed per IFD (walk)

# Tags the preview and metadata readers need.
TAG_SUBFILE_TYPE = 0x00FE       # NewSubfileType: 0 marks the full-resolution image
TAG_OLD_SUBFILE_TYPE = 0x00FF   # SubfileType: 1 marks it
TAG_WIDTH = 0x0100
TAG_HEIGHT = 0x0101
TAG_COMPRESSION = 0x0103
TAG_STRIP_OFFSETS = 0x0111
TAG_ORIENTATION = 0x0112
TAG_STRIP_BYTE_COUNTS = 0x0117
TAG_SUBIFDS = 0x014A
TAG_JPEG_OFFSET = 0x0201   # JPEGInterchangeFormat
TAG_JPEG_LENGTH = 0x0202   # JPEGInterchangeFormatLength
TAG_EXIF_IFD = 0x8769
TAG_MAKERNOTE = 0x927C


@dataclass
class Budget:
    """Shared by every TIFF read from one file: the IFDs already read and how many may still be."""

    ifds_left: int = MAX_IFDS
    visited: set[int] = field(default_factory=set)


@dataclass(slots=True)
class Entry:
    tag: int
    type: int
    count: int
    offset: int   # absolute position of the value bytes in data
    size: int     # count * size of the type, already checked to lie inside data


# One 12-byte IFD entry as stored, before any check of its type, count or value offset:
# (absolute position of the entry, tag, type, count). A plain tuple: exif.py reads a hundred a file.
Slot = tuple[int, int, int, int]


@dataclass
class Ifd:
    tiff: TiffFile
    offset: int                 # absolute position of the entry count
    entries: dict[int, Entry]   # the sound entries among the first MAX_ENTRIES; first of a tag wins
    next_offset: int            # absolute position of the next IFD, 0 when none
    count: int                  # entry count as stored (a lenient read may hold more than it read)

    def ints(self, tag: int, limit: int = MAX_VALUES) -> list[int]:
        """The integer values of `tag` (at most `limit`), [] when absent or not an integer type."""
        e = self.entries.get(tag)
        if e is None:
            return []
        if e.type == TYPE_UNDEFINED and e.size == 4:
            # Some maker notes store a LONG offset as 4 UNDEFINED bytes.
            return [self.tiff.u32(e.offset)]
        fmt = INT_FORMATS.get(e.type)
        if fmt is None:
            return []
        n = min(e.count, limit)
        return list(struct.unpack_from(f"{self.tiff.endian}{n}{fmt}", self.tiff.data, e.offset))

    def first(self, tag: int) -> int | None:
        values = self.ints(tag, 1)
        return values[0] if values else None

    def raw(self, tag: int) -> bytes | None:
        """The value bytes of `tag` (already bounded by the data size)."""
        e = self.entries.get(tag)
        if e is None:
            return None
        return bytes(self.tiff.data[e.offset:e.offset + e.size])

    def pointers(self, tag: int, limit: int = 64) -> list[int]:
        """Absolute offsets of the IFDs `tag` points to (SubIFDs, EXIF IFD, maker-note IFDs),
        from its first `limit` values.

        A pointer stored as UNDEFINED bytes (Olympus) means the IFD is the value itself.
        """
        e = self.entries.get(tag)
        if e is None:
            return []
        if e.type == TYPE_UNDEFINED and e.size > 4:
            return [e.offset]
        return [self.tiff.base + v for v in self.ints(tag, limit) if v > 0]

    def dimensions(self) -> tuple[int, int] | None:
        """(ImageWidth, ImageLength) when both are there and positive."""
        width, height = self.first(TAG_WIDTH), self.first(TAG_HEIGHT)
        if width is None or height is None or width <= 0 or height <= 0:
            return None
        return width, height

    def is_full_resolution(self) -> bool:
        """Whether the IFD is marked as the full-resolution image (NewSubfileType 0 or the old
        SubfileType 1); an IFD without either mark is not."""
        return self.first(TAG_SUBFILE_TYPE) == 0 or self.first(TAG_OLD_SUBFILE_TYPE) == 1

    def slots(self, limit: int = MAX_ENTRIES) -> list[Slot]:
        """The first `limit` entries as stored (those inside data), whatever their type or value
        offset: for a caller that patches what another reader will see, not for values."""
        first = self.offset + 2
        n = min(self.count, limit, (self.tiff.size - first) // 12)
        block = self.tiff.data[first:first + 12 * n]
        return [(first + 12 * i, tag, typ, count)
                for i, (tag, typ, count, _) in enumerate(struct.iter_unpack(self.tiff.endian + "HHII", block))]


class TiffFile:
    """One TIFF header and the IFDs reachable from it inside `data`."""

    def __init__(self, data: Buffer, base: int, endian: str, magic: int, first_ifd: int,
                 budget: Budget | None = None, *, lenient: bool = False) -> None:
        self.data = data
        self.size = len(data)
        self.base = base
        self.endian = endian
        self.magic = magic
        self.first_ifd = first_ifd   # absolute
        self.budget = budget if budget is not None else Budget()
        # Also hand out IFDs with no entries or too many (the first MAX_ENTRIES read): see above.
        self.lenient = lenient

    @classmethod
    def parse(cls, data: Buffer, base: int = 0, budget: Budget | None = None, *,
              lenient: bool = False) -> TiffFile | None:
        """The TIFF whose header starts at `base`, or None when there is no valid header there.

        `lenient` takes any magic number after the byte order (as exifread does) and makes the
        file's IFD reads lenient.
        """
        if base < 0 or base + 8 > len(data):
            return None
        order = bytes(data[base:base + 2])
        if order == b"II":
            endian = "<"
        elif order == b"MM":
            endian = ">"
        else:
            return None
        magic, first = struct.unpack_from(endian + "HI", data, base + 2)
        if magic not in MAGICS and not lenient:
            return None
        return cls(data, base, endian, magic, base + first, budget, lenient=lenient)

    def u16(self, pos: int) -> int:
        value: int = struct.unpack_from(self.endian + "H", self.data, pos)[0]
        return value

    def u32(self, pos: int) -> int:
        value: int = struct.unpack_from(self.endian + "I", self.data, pos)[0]
        return value

    def in_range(self, pos: int, length: int) -> bool:
        return 0 <= pos and 0 <= length and pos + length <= self.size

    def ifd(self, pos: int) -> Ifd | None:
        """The IFD at absolute `pos`; None when inside the TIFF header or out of range, already read
        (a cycle) or over budget, and (unless lenient) when it claims no entries or more than
        MAX_ENTRIES."""
        # No IFD starts inside the 8-byte header; reading one there (and exif.py patching it for
        # exifread) would garble the header itself.
        if pos < self.base + 8 or not self.in_range(pos, 2) or pos in self.budget.visited:
            return None
        if self.budget.ifds_left <= 0:
            return None
        self.budget.visited.add(pos)
        self.budget.ifds_left -= 1
        count = self.u16(pos)
        if (count == 0 or count > MAX_ENTRIES) and not self.lenient:
            return None
        # A truncated file may cut an IFD short: keep the entries that are there.
        fit = min(count, MAX_ENTRIES, (self.size - pos - 2) // 12)
        entries: dict[int, Entry] = {}
        first, base, end = pos + 2, self.base, self.size
        block = self.data[first:first + 12 * fit]
        # (Inlined, not a method per entry: exif.py reads a hundred entries per file.)
        for i, (tag, typ, n, value) in enumerate(struct.iter_unpack(self.endian + "HHII", block)):
            type_size = TYPE_SIZES.get(typ)
            if type_size is None or tag in entries:   # unknown type; the first sound one of a tag wins
                continue
            size = n * type_size
            # The value: inline when it fits in 4 bytes, else at its offset; all of it inside data.
            value_pos = first + 12 * i + 8 if size <= 4 else base + value
            if value_pos + size > end:
                continue
            entries[tag] = Entry(tag, typ, n, value_pos, size)
        next_pos = pos + 2 + 12 * count
        next_offset = 0
        if self.in_range(next_pos, 4):
            rel = self.u32(next_pos)
            next_offset = self.base + rel if rel else 0
        return Ifd(self, pos, entries, next_offset, count)

    def chain(self, start: int | None = None, limit: int = MAX_IFDS) -> list[Ifd]:
        """IFD0, IFD1, ... following the next-IFD links from `start` (the first IFD by default),
        at most `limit` of them."""
        out: list[Ifd] = []
        pos = self.first_ifd if start is None else start
        while pos and len(out) < limit:
            ifd = self.ifd(pos)
            if ifd is None:
                break
            out.append(ifd)
            pos = ifd.next_offset
        return out

    def walk(self, limit: int = MAX_IFDS, max_depth: int = MAX_SUBIFD_DEPTH,
             max_subifds: int = MAX_SUBIFDS) -> list[Ifd]:
        """IFD0, its SubIFDs (depth first), IFD1, its SubIFDs, ...: the order exiftool meets them.

        `limit` caps the chain; each IFD's first `max_subifds` SubIFD pointers are followed, down
        to `max_depth` levels below the chain. The whole chain is read before any SubIFD, so a
        SubIFD pointer back into it is a cycle.
        """
        out: list[Ifd] = []

        def visit(ifd: Ifd, depth: int) -> None:
            out.append(ifd)
            if depth >= max_depth:
                return
            for pos in ifd.pointers(TAG_SUBIFDS, max_subifds):
                sub = self.ifd(pos)
                if sub is not None:
                    visit(sub, depth + 1)

        for top in self.chain(limit=limit):
            visit(top, 0)
        return out

    def slice(self, pos: int, length: int) -> bytes | None:
        """`length` bytes at absolute `pos`, or None when they do not all lie inside data."""
        if length <= 0 or not self.in_range(pos, length):
            return None
        return bytes(self.data[pos:pos + length])


def orientation_of(ifd: Ifd | None) -> int:
    """EXIF orientation 1..8 from an IFD0, 1 when absent or out of range."""
    if ifd is None:
        return 1
    value = ifd.first(TAG_ORIENTATION)
    return value if value is not None and 1 <= value <= 8 else 1
