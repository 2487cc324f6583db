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

from imageapi.core.errors import MediaError
from imageapi.core.raw import MIN_SIDE, Preview, container_tiff_blobs, embedded_jpegs, extract_preview

SETTINGS = settings(deadline=timedelta(seconds=5), derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
LIMIT = 2.0   # seconds per call

HEADERS = [b"", b"II*\0\x08\0\0\0", b"MM\0*\0\0\0\x08", b"IIU\0\x08\0\0\0", b"IIRO\x08\0\0\0",
           b"IIRS\x08\0\0\0", b"FUJIFILMCCD-RAW 0201", b"\0\0\0\x18ftypcrx \0\0\0\1crx isom"]


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
