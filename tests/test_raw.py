"""The RAW/TIFF embedded-preview reader: the corpus table, hand-built TIFF/RAF/CR3 files, crafted
structures (cycles, absurd counts and offsets) and the exiftool/ffmpeg fallbacks."""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

import exifread
import pytest
from PIL import Image

from imageapi.core import raw
from imageapi.core.errors import UnsupportedMediaError
from imageapi.core.raw import Preview, container_tiff_blobs, embedded_jpegs, extract_preview
from imageapi.core.tiff import MAX_ENTRIES, MAX_IFDS, TiffFile

SHORT, LONG, UNDEFINED, ASCII = 3, 4, 7, 2


def make_jpeg(width: int, height: int, color: tuple[int, int, int] = (200, 60, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=70)
    return buf.getvalue()


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size


class TiffBuilder:
    """Writes a TIFF piece by piece: blobs and IFDs are appended, their offsets returned, so a test
    can point anything anywhere (including backwards, into cycles, or past the end)."""

    def __init__(self, endian: str = "<", magic: int = 42) -> None:
        self.e = endian
        order = b"II" if endian == "<" else b"MM"
        self.buf = bytearray(order + struct.pack(endian + "HI", magic, 0))

    def align(self) -> None:
        if len(self.buf) % 2:
            self.buf += b"\0"

    def blob(self, data: bytes) -> int:
        self.align()
        pos = len(self.buf)
        self.buf += data
        return pos

    def ifd(self, entries: list[tuple[int, int, list[int] | bytes]], next_ifd: int = 0,
            count: int | None = None) -> int:
        """An IFD of (tag, type, values); `count` overrides the entry count written (lies)."""
        packed = []
        for tag, typ, values in sorted(entries, key=lambda x: x[0]):
            if isinstance(values, bytes):
                value, n = values, len(values)
            else:
                fmt = {SHORT: "H", LONG: "I"}[typ]
                value, n = struct.pack(f"{self.e}{len(values)}{fmt}", *values), len(values)
            if len(value) <= 4:
                field = value.ljust(4, b"\0")
            else:
                field = struct.pack(self.e + "I", self.blob(value))
            packed.append(struct.pack(self.e + "HHI", tag, typ, n) + field)
        self.align()
        pos = len(self.buf)
        self.buf += struct.pack(self.e + "H", len(packed) if count is None else count)
        self.buf += b"".join(packed) + struct.pack(self.e + "I", next_ifd)
        return pos

    def link(self, ifd_pos: int, next_pos: int) -> None:
        """Point the next-IFD field of the IFD at `ifd_pos` to `next_pos`."""
        (n,) = struct.unpack_from(self.e + "H", self.buf, ifd_pos)
        struct.pack_into(self.e + "I", self.buf, ifd_pos + 2 + 12 * n, next_pos)

    def first(self, pos: int) -> None:
        struct.pack_into(self.e + "I", self.buf, 4, pos)

    def bytes(self) -> bytes:
        return bytes(self.buf)


def jpeg_ifd(tb: TiffBuilder, jpeg: bytes, *extra: tuple[int, int, list[int] | bytes]) -> int:
    at = tb.blob(jpeg)
    return tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)]), *extra])


def strip_ifd(tb: TiffBuilder, jpeg: bytes, compression: int = 6) -> int:
    at = tb.blob(jpeg)
    return tb.ifd([(0x0103, SHORT, [compression]), (0x0111, LONG, [at]), (0x0117, LONG, [len(jpeg)])])


def preview_of(data: bytes, tmp_path: Path, name: str = "x.nef", fallbacks: bool = False) -> Preview:
    path = tmp_path / name
    path.write_bytes(data)
    return extract_preview(path, fallbacks=fallbacks)


# --- the corpus table (corpus README: "Embedded previews in raw/") ---------------------------

CORPUS_TABLE = {
    # file: (every embedded JPEG larger than a placeholder, the chosen one)
    "raw/Nikon_D70.nef": ([("SubIFD", 3008, 2000), ("Nikon PreviewIFD", 1620, 1080)],
                          ("SubIFD", 3008, 2000)),
    "raw/Nikon_D70_previewifd.nef": ([("Nikon PreviewIFD", 3008, 2000)],
                                     ("Nikon PreviewIFD", 3008, 2000)),
    "raw/Canon_350D.cr2": ([("IFD0", 3008, 2000), ("IFD1", 160, 120)], ("IFD0", 3008, 2000)),
    "raw/Canon_350D.dng": ([("SubIFD1", 1620, 1080), ("SubIFD2", 3008, 2000)],
                           ("SubIFD2", 3008, 2000)),
    "raw/FinePix_S5Pro.raf": ([("RAF IFD1", 160, 120)], ("RAF IFD1", 160, 120)),
}


