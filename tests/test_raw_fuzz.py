"""Property tests: whatever bytes come in, the RAW preview reader returns a Preview or raises
MediaError, quickly. Random bytes behind each header the reader knows, TIFF structures with
random entries, and corpus RAWs with bit flips, cuts and overwritten offsets."""

from __future__ import annotations

import io
import struct
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from imageapi.core import rawformats
from imageapi.core.errors import MediaError
from imageapi.core.exif import read_metadata
from imageapi.core.raw import MIN_SIDE, Preview, container_tiff_blobs, embedded_jpegs, extract_preview
from tests import raw_factory as rf

SETTINGS = settings(deadline=timedelta(seconds=5), derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 2.0   # seconds per call

HEADERS = [b"", b"II*\0\x08\0\0\0", b"MM\0*\0\0\0\x08", b"IIU\0\x08\0\0\0", b"IIRO\x08\0\0\0",
           b"IIRS\x08\0\0\0", b"FUJIFILMCCD-RAW 0201", b"\0\0\0\x18ftypcrx \0\0\0\1crx isom",
           b"\0MRM\0\0\x01\0", b"II\x1a\0\0\0HEAPCCDR", b"MM\0\0\0\x1aHEAPCCDR", b"FOVb\x02\0\x02\0",
           bytes(25) + b"ARECOYK"]


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (90, 30, 160)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = small_jpeg()


def check(data: bytes) -> None:
    start = time.monotonic()
    try:
        p = extract_preview(Path("fuzz.nef"), data, fallbacks=False)
    except MediaError as e:
        assert e.message
    else:
        assert isinstance(p, Preview)
        assert p.jpeg[:2] == b"\xff\xd8" and len(p.jpeg) <= len(data)
        assert min(p.width, p.height) >= MIN_SIDE
        assert 1 <= p.orientation <= 8
    assert time.monotonic() - start < LIMIT

    start = time.monotonic()
    blobs = container_tiff_blobs(data)
    assert all(isinstance(n, str) and isinstance(b, bytes) and len(b) <= len(data) for n, b in blobs)
    found = embedded_jpegs(data)
    assert all(min(w, h) >= MIN_SIDE for _, w, h in found)
    box = rawformats.read(data)
    if box is not None:
        assert all(0 <= pos and pos + n <= len(data) for _, pos, n in box.jpegs)
        assert box.tiff is None or 0 <= box.tiff[0] < box.tiff[1] <= len(data)
    assert time.monotonic() - start < LIMIT

    start = time.monotonic()
    meta = read_metadata(Path("fuzz.raw"), "raw", data)
    assert not any("reader failed" in w for w in meta.warnings), meta.warnings
    assert time.monotonic() - start < LIMIT


@settings(SETTINGS, max_examples=60)
@given(st.sampled_from(HEADERS), st.binary(max_size=2048))
def test_random_bytes(header: bytes, body: bytes) -> None:
    check(header + body)


# Tags the reader follows, so random entries hit its pointer and length handling.
TAGS = [0x0103, 0x0111, 0x0112, 0x0117, 0x014A, 0x0201, 0x0202, 0x8769, 0x927C, 0x0011, 0x002E]
u32 = st.one_of(st.integers(0, 64), st.integers(0, 4096), st.integers(0, 2**32 - 1),
                st.sampled_from([0, 8, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
entry = st.tuples(st.sampled_from(TAGS), st.integers(0, 20), u32, u32)


@settings(SETTINGS, max_examples=100)
@given(endian=st.sampled_from(["<", ">"]), magic=st.sampled_from([42, 0x55, 0x4F52]),
       entries=st.lists(entry, max_size=12), count=st.one_of(st.none(), st.integers(0, 0xFFFF)),
       with_jpeg=st.booleans(), tail=st.binary(max_size=256))
def test_tiff_structures(endian: str, magic: int, entries: list[tuple[int, int, int, int]],
                         count: int | None, with_jpeg: bool, tail: bytes) -> None:
    # IFD0 at 8 whose entries carry random types, counts and values; the next-IFD pointer is
    # 8 (a cycle); a real JPEG follows, so offsets near it can make a decodable candidate.
    order = b"II" if endian == "<" else b"MM"
    data = bytearray(order + struct.pack(endian + "HI", magic, 8))
    data += struct.pack(endian + "H", len(entries) if count is None else count)
    for tag, typ, n, value in entries:
        data += struct.pack(endian + "HHII", tag, typ, n, value)
    data += struct.pack(endian + "I", 8)
    if with_jpeg:
        data += JPEG
    check(bytes(data + tail))


CORPUS_RAWS = ["raw/Nikon_D70.nef", "raw/Nikon_D70_previewifd.nef", "raw/Canon_350D.cr2",
               "raw/Canon_350D.dng", "raw/FinePix_S5Pro.raf", "raw/Canon_M50_nopreview.cr3"]
_loaded: dict[str, bytes] = {}


def corpus_bytes(corpus: Path, rel: str) -> bytes:
    if rel not in _loaded:
        _loaded[rel] = (corpus / rel).read_bytes()
    return _loaded[rel]


# One mutation: flip a bit, cut the file, or overwrite 4 bytes (an offset, a count) with a value.
position = st.one_of(st.integers(0, 4095), st.floats(0, 1, exclude_max=True))
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("u32"), position, u32),
)


def mutate(data: bytes, ops: list[tuple[str, int | float, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, arg in ops:
        if not buf:
            break
        pos = int(where * len(buf)) if isinstance(where, float) else where % len(buf)
        if op == "flip":
            buf[pos] ^= 1 << arg
        elif op == "cut":
            del buf[pos:]
        elif pos + 4 <= len(buf):
            struct.pack_into("<I" if buf[:2] == b"II" else ">I", buf, pos, arg)
    return bytes(buf)


@settings(SETTINGS, max_examples=120)
@given(rel=st.sampled_from(CORPUS_RAWS), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_corpus_raws(corpus: Path, rel: str, ops: list[tuple[str, int | float, int]]) -> None:
    check(mutate(corpus_bytes(corpus, rel), ops))


def test_unmutated_corpus_raws_pass_the_same_check(corpus: Path) -> None:
    # The baseline the mutations start from: every corpus RAW goes through check() as it is.
    for rel in CORPUS_RAWS:
        check(corpus_bytes(corpus, rel))


@pytest.mark.parametrize("size", [0, 1, 7, 8, 91, 92])
def test_short_inputs(size: int) -> None:
    for header in HEADERS:
        check((header + bytes(100))[:size])


# Generated containers of the formats rawformats.py reads, mutated the same way: lengths, counts
# and offsets overwritten (MRW blocks, CIFF heaps pointing anywhere, X3F's directory pointer).
GENERATED = {
    "mrw": lambda: rf.make_mrw((96, 64)),
    "mrw_thumbnail": lambda: rf.make_mrw(None, thumbnail=(64, 48)),
    "crw": lambda: rf.make_crw((96, 64), (64, 48)),
    "x3f": lambda: rf.make_x3f((96, 64), exif=True),
    "iiq": lambda: rf.make_iiq((96, 64)),
    "kyocera": rf.make_kyocera,
}
_generated: dict[str, bytes] = {}


def generated_bytes(name: str) -> bytes:
    if name not in _generated:
        _generated[name] = GENERATED[name]()
    return _generated[name]


@settings(SETTINGS, max_examples=150)
@given(name=st.sampled_from(sorted(GENERATED)), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_generated_containers(name: str, ops: list[tuple[str, int | float, int]]) -> None:
    check(mutate(generated_bytes(name), ops))


# A CIFF heap whose records are random: sub-heaps (types 0x28/0x30) pointing anywhere, into
# themselves or their parent, values in the directory, lengths past the end.
ciff_record = st.tuples(st.sampled_from([0x300A, 0x2804, 0x2807, 0x080A, 0x180E, 0x1810, 0x2007,
                                         0x2008, 0x5817, 0x8000, 0x3000]), u32, u32)


@settings(SETTINGS, max_examples=100)
@given(records=st.lists(ciff_record, max_size=10), count=st.one_of(st.none(), st.integers(0, 0xFFFF)),
       dir_offset=st.one_of(st.none(), u32), endian=st.sampled_from(["<", ">"]))
def test_ciff_structures(records: list[tuple[int, int, int]], count: int | None, dir_offset: int | None,
                         endian: str) -> None:
    body = JPEG
    directory = struct.pack(endian + "H", len(records) if count is None else count)
    directory += b"".join(struct.pack(endian + "HII", tag, size, offset) for tag, size, offset in records)
    heap = body + directory + struct.pack(endian + "I", len(body) if dir_offset is None else dir_offset)
    order = b"II" if endian == "<" else b"MM"
    check(order + struct.pack(endian + "I", 26) + b"HEAPCCDR" + bytes(12) + heap)


# An X3F whose directory lists random sections (offsets, lengths, types) over real content;
# an offset is often that of a real section header, so its length and type are what is tested.
x3f_section = st.tuples(st.one_of(st.sampled_from(["prop", "jpeg", "dir"]), u32), u32,
                        st.sampled_from([b"IMA2", b"IMAG", b"PROP", b"SECd", b"JUNK"]))


@settings(SETTINGS, max_examples=100)
@given(sections=st.lists(x3f_section, max_size=8), count=st.one_of(st.none(), u32),
       props=st.tuples(u32, u32, u32))
def test_x3f_structures(sections: list[tuple[int | str, int, bytes]], count: int | None,
                        props: tuple[int, int, int]) -> None:
    base = bytearray(rf.make_x3f((64, 48)))
    # A PROP section with random entry and character counts, and the real JPEG, at known places.
    prop_at = len(base)
    entries, fmt, chars = props
    base += b"SECp" + struct.pack("<IIIII", 0x20000, entries, fmt % 2, 0, chars) + bytes(64)
    jpeg_at = len(base)
    base += b"SECi" + struct.pack("<IIIIII", 0x20000, 2, 18, 48, 40, 0) + JPEG
    dir_at = len(base)
    places = {"prop": prop_at, "jpeg": jpeg_at, "dir": dir_at}
    listed = [(prop_at, 88, b"PROP"), (jpeg_at, 28 + len(JPEG), b"IMA2"),
              *((places[o] if isinstance(o, str) else o, n, k) for o, n, k in sections)]
    base += b"SECd" + struct.pack("<II", 0x20000, len(listed) if count is None else count)
    base += b"".join(struct.pack("<II4s", o, n, k) for o, n, k in listed)
    check(bytes(base + struct.pack("<I", dir_at)))
