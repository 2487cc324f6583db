"""A bounded, defensive reader of TIFF structures (IFDs and their entries).

Made for untrusted RAW files: every offset and length is checked against the data size before it
is used, IFD offsets already visited are refused (cycles), and one `Budget` caps how many IFDs a
whole walk may read, shared by the nested TIFFs of a file (maker notes, EXIF blobs). Nothing here
raises on bad content: a broken IFD or entry is skipped and the caller gets less.

Offsets stored in a TIFF are relative to its header (`base`); everything this module hands out
(`Ifd.offset`, `Entry.offset`, `Ifd.pointers`) is absolute in `data`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# The whole file in memory. (Not an mmap: a file truncated on the NAS while mapped kills the
# process with SIGBUS instead of raising.)
Buffer = bytes | bytearray

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

# Tags the preview reader needs.
TAG_SUBFILE_TYPE = 0x00FE
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


@dataclass(frozen=True)
class Entry:
    tag: int
    type: int
    count: int
    offset: int   # absolute position of the value bytes in data
    size: int     # count * size of the type, already checked to lie inside data


@dataclass
class Ifd:
    tiff: TiffFile
    offset: int                 # absolute position of the entry count
    entries: dict[int, Entry]
    next_offset: int            # absolute position of the next IFD, 0 when none

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

    def pointers(self, tag: int) -> list[int]:
        """Absolute offsets of the IFDs `tag` points to (SubIFDs, EXIF IFD, maker-note IFDs).

        A pointer stored as UNDEFINED bytes (Olympus) means the IFD is the value itself.
        """
        e = self.entries.get(tag)
        if e is None:
            return []
        if e.type == TYPE_UNDEFINED and e.size > 4:
            return [e.offset]
        return [self.tiff.base + v for v in self.ints(tag, 64) if v > 0]


class TiffFile:
    """One TIFF header and the IFDs reachable from it inside `data`."""

    def __init__(self, data: Buffer, base: int, endian: str, magic: int, first_ifd: int,
                 budget: Budget | None = None) -> None:
        self.data = data
        self.size = len(data)
        self.base = base
        self.endian = endian
        self.magic = magic
        self.first_ifd = first_ifd   # absolute
        self.budget = budget if budget is not None else Budget()

    @classmethod
    def parse(cls, data: Buffer, base: int = 0, budget: Budget | None = None) -> TiffFile | None:
        """The TIFF whose header starts at `base`, or None when there is no valid header there."""
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
        if magic not in MAGICS:
            return None
        return cls(data, base, endian, magic, base + first, budget)

    def u16(self, pos: int) -> int:
        value: int = struct.unpack_from(self.endian + "H", self.data, pos)[0]
        return value

    def u32(self, pos: int) -> int:
        value: int = struct.unpack_from(self.endian + "I", self.data, pos)[0]
        return value

    def in_range(self, pos: int, length: int) -> bool:
        return 0 <= pos and 0 <= length and pos + length <= self.size

    def ifd(self, pos: int) -> Ifd | None:
        """The IFD at absolute `pos`; None when out of range, already read (a cycle) or over budget."""
        if pos <= 0 or not self.in_range(pos, 2) or pos in self.budget.visited:
            return None
        if self.budget.ifds_left <= 0:
            return None
        self.budget.visited.add(pos)
        self.budget.ifds_left -= 1
        count = self.u16(pos)
        if count == 0 or count > MAX_ENTRIES:
            return None
        # A truncated file may cut an IFD short: keep the entries that are there.
        fit = min(count, (self.size - pos - 2) // 12)
        entries: dict[int, Entry] = {}
        for i in range(fit):
            e = self._entry(pos + 2 + 12 * i)
            if e is not None and e.tag not in entries:
                entries[e.tag] = e
        next_pos = pos + 2 + 12 * count
        next_offset = 0
        if self.in_range(next_pos, 4):
            rel = self.u32(next_pos)
            next_offset = self.base + rel if rel else 0
        return Ifd(self, pos, entries, next_offset)

    def _entry(self, pos: int) -> Entry | None:
        tag, typ, count = struct.unpack_from(self.endian + "HHI", self.data, pos)
        type_size = TYPE_SIZES.get(typ)
        if type_size is None:
            return None
        size = count * type_size
        if size > self.size:   # cannot be real; also keeps the arithmetic below small
            return None
        value_pos = pos + 8 if size <= 4 else self.base + self.u32(pos + 8)
        if not self.in_range(value_pos, size):
            return None
        return Entry(tag, typ, count, value_pos, size)

    def chain(self, start: int | None = None) -> list[Ifd]:
        """IFD0, IFD1, ... following the next-IFD links from `start` (the first IFD by default)."""
        out: list[Ifd] = []
        pos = self.first_ifd if start is None else start
        while pos:
            ifd = self.ifd(pos)
            if ifd is None:
                break
            out.append(ifd)
            pos = ifd.next_offset
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