@pytest.mark.parametrize("rel", sorted(CORPUS_TABLE))
def test_corpus_table(corpus: Path, oracle: dict[str, dict], rel: str) -> None:
    found, (source, width, height) = CORPUS_TABLE[rel]
    data = (corpus / rel).read_bytes()
    assert embedded_jpegs(data) == found
    p = extract_preview(corpus / rel, fallbacks=False)
    assert (p.source, p.width, p.height) == (source, width, height)
    assert jpeg_size(p.jpeg) == (width, height)         # the bytes really are that JPEG
    assert p.orientation == oracle[rel].get("Orientation", 1)
    # Passing the bytes already read gives the same answer.
    assert extract_preview(corpus / rel, data, fallbacks=False) == p


def test_corpus_nikon_previewifd_placeholder_is_skipped(corpus: Path) -> None:
    # The SubIFD JpgFromRaw of this file is 29 bytes: present in the structure, never chosen.
    data = (corpus / "raw/Nikon_D70_previewifd.nef").read_bytes()
    tf = TiffFile.parse(data)
    assert tf is not None
    ifd0 = tf.chain()[0]
    sub = tf.ifd(ifd0.pointers(0x014A)[0])
    assert sub is not None and sub.first(0x0202) == 29


def test_corpus_raf_header_jpeg_is_the_8x8_placeholder(corpus: Path, oracle: dict[str, dict]) -> None:
    blobs = container_tiff_blobs((corpus / "raw/FinePix_S5Pro.raf").read_bytes())
    assert [name for name, _ in blobs] == ["RAF-JPEG"]
    assert jpeg_size(blobs[0][1]) == (8, 8)
    # Its EXIF is what the metadata reader gets: the same make and model exiftool reads.
    tags = exifread.process_file(io.BytesIO(blobs[0][1]), details=False)
    entry = oracle["raw/FinePix_S5Pro.raf"]
    assert str(tags["Image Make"]).strip() == entry["Make"]
    assert str(tags["Image Model"]).strip() == entry["Model"]


@pytest.mark.parametrize("fallbacks", [False, True])
def test_corpus_cr3_placeholder_is_unsupported(corpus: Path, fallbacks: bool) -> None:
    with pytest.raises(UnsupportedMediaError, match="placeholder"):
        extract_preview(corpus / "raw/Canon_M50_nopreview.cr3", fallbacks=fallbacks)


def test_corpus_cr3_cmt_blobs(corpus: Path, oracle: dict[str, dict]) -> None:
    blobs = container_tiff_blobs((corpus / "raw/Canon_M50_nopreview.cr3").read_bytes())
    assert [name for name, _ in blobs] == ["CMT1", "CMT2", "CMT3", "CMT4"]
    assert all(b.startswith((b"II*\0", b"MM\0*")) for _, b in blobs)
    tags = exifread.process_file(io.BytesIO(blobs[0][1]), details=False)
    entry = oracle["raw/Canon_M50_nopreview.cr3"]
    assert str(tags["Image Make"]).strip() == entry["Make"]
    assert str(tags["Image Model"]).strip() == entry["Model"]


@pytest.mark.parametrize("rel", ["bad/truncated.cr2", "bad/actually_zip.nef"])
@pytest.mark.parametrize("fallbacks", [False, True])
def test_corpus_bad_files(corpus: Path, rel: str, fallbacks: bool) -> None:
    try:
        p = extract_preview(corpus / rel, fallbacks=fallbacks)
    except UnsupportedMediaError as e:
        assert e.message
        return
    assert min(p.width, p.height) >= raw.MIN_SIDE
    assert jpeg_size(p.jpeg) == (p.width, p.height)


def test_corpus_truncated_cr2_keeps_the_thumbnail(corpus: Path) -> None:
    # The 738 KB IFD0 preview lies past the 100 KB cut; the IFD1 thumbnail is whole.
    p = extract_preview(corpus / "bad/truncated.cr2", fallbacks=False)
    assert (p.source, p.width, p.height) == ("IFD1", 160, 120)


def test_corpus_non_raw_files_do_not_crash(corpus: Path) -> None:
    for path in sorted((corpus / "bad").iterdir()):
        try:
            extract_preview(path, fallbacks=False)
        except UnsupportedMediaError:
            pass
        assert container_tiff_blobs(path.read_bytes()) == []


# --- hand-built TIFF RAWs ---------------------------------------------------------------------


def test_ifd0_jpeg_and_orientation(tmp_path: Path) -> None:
    tb = TiffBuilder()
    tb.first(jpeg_ifd(tb, make_jpeg(120, 80), (0x0112, SHORT, [6])))
    p = preview_of(tb.bytes(), tmp_path)
    assert (p.source, p.width, p.height, p.orientation) == ("IFD0", 120, 80, 6)
    assert jpeg_size(p.jpeg) == (120, 80)


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_orientation_out_of_range_is_1(tmp_path: Path, orientation: int) -> None:
    tb = TiffBuilder()
    tb.first(jpeg_ifd(tb, make_jpeg(64, 64), (0x0112, SHORT, [orientation])))
    assert preview_of(tb.bytes(), tmp_path).orientation == 1


def test_largest_wins_across_ifd1_and_subifds(tmp_path: Path) -> None:
    tb = TiffBuilder(">")
    sub_small = strip_ifd(tb, make_jpeg(200, 100))
    sub_big = strip_ifd(tb, make_jpeg(400, 300), compression=7)   # DNG says 7 for lossy previews too
    ifd1 = jpeg_ifd(tb, make_jpeg(160, 120))
    ifd0 = tb.ifd([(0x0112, SHORT, [3]), (0x014A, LONG, [sub_small, sub_big])], next_ifd=ifd1)
    tb.first(ifd0)
    assert embedded_jpegs(tb.bytes()) == [("SubIFD", 200, 100), ("SubIFD1", 400, 300),
                                          ("IFD1", 160, 120)]
    p = preview_of(tb.bytes(), tmp_path)
    assert (p.source, p.width, p.height, p.orientation) == ("SubIFD1", 400, 300, 3)


def test_contiguous_strips_form_one_jpeg(tmp_path: Path) -> None:
    jpeg = make_jpeg(96, 64)
    tb = TiffBuilder()
    at = tb.blob(jpeg)
    half = len(jpeg) // 2
    tb.first(tb.ifd([(0x0103, SHORT, [6]), (0x0111, LONG, [at, at + half]),
                     (0x0117, LONG, [half, len(jpeg) - half])]))
    p = preview_of(tb.bytes(), tmp_path)
    assert (p.width, p.height) == (96, 64) and p.jpeg == jpeg


def test_corrupt_larger_preview_falls_back_to_next_valid(tmp_path: Path) -> None:
    big = make_jpeg(640, 480)
    # Keep the headers (so it ranks first) but cut the scan data: it cannot decode.
    broken = big[: len(big) // 3]
    tb = TiffBuilder()
    ifd1 = jpeg_ifd(tb, make_jpeg(160, 120))
    at = tb.blob(broken)
    tb.first(tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(broken)])], next_ifd=ifd1))
    assert ("IFD0", 640, 480) in embedded_jpegs(tb.bytes())
    p = preview_of(tb.bytes(), tmp_path)
    assert (p.source, p.width, p.height) == ("IFD1", 160, 120)


def test_placeholders_only_is_unsupported(tmp_path: Path) -> None:
    tb = TiffBuilder()
    ifd1 = jpeg_ifd(tb, b"<Dummy preview image data>\0\0\0")   # 29 bytes, like the corpus NEF
    ifd0 = jpeg_ifd(tb, make_jpeg(8, 8))                        # decodes, but 8x8 like the RAF one
    tb.link(ifd0, ifd1)
    tb.first(ifd0)
    data = tb.bytes()
    tf = TiffFile.parse(data)
    assert tf is not None and len(tf.chain()) == 2
    assert embedded_jpegs(data) == []
    with pytest.raises(UnsupportedMediaError, match="no embedded preview larger than a placeholder"):
        preview_of(data, tmp_path)


def test_nikon_maker_note_preview_ifd(tmp_path: Path) -> None:
    # The maker note is "Nikon\0" + version + its own TIFF header; offsets inside it are
    # relative to that header, so the preview is only found by reading it that way.
    jpeg = make_jpeg(300, 200)
    note = TiffBuilder()
    at = note.blob(jpeg)
    preview_ifd = note.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)])])
    note.first(note.ifd([(0x0001, UNDEFINED, b"0210"), (0x0011, LONG, [preview_ifd])]))
    makernote = b"Nikon\0\x02\x10\0\0" + note.bytes()

    tb = TiffBuilder()
    thumb = jpeg_ifd(tb, make_jpeg(160, 106))
    exif = tb.ifd([(0x927C, UNDEFINED, makernote)])
    tb.first(tb.ifd([(0x0112, SHORT, [8]), (0x8769, LONG, [exif])], next_ifd=thumb))
    p = preview_of(tb.bytes(), tmp_path)
    assert (p.source, p.width, p.height, p.orientation) == ("Nikon PreviewIFD", 300, 200, 8)
    assert p.jpeg == jpeg


def test_olympus_camera_settings_preview(tmp_path: Path) -> None:
    # New-style Olympus note: "OLYMPUS\0II\3\0" then an IFD; offsets relative to the note start.
    jpeg = make_jpeg(320, 240)
    thumb = make_jpeg(160, 120)
    head = b"OLYMPUS\0II\x03\0"
    # The main IFD sits at note+12, then CameraSettings, the thumbnail and the preview.
    note = bytearray(head)
    main_at, settings_at = 12, 12 + 2 + 24 + 4
    thumb_at = settings_at + 2 + 24 + 4
    jpeg_at = thumb_at + len(thumb)
    main = struct.pack("<H", 2)
    main += struct.pack("<HHII", 0x0100, UNDEFINED, len(thumb), thumb_at)
    main += struct.pack("<HHII", 0x2020, 13, 1, settings_at) + b"\0\0\0\0"
    assert len(main) == settings_at - main_at
    settings = struct.pack("<H", 2)
    settings += struct.pack("<HHII", 0x0101, LONG, 1, jpeg_at)
    settings += struct.pack("<HHII", 0x0102, LONG, 1, len(jpeg)) + b"\0\0\0\0"
    note += main + settings + thumb + jpeg

    tb = TiffBuilder(magic=0x4F52)
    assert tb.bytes()[:4] == b"IIRO"   # the ORF header
    exif = tb.ifd([(0x927C, UNDEFINED, bytes(note))])
    tb.first(tb.ifd([(0x8769, LONG, [exif])]))
    found = embedded_jpegs(tb.bytes())
    assert found == [("Olympus ThumbnailImage", 160, 120), ("Olympus PreviewImage", 320, 240)]
    p = preview_of(tb.bytes(), tmp_path, "x.orf")
    assert (p.source, p.width, p.height) == ("Olympus PreviewImage", 320, 240)
    assert p.jpeg == jpeg


def test_panasonic_rw2_inline_jpeg(tmp_path: Path) -> None:
    jpeg = make_jpeg(256, 192)
    tb = TiffBuilder(magic=0x55)
    assert tb.bytes()[:4] == b"IIU\0"
    tb.first(tb.ifd([(0x002E, UNDEFINED, jpeg), (0x0112, SHORT, [6])]))
    p = preview_of(tb.bytes(), tmp_path, "x.rw2")
    assert (p.source, p.width, p.height, p.orientation) == ("Panasonic JpgFromRaw", 256, 192, 6)


def test_orf_iirs_magic_is_accepted(tmp_path: Path) -> None:
    tb = TiffBuilder(magic=0x5352)
    assert tb.bytes()[:4] == b"IIRS"
    tb.first(jpeg_ifd(tb, make_jpeg(100, 60)))
    assert preview_of(tb.bytes(), tmp_path, "x.orf").source == "IFD0"


# --- crafted structures: must end, fast, with a preview or UnsupportedMediaError -------------


def finishes(fn: Callable[..., object], *args: object) -> object:
    start = time.monotonic()
    try:
        out = fn(*args)
    except UnsupportedMediaError as e:
        out = e
    assert time.monotonic() - start < 2.0
    return out


def test_cyclic_ifd_chain(tmp_path: Path) -> None:
    tb = TiffBuilder()
    ifd0 = jpeg_ifd(tb, make_jpeg(64, 48))
    ifd1 = tb.ifd([(0x0100, SHORT, [1])], next_ifd=ifd0)   # IFD1 -> IFD0 -> IFD1 -> ...
    tb.link(ifd0, ifd1)
    tb.first(ifd0)
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None and [i.offset for i in tf.chain()] == [ifd0, ifd1]   # each IFD once
    p = finishes(preview_of, tb.bytes(), tmp_path)
    assert isinstance(p, Preview) and p.source == "IFD0"


def test_self_referencing_subifds_and_exif(tmp_path: Path) -> None:
    tb = TiffBuilder()
    jpeg = make_jpeg(64, 48)
    jpeg_at = tb.blob(jpeg)
    tb.align()
    pos = len(tb.buf)  # where the next IFD will land: its SubIFD, EXIF and next pointers point at it
    ifd0 = tb.ifd([(0x0201, LONG, [jpeg_at]), (0x0202, LONG, [len(jpeg)]), (0x014A, LONG, [pos]),
                   (0x8769, LONG, [pos])], next_ifd=pos)
    assert ifd0 == pos
    tb.first(ifd0)
    out = finishes(preview_of, tb.bytes(), tmp_path)
    assert isinstance(out, Preview) and out.source == "IFD0"


def test_long_chain_is_capped(tmp_path: Path) -> None:
    # 2000 IFDs in a row, each with a JPEG pointer: the walk stops at the IFD budget.
    tb = TiffBuilder()
    jpeg = make_jpeg(40, 40)
    at = tb.blob(jpeg)
    entries: list[tuple[int, int, list[int] | bytes]] = [(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)])]
    prev = tb.ifd(entries)
    tb.first(prev)
    for _ in range(2000):
        nxt = tb.ifd(entries)
        tb.link(prev, nxt)
        prev = nxt
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None and len(tf.chain()) == MAX_IFDS
    p = finishes(preview_of, tb.bytes(), tmp_path)
    assert isinstance(p, Preview) and (p.width, p.height) == (40, 40)


@pytest.mark.parametrize("case", ["huge_count", "jpeg_past_end", "jpeg_length_max", "offset_max",
                                  "subifd_count_max", "strip_count_max", "count_over_cap"])
def test_absurd_counts_and_offsets(tmp_path: Path, case: str) -> None:
    tb = TiffBuilder()
    jpeg = make_jpeg(64, 48)
    at = tb.blob(jpeg)
    if case == "huge_count":
        ifd = tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)])], count=0xFFFF)
    elif case == "count_over_cap":
        ifd = tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg)])], count=MAX_ENTRIES + 1)
    elif case == "jpeg_past_end":
        ifd = tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [len(jpeg) + 10_000])])
    elif case == "jpeg_length_max":
        ifd = tb.ifd([(0x0201, LONG, [at]), (0x0202, LONG, [0xFFFFFFFF])])
    elif case == "offset_max":
        ifd = tb.ifd([(0x0201, LONG, [0xFFFFFFF0]), (0x0202, LONG, [len(jpeg)])])
    else:
        # A SubIFD list / strip table claiming 0xFFFFFFFF LONGs: far more than the file holds.
        sub = jpeg_ifd(tb, jpeg)
        tag = 0x014A if case == "subifd_count_max" else 0x0111
        ifd = tb.ifd([(0x0103, SHORT, [6]), (0x0117, LONG, [len(jpeg)]), (tag, LONG, [sub, at])])
        struct.pack_into("<I", tb.buf, entry_pos(tb, ifd, tag) + 4, 0xFFFFFFFF)
    tb.first(ifd)
    out = finishes(preview_of, tb.bytes(), tmp_path)
    assert isinstance(out, UnsupportedMediaError)


def entry_pos(tb: TiffBuilder, ifd: int, tag: int) -> int:
    (n,) = struct.unpack_from("<H", tb.buf, ifd)
    for i in range(n):
        if struct.unpack_from("<H", tb.buf, ifd + 2 + 12 * i)[0] == tag:
            return ifd + 2 + 12 * i
    raise AssertionError(f"no tag {tag:#x}")


def test_jpeg_with_junk_in_its_headers_is_not_tried(tmp_path: Path) -> None:
    # Pillow walks junk between JPEG segments one byte at a time in Python (about 1 s for
    # 20 MB): a candidate whose headers do not run cleanly from SOI to SOS is never decoded.
    jpeg = make_jpeg(640, 480)
    sof = jpeg.index(b"\xff\xc0")
    end = sof + 2 + struct.unpack(">H", jpeg[sof + 2:sof + 4])[0]
    junky = jpeg[:end] + bytes(2_000_000) + jpeg[end:]
    padded = jpeg[:end] + b"\xff" * 1000 + jpeg[end:]   # absurd fill-byte run
    tb = TiffBuilder()
    ifd1 = jpeg_ifd(tb, make_jpeg(100, 80))
    ifd2 = jpeg_ifd(tb, padded)
    tb.link(ifd1, ifd2)
    ifd0 = jpeg_ifd(tb, junky)
    tb.link(ifd0, ifd1)
    tb.first(ifd0)
    assert embedded_jpegs(tb.bytes()) == [("IFD1", 100, 80)]
    p = finishes(preview_of, tb.bytes(), tmp_path)
    assert isinstance(p, Preview) and (p.width, p.height) == (100, 80)


def test_jpeg_header_claiming_a_huge_size_is_not_decoded(tmp_path: Path) -> None:
    jpeg = bytearray(make_jpeg(64, 48))
    sof = jpeg.index(b"\xff\xc0")
    struct.pack_into(">HH", jpeg, sof + 5, 60000, 60000)   # height, width: 3.6 gigapixels
    tb = TiffBuilder()
    tb.first(jpeg_ifd(tb, bytes(jpeg)))
    assert embedded_jpegs(tb.bytes()) == []
    assert isinstance(finishes(preview_of, tb.bytes(), tmp_path), UnsupportedMediaError)


def test_no_header_is_not_a_raw(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedMediaError, match="not a RAW file"):
        preview_of(b"PK\x03\x04" + bytes(200), tmp_path)
    with pytest.raises(UnsupportedMediaError, match="empty"):
        preview_of(b"", tmp_path)
    assert container_tiff_blobs(b"") == []


# --- RAF and CR3 built here -----------------------------------------------------------------


def jpeg_with_exif_thumbnail(main: bytes, thumb: bytes, orientation: int) -> bytes:
    """`main` with an APP1 Exif segment whose IFD1 holds `thumb`, as cameras write them."""
    tb = TiffBuilder(">")
    ifd1 = jpeg_ifd(tb, thumb)
    tb.first(tb.ifd([(0x010F, ASCII, b"FUJIFILM\0"), (0x0112, SHORT, [orientation])], next_ifd=ifd1))
    payload = b"Exif\0\0" + tb.bytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return main[:2] + app1 + main[2:]


def make_raf(embedded: bytes) -> bytes:
    head = bytearray(b"FUJIFILMCCD-RAW 0201FF393101FinePix X100".ljust(84, b"\0"))
    head += struct.pack(">II", 100, len(embedded)) + bytes(8)
    return bytes(head) + embedded


@pytest.mark.parametrize(("main_size", "source", "size"), [
    ((8, 8), "RAF IFD1", (160, 120)),       # the corpus case: the header JPEG is a placeholder
    ((640, 480), "RAF", (640, 480)),
])
def test_raf(tmp_path: Path, main_size: tuple[int, int], source: str, size: tuple[int, int]) -> None:
    embedded = jpeg_with_exif_thumbnail(make_jpeg(*main_size), make_jpeg(160, 120), orientation=6)
    data = make_raf(embedded)
    p = preview_of(data, tmp_path, "x.raf")
    assert (p.source, (p.width, p.height), p.orientation) == (source, size, 6)
    assert container_tiff_blobs(data) == [("RAF-JPEG", embedded)]


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_cr3(prvw: bytes, thmb: bytes, orientation: int) -> bytes:
    tb = TiffBuilder()
    tb.first(tb.ifd([(0x010F, ASCII, b"Canon\0"), (0x0112, SHORT, [orientation])]))
    cmt1 = tb.bytes()
    thmb_box = box(b"THMB", b"\0" * 4 + struct.pack(">HHIHH", 160, 120, len(thmb), 1, 0) + thmb)
    canon = box(b"uuid", raw.CANON_UUID + box(b"CNCV", b"CanonCR3_001/00.09.00/00.00.00")
                + box(b"CMT1", cmt1) + box(b"CMT2", cmt1) + thmb_box)
    moov = box(b"moov", canon + box(b"mvhd", bytes(100)))
    prvw_box = box(b"PRVW", b"\0" * 4 + struct.pack(">HHHHI", 1, 640, 480, 1, len(prvw)) + prvw)
    preview = box(b"uuid", raw.PREVIEW_UUID + struct.pack(">QI", 1, 0)[:8] + prvw_box)
    return box(b"ftyp", b"crx \0\0\0\1crx isom") + moov + preview + box(b"mdat", bytes(64))


def test_cr3_prvw_and_thmb(tmp_path: Path) -> None:
    data = make_cr3(make_jpeg(640, 480), make_jpeg(160, 120), orientation=8)
    assert embedded_jpegs(data) == [("CR3 THMB", 160, 120), ("CR3 PRVW", 640, 480)]
    p = preview_of(data, tmp_path, "x.cr3")
    assert (p.source, p.width, p.height, p.orientation) == ("CR3 PRVW", 640, 480, 8)
    blobs = container_tiff_blobs(data)
    assert [n for n, _ in blobs] == ["CMT1", "CMT2"]
    assert blobs[0][1].startswith(b"II*\0")


def test_cr3_with_placeholders_is_unsupported(tmp_path: Path) -> None:
    data = make_cr3(b"<Dummy preview image data>", b"<Dummy thumbnail image data>", orientation=1)
    with pytest.raises(UnsupportedMediaError):
        preview_of(data, tmp_path, "x.cr3")


def test_cr3_box_size_lies_are_bounded(tmp_path: Path) -> None:
    data = bytearray(make_cr3(make_jpeg(640, 480), make_jpeg(160, 120), orientation=1))
    # moov claims 4 GB; a 64-bit size claims 2**63: both are cut to what the file holds.
    struct.pack_into(">I", data, 24, 0xFFFFFFFF)
    out = finishes(preview_of, bytes(data), tmp_path)
    assert isinstance(out, (Preview, UnsupportedMediaError))
    data2 = bytearray(make_cr3(make_jpeg(64, 64), make_jpeg(64, 64), orientation=1))
    data2[24:32] = struct.pack(">I4s", 1, b"moov")
    data2[32:32] = struct.pack(">Q", 1 << 63)
    assert isinstance(finishes(preview_of, bytes(data2), tmp_path), (Preview, UnsupportedMediaError))
    assert isinstance(container_tiff_blobs(bytes(data2)), list)


# --- fallbacks --------------------------------------------------------------------------------


def test_ffmpeg_fallback_decodes_a_plain_tiff(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    Image.new("RGB", (90, 70), (10, 200, 10)).save(path, "TIFF")
    with pytest.raises(UnsupportedMediaError, match="placeholder"):
        extract_preview(path, fallbacks=False)
    p = extract_preview(path)
    assert (p.source, p.width, p.height, p.orientation) == ("ffmpeg", 90, 70, 1)
    assert jpeg_size(p.jpeg) == (90, 70)


def fake_tool(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_exiftool_fallback_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in exiftool that has no PreviewImage but a JpgFromRaw: the second tag must be used.
    jpeg_path = tmp_path / "from_exiftool.jpg"
    jpeg_path.write_bytes(make_jpeg(200, 150))
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir, "exiftool", f'[ "$2" = "-JpgFromRaw" ] && exec cat "{jpeg_path}"\nexit 1\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    tb = TiffBuilder()
    tb.first(tb.ifd([(0x0112, SHORT, [5])]))
    with pytest.raises(UnsupportedMediaError):
        preview_of(tb.bytes(), tmp_path)
    p = preview_of(tb.bytes(), tmp_path, fallbacks=True)
    assert (p.source, p.width, p.height, p.orientation) == ("exiftool:JpgFromRaw", 200, 150, 5)


def test_tool_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Not "exec sleep": the shell's child must be killed too (the whole process group).
    marker = tmp_path / "started"
    slow = fake_tool(tmp_path / "bin", "ffmpeg", f'{shutil.which("touch")} "{marker}"\n{shutil.which("sleep")} 30\n')
    monkeypatch.setattr(raw.ffmpeg, "ffmpeg_path", lambda: str(slow))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))   # and no exiftool
    monkeypatch.setattr(raw, "FFMPEG_TIMEOUT", 0.5)
    start = time.monotonic()
    with pytest.raises(UnsupportedMediaError, match="ffmpeg could not extract one either"):
        preview_of(b"II*\0" + bytes(100), tmp_path, fallbacks=True)
    assert marker.exists()                        # it really ran,
    assert 0.4 < time.monotonic() - start < 5     # and was cut at the timeout


# --- tiff.py for exif.py: the SubIFD walk, size marks, lenient reads --------------------------


def sized_ifd(tb: TiffBuilder, width: int, height: int, subfile: int | None = None,
              subifds: list[int] | None = None) -> int:
    entries: list[tuple[int, int, list[int] | bytes]] = [(0x0100, LONG, [width]), (0x0101, SHORT, [height])]
    if subfile is not None:
        entries.append((0x00FE, LONG, [subfile]))
    if subifds:
        entries.append((0x014A, LONG, subifds))
    return tb.ifd(entries)


def test_walk_order_caps_and_size_marks() -> None:
    tb = TiffBuilder()
    deep = sized_ifd(tb, 40, 30)
    full = sized_ifd(tb, 3000, 2000, subfile=0, subifds=[deep])
    thumb1 = sized_ifd(tb, 1620, 1080, subfile=1)
    ifd1 = sized_ifd(tb, 160, 120, subfile=1)
    back = tb.ifd([(0x014A, LONG, [ifd1])])   # a SubIFD pointing into the chain: read there, once
    ifd0 = sized_ifd(tb, 160, 120, subifds=[full, thumb1, back])
    tb.link(ifd0, ifd1)
    tb.first(ifd0)

    def walk(**kw: int) -> list[int]:
        tf = TiffFile.parse(tb.bytes())
        assert tf is not None
        return [i.offset for i in tf.walk(**kw)]

    # exiftool's order; IFD1 once, where the chain has it (the chain is read before SubIFDs)
    assert walk() == [ifd0, full, deep, thumb1, back, ifd1]
    assert walk(max_depth=1) == [ifd0, full, thumb1, back, ifd1]
    assert walk(max_depth=0) == [ifd0, ifd1]
    assert walk(max_subifds=1) == [ifd0, full, deep, ifd1]
    assert walk(limit=1, max_subifds=2) == [ifd0, full, deep, thumb1]
    assert walk(limit=1) == [ifd0, full, deep, thumb1, back, ifd1]   # now as back's SubIFD
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None
    by_offset = {i.offset: i for i in tf.walk()}
    assert [(by_offset[p].dimensions(), by_offset[p].is_full_resolution()) for p in (ifd0, full, thumb1, back)] \
        == [((160, 120), False), ((3000, 2000), True), ((1620, 1080), False), (None, False)]


def test_old_subfile_type_and_zero_sizes() -> None:
    tb = TiffBuilder()
    tb.first(tb.ifd([(0x00FF, SHORT, [1]), (0x0100, LONG, [0]), (0x0101, LONG, [20])]))
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None
    (ifd,) = tf.chain()
    assert ifd.is_full_resolution() and ifd.dimensions() is None   # a zero width is no size


def test_chain_and_pointer_limits() -> None:
    tb = TiffBuilder()
    subs = [sized_ifd(tb, 10 + i, 10) for i in range(5)]
    ifds = [tb.ifd([(0x014A, LONG, subs)]) for _ in range(4)]
    for a, b in zip(ifds, ifds[1:], strict=False):
        tb.link(a, b)
    tb.first(ifds[0])
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None
    assert [i.offset for i in tf.chain(limit=3)] == ifds[:3]
    ifd0 = tf.ifd(ifds[3])
    assert ifd0 is not None and ifd0.pointers(0x014A, 2) == subs[:2] and ifd0.pointers(0x014A) == subs


def test_ifd_inside_the_header_is_refused() -> None:
    for lenient in (False, True):
        tb = TiffBuilder()
        tb.ifd([(0x0100, LONG, [5])])
        tb.first(4)                              # would read the header as an IFD
        tf = TiffFile.parse(tb.bytes(), lenient=lenient)
        assert tf is not None and tf.chain() == []
    # The same inside a nested TIFF: its header starts at its base, not at 0.
    tb = TiffBuilder()
    inner_at = len(tb.buf)
    tb.buf += b"II*\x00" + struct.pack("<I", 4) + struct.pack("<HHHII", 1, 0x0100, LONG, 1, 9) + bytes(4)
    tf = TiffFile.parse(tb.bytes(), inner_at)
    assert tf is not None and tf.ifd(inner_at + 4) is None and tf.ifd(inner_at + 8) is not None


def test_lenient_reads_what_strict_refuses_within_the_same_bounds() -> None:
    tb = TiffBuilder(magic=99)                                    # no TIFF magic: exifread reads it
    empty = tb.ifd([], count=0)
    big = tb.ifd([(0x0100, LONG, [7]), (0x8769, LONG, [empty])], count=MAX_ENTRIES + 500)
    tb.buf += bytes(12 * (MAX_ENTRIES + 600))                     # room for every claimed entry
    tb.link(empty, big)
    tb.first(empty)
    data = tb.bytes()
    assert TiffFile.parse(data) is None
    tf = TiffFile.parse(data, lenient=True)
    assert tf is not None and tf.magic == 99
    chain = tf.chain()
    assert [i.offset for i in chain] == [empty, big]
    assert chain[0].entries == {} and chain[0].count == 0
    assert chain[1].count == MAX_ENTRIES + 500 and chain[1].first(0x0100) == 7
    assert len(chain[1].slots()) == MAX_ENTRIES and len(chain[1].slots(3)) == 3
    # Strict reading of the same IFDs refuses them.
    strict = TiffFile(data, 0, "<", 42, empty)
    assert strict.ifd(empty) is None and strict.ifd(big) is None
    # Cycles and the IFD budget hold for lenient reads too.
    tb = TiffBuilder()
    ifds = [tb.ifd([], count=0) for _ in range(MAX_IFDS + 10)]
    for a, b in zip(ifds, ifds[1:], strict=False):
        tb.link(a, b)
    tb.link(ifds[-1], ifds[0])
    tb.first(ifds[0])
    tf = TiffFile.parse(tb.bytes(), lenient=True)
    assert tf is not None and [i.offset for i in tf.chain()] == ifds[:MAX_IFDS]


def test_slots_are_the_entries_as_stored() -> None:
    tb = TiffBuilder()
    ifd = tb.ifd([(0x0100, LONG, [5]), (0x0101, LONG, [6]), (0x0110, 2, b"ABCDEFGH")])
    struct.pack_into("<H", tb.buf, ifd + 2 + 12 + 2, 99)         # 0x0101 gets an unknown type
    struct.pack_into("<I", tb.buf, ifd + 2 + 24 + 8, 0xFFFFFF00)  # 0x0110's value lies past the end
    tb.first(ifd)
    tf = TiffFile.parse(tb.bytes())
    assert tf is not None
    (read,) = tf.chain()
    assert set(read.entries) == {0x0100}                          # values: only the sound entry
    assert read.slots() == [
        (ifd + 2, 0x0100, LONG, 1), (ifd + 14, 0x0101, 99, 1), (ifd + 26, 0x0110, 2, 8)]


def test_reads_an_mmap_like_bytes(tmp_path: Path) -> None:
    import mmap

    tb = TiffBuilder()
    tb.first(sized_ifd(tb, 64, 48, subfile=0))
    path = tmp_path / "x.tif"
    path.write_bytes(tb.bytes())
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        tf = TiffFile.parse(mm, lenient=True)
        assert tf is not None and [i.dimensions() for i in tf.walk()] == [(64, 48)]


def test_one_pixel_picture_is_a_placeholder_even_through_ffmpeg(tmp_path: Path) -> None:
    # A TIFF-based RAW whose only picture is 1x1: ffmpeg decodes it, but a 1x1 JPEG is no
    # thumbnail. The file gets a sentinel with the reason instead.
    from imageapi.core.thumbs import make_thumbnail

    path = tmp_path / "one.nef"
    Image.new("RGB", (1, 1), (10, 200, 10)).save(path, "TIFF")
    with pytest.raises(UnsupportedMediaError, match="placeholder"):
        extract_preview(path)
    dest = tmp_path / "thumbs" / "one.nef"
    res = make_thumbnail(path, "raw", dest)
    assert res.state == "unsupported" and "placeholder" in (res.reason or "")
    assert not dest.exists() and dest.with_name("one.nef.unsupported").exists()
    # The same picture at the minimum size is a thumbnail.
    Image.new("RGB", (raw.MIN_SIDE, raw.MIN_SIDE), (10, 200, 10)).save(path, "TIFF")
    assert extract_preview(path).source == "ffmpeg"
