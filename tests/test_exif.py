"""read_metadata: the corpus against exiftool's answers, bad files, and generated files with known
EXIF/XMP (GPS south/west, UTC offsets, odd dates) so the tests mean something without the corpus."""

from __future__ import annotations

import io
import json
import struct
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, TiffImagePlugin

from imageapi.core import xmp
from imageapi.core.errors import MediaError
from imageapi.core.exif import parse_date, parse_iso6709, parse_offset, read_metadata
from imageapi.core.ffmpeg import ffmpeg_path, run
from imageapi.core.kinds import kind_of
from imageapi.core.media import TAKEN_SOURCES, Metadata
from tests.conftest import find_corpus

R = TiffImagePlugin.IFDRational


def _corpus_entries() -> list[str]:
    """Oracle keys, read at collection time so each file is its own test."""
    root = find_corpus()
    if root is None:
        return ["<corpus missing>"]
    entries = json.loads((root / "expected_exiftool.json").read_text())
    return sorted(e["SourceFile"].removeprefix("./") for e in entries)


CORPUS_FILES = _corpus_entries()
GOOD_FILES = [f for f in CORPUS_FILES if not f.startswith("bad/")]
BAD_FILES = [f for f in CORPUS_FILES if f.startswith("bad/") or f == "<corpus missing>"]


def _read(path: Path) -> Metadata:
    kind = kind_of(path.name)
    assert kind is not None, path
    data = path.read_bytes() if kind != "video" else None
    return read_metadata(path, kind, data)


def _oracle_date(entry: dict) -> str | None:
    value = entry.get("DateTimeOriginal") or entry.get("CreateDate")
    if not value or value.startswith("0000:00:00"):
        return None
    return value[:10].replace(":", "-") + "T" + value[11:19]


# --------------------------------------------------------------------------------------------
# The oracle


@pytest.mark.parametrize("rel", GOOD_FILES)
def test_corpus_matches_exiftool(rel: str, corpus: Path, oracle: dict[str, dict]) -> None:
    entry = oracle[rel]
    meta = _read(corpus / rel)
    assert meta.taken_at == _oracle_date(entry)
    assert meta.make == entry.get("Make")
    assert meta.model == entry.get("Model")
    assert meta.orientation == entry.get("Orientation")
    assert (meta.width, meta.height) == (entry.get("ImageWidth"), entry.get("ImageHeight"))
    for ours, theirs in ((meta.gps_lat, entry.get("GPSLatitude")), (meta.gps_lon, entry.get("GPSLongitude"))):
        if theirs is None:
            assert ours is None
        else:
            assert ours == pytest.approx(theirs, abs=1e-6)
    if meta.taken_at is not None:
        assert meta.taken_at_source in TAKEN_SOURCES
    if kind_of(rel) == "video":
        assert meta.duration == pytest.approx(entry["Duration"], abs=0.05)
        assert meta.rotation == entry["Rotation"]
        assert meta.video_codec == "h264"


def test_corpus_offsets_and_sources(corpus: Path) -> None:
    """Offsets from EXIF 2.31 tags, from XMP dates with the same wall-clock time, and XMP-only dates."""
    cases = {
        "heic/IMG_5195.HEIC": (-300, "exif_original"),      # OffsetTimeOriginal -05:00
        "jpeg/Pentax_K10D.jpg": (540, "exif_original"),     # XMP exif:DateTimeOriginal +09:00
        "faces/obama2.jpg": (-240, "exif_original"),        # odd EXIF value, XMP xmp:CreateDate -04:00
        "faces/obama.jpg": (None, "exif_original"),         # XMP has a date only: no offset
        "jpeg/no_exif.jpg": (120, "xmp"),                   # EXIF (after 26 kB of XMP) has no date
        "raw/Canon_350D.dng": (-240, "exif_original"),      # XMP in TIFF tag 700
        "raw/Canon_M50_nopreview.cr3": (0, "exif_original"),
    }
    for rel, (offset, source) in cases.items():
        meta = _read(corpus / rel)
        assert (meta.taken_at_offset, meta.taken_at_source) == (offset, source), rel
    # EXIF holds no date here; the XMP xmp:CreateDate does.
    meta = _read(corpus / "bad/invalid_exif_image00971.jpg")
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2010-04-13T09:37:22", 120, "xmp")


def test_corpus_camera_details(corpus: Path) -> None:
    meta = _read(corpus / "heic/IMG_5195.HEIC")
    assert meta.lens == "iPhone 11 Pro Max back triple camera 4.25mm f/1.8"
    assert meta.exposure_time == pytest.approx(1 / 391)
    assert (meta.f_number, meta.iso, meta.focal_length) == (pytest.approx(1.8), 32, pytest.approx(4.25))
    assert meta.gps_alt == pytest.approx(244927 / 940)
    meta = _read(corpus / "faces/biden.jpg")
    assert meta.lens == "EF35mm f/1.4L USM"   # XMP aux:Lens: EXIF has no LensModel
    meta = _read(corpus / "raw/Canon_M50_nopreview.cr3")
    assert (meta.lens, meta.iso) == ("EF-M15-45mm f/3.5-6.3 IS STM", 12800)


@pytest.mark.parametrize("rel", BAD_FILES)
def test_bad_files_return_quickly(rel: str, corpus: Path, oracle: dict[str, dict]) -> None:
    path = corpus / rel
    kind = kind_of(path.name)
    assert kind is not None
    start = time.monotonic()
    try:
        meta = _read(path)
    except MediaError:
        assert kind == "video", "only videos may raise"
        return
    finally:
        assert time.monotonic() - start < 5
    assert isinstance(meta, Metadata)
    entry = oracle[rel]
    # What could be read is kept: where the content is what the name says, agree with exiftool.
    if entry.get("FileType") in ("JPEG", "HEIC", "CR2"):
        assert meta.taken_at == _oracle_date(entry)
        assert (meta.make, meta.model) == (entry.get("Make"), entry.get("Model"))
        assert (meta.width, meta.height) == (entry.get("ImageWidth"), entry.get("ImageHeight"))
        if "GPSLatitude" in entry:
            assert meta.gps_lat == pytest.approx(entry["GPSLatitude"], abs=1e-6)
    else:
        assert meta.warnings, "content that is not what the name says is reported"


def test_bad_video_raises_media_error(corpus: Path) -> None:
    for rel in ("bad/actually_elf.mp4", "bad/truncated.mp4"):
        with pytest.raises(MediaError):
            _read(corpus / rel)


def test_data_and_path_agree(corpus: Path) -> None:
    """Reading from memory and from the file (mmap) give the same answers."""
    for rel in ("jpeg/gps_DSCN0010.jpg", "raw/Nikon_D70.nef", "heic/IMG_5195.HEIC", "raw/FinePix_S5Pro.raf"):
        path = corpus / rel
        kind = kind_of(path.name)
        assert kind is not None
        assert read_metadata(path, kind) == read_metadata(path, kind, path.read_bytes())


# --------------------------------------------------------------------------------------------
# Generated JPEGs


def _jpeg(exif: Image.Exif | None = None, size: tuple[int, int] = (48, 32), xmp_packet: bytes | None = None,
          xmp_first: bool = False) -> bytes:
    buf = io.BytesIO()
    kwargs = {"exif": exif.tobytes()} if exif is not None else {}
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG", **kwargs)
    data = buf.getvalue()
    if xmp_packet is not None:
        payload = xmp.JPEG_APP1_HEADER + xmp_packet
        segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        if xmp_first:
            data = data[:2] + segment + data[2:]
        else:  # after the EXIF segment (or SOI)
            pos = 2 + 2 + struct.unpack(">H", data[4:6])[0] if data[2:4] == b"\xff\xe1" else 2
            data = data[:pos] + segment + data[pos:]
    return data


def _exif(dates: dict[int, str] | None = None, ifd0: dict[int, object] | None = None,
          gps: dict[int, object] | None = None, exif_ifd: dict[int, object] | None = None) -> Image.Exif:
    ex = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        ex[tag] = value
    sub = ex.get_ifd(0x8769)
    for tag, value in {**(dates or {}), **(exif_ifd or {})}.items():
        sub[tag] = value
    if gps:
        g = ex.get_ifd(0x8825)
        for tag, value in gps.items():
            g[tag] = value
    return ex


def _meta(data: bytes, kind: str = "image", name: str = "x.jpg") -> Metadata:
    return read_metadata(Path(name), kind, data)


def _xmp_packet(body: str) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f"{body}</rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>"
    ).encode()


def test_gps_south_west_below_sea_level() -> None:
    gps = {1: "S", 2: (R(33, 1), R(51, 1), R(216, 10)), 3: "W", 4: (R(151, 1), R(12, 1), R(36, 1)),
           5: b"\x01", 6: R(125, 10)}
    meta = _meta(_jpeg(_exif(gps=gps)))
    assert meta.gps_lat == pytest.approx(-(33 + 51 / 60 + 21.6 / 3600), abs=1e-9)
    assert meta.gps_lon == pytest.approx(-(151 + 12 / 60 + 36 / 3600), abs=1e-9)
    assert meta.gps_alt == pytest.approx(-12.5)


def test_gps_north_east_above_sea_level_and_null_island() -> None:
    gps = {1: "N", 2: (R(43, 1), R(2357, 50), R(0, 1)), 3: "E", 4: (R(11, 1), R(14, 1), R(5, 1)),
           5: b"\x00", 6: R(42123, 1000)}
    meta = _meta(_jpeg(_exif(gps=gps)))
    assert meta.gps_lat == pytest.approx(43 + 47.14 / 60, abs=1e-9)
    assert meta.gps_lon == pytest.approx(11 + 14 / 60 + 5 / 3600, abs=1e-9)
    assert meta.gps_alt == pytest.approx(42.123)
    # Receivers without a fix write zeros: that is no position, not a place in the Gulf of Guinea.
    zero = {1: "N", 2: (R(0, 1), R(0, 1), R(0, 1)), 3: "E", 4: (R(0, 1), R(0, 1), R(0, 1))}
    meta = _meta(_jpeg(_exif(gps=zero)))
    assert (meta.gps_lat, meta.gps_lon) == (None, None)
    # A zero denominator is no value, not a crash.
    broken = {1: "N", 2: (R(1, 0), R(0, 0), R(0, 0)), 3: "E", 4: (R(10, 1), R(0, 1), R(0, 1))}
    meta = _meta(_jpeg(_exif(gps=broken)))
    assert (meta.gps_lat, meta.gps_lon) == (None, None)


def test_camera_fields_and_size_from_frame_header() -> None:
    ex = _exif(
        dates={0x9003: "2021:07:04 09:15:00"},
        ifd0={0x010F: "Canon  \x00\x00", 0x0110: " EOS Test   ", 0x0112: 6},
        exif_ifd={0x829A: R(1, 250), 0x829D: R(28, 10), 0x8827: 400, 0x920A: R(35, 1),
                  0xA434: "EF35mm f/2", 0xA002: 4000, 0xA003: 3000},
    )
    meta = _meta(_jpeg(ex, size=(48, 32)))
    assert (meta.make, meta.model, meta.lens) == ("Canon", "EOS Test", "EF35mm f/2")
    assert meta.orientation == 6
    assert (meta.width, meta.height) == (48, 32)   # the frame, not ExifImageWidth/Height
    assert meta.exposure_time == pytest.approx(0.004)
    assert (meta.f_number, meta.iso, meta.focal_length) == (pytest.approx(2.8), 400, pytest.approx(35.0))
    assert meta.warnings == []


def test_orientation_out_of_range_is_none() -> None:
    assert _meta(_jpeg(_exif(ifd0={0x0112: 9}))).orientation is None
    assert _meta(_jpeg(_exif(ifd0={0x0112: 0}))).orientation is None


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        # EXIF 2.31 offset for the original date
        ({0x9003: "2021:07:04 09:15:00", 0x9011: "+05:30"}, ("2021-07-04T09:15:00", 330, "exif_original")),
        # only the general OffsetTime
        ({0x9003: "2021:07:04 09:15:00", 0x9010: "-03:00"}, ("2021-07-04T09:15:00", -180, "exif_original")),
        # subseconds and an unreadable "offset" (the corpus' obama2.jpg)
        ({0x9003: "2009:09:09 20:27:09.60:04:00"}, ("2009-09-09T20:27:09", None, "exif_original")),
        # trailing NULs
        ({0x9003: "2015:01:02 03:04:05\x00\x00\x00"}, ("2015-01-02T03:04:05", None, "exif_original")),
        # an offset written into the value itself
        ({0x9003: "2013:07:05 03:18:27Z"}, ("2013-07-05T03:18:27", 0, "exif_original")),
        # a blank original falls back to the digitized date and its own offset
        ({0x9003: "    :  :     :  :  ", 0x9004: "2010:05:06 07:08:09", 0x9012: "+01:00"},
         ("2010-05-06T07:08:09", 60, "exif_digitized")),
        # zeros mean "no date"
        ({0x9003: "0000:00:00 00:00:00"}, (None, None, None)),
        # a blank offset is no offset
        ({0x9003: "2021:07:04 09:15:00", 0x9011: "   :  "}, ("2021-07-04T09:15:00", None, "exif_original")),
    ],
)
def test_exif_dates(tags: dict[int, str], expected: tuple[str | None, int | None, str | None]) -> None:
    meta = _meta(_jpeg(_exif(dates=tags)))
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == expected
    assert meta.warnings == []


def test_impossible_exif_date_is_a_warning() -> None:
    meta = _meta(_jpeg(_exif(dates={0x9003: "2015:13:45 99:00:00"})))
    assert meta.taken_at is None
    assert any("unreadable EXIF date" in w for w in meta.warnings)


def test_xmp_dates_and_offsets() -> None:
    same = _xmp_packet('<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
                       'xmp:CreateDate="2021-07-04T09:15:00.25+02:00"/>')
    other = _xmp_packet('<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
                        'xmp:CreateDate="2021-07-04T11:15:00+02:00"/>')
    exif = _exif(dates={0x9003: "2021:07:04 09:15:00"})
    # The XMP date shows the same wall-clock time: its offset applies.
    meta = _meta(_jpeg(exif, xmp_packet=same))
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2021-07-04T09:15:00", 120, "exif_original")
    # A different time says nothing about the EXIF one.
    meta = _meta(_jpeg(exif, xmp_packet=other))
    assert (meta.taken_at, meta.taken_at_offset) == ("2021-07-04T09:15:00", None)
    # No EXIF date: the XMP one, with its offset.
    meta = _meta(_jpeg(None, xmp_packet=other))
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2021-07-04T11:15:00", 120, "xmp")


def test_xmp_preference_element_form_and_lens() -> None:
    body = (
        '<rdf:Description rdf:about="" xmlns:xap="http://ns.adobe.com/xap/1.0/" '
        'xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:aux="http://ns.adobe.com/exif/1.0/aux/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmlns:tiff="http://ns.adobe.com/tiff/1.0/">'
        "<photoshop:DateCreated>2001-01-01T00:00:00Z</photoshop:DateCreated>"
        "<xap:CreateDate>2005-05-05T05:05:05</xap:CreateDate>"
        "<exif:DateTimeOriginal>2004-04-04T04:04:04-07:00</exif:DateTimeOriginal>"
        "<aux:Lens>XF23mmF1.4 R</aux:Lens><tiff:Orientation>8</tiff:Orientation>"
        "<tiff:Make><rdf:Alt><rdf:li xml:lang=\"x-default\">FUJIFILM</rdf:li></rdf:Alt></tiff:Make>"
        "</rdf:Description>"
    )
    meta = _meta(_jpeg(None, xmp_packet=_xmp_packet(body), xmp_first=True))
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2004-04-04T04:04:04", -420, "xmp")
    assert (meta.lens, meta.orientation, meta.make) == ("XF23mmF1.4 R", 8, "FUJIFILM")


def test_exif_found_after_large_xmp_segment() -> None:
    """Readers that only look at the first few kB miss this EXIF (the corpus' no_exif.jpg)."""
    padding = "<!-- " + "x" * 40_000 + " -->"
    packet = _xmp_packet(f'<rdf:Description rdf:about=""/>{padding}')
    data = _jpeg(_exif(dates={0x9003: "2019:02:03 04:05:06"}, ifd0={0x0112: 3}), xmp_packet=packet, xmp_first=True)
    meta = _meta(data)
    assert (meta.taken_at, meta.orientation) == ("2019-02-03T04:05:06", 3)


def _tiff_ifd(entries: list[tuple[int, int, int, bytes]], next_offset: int, at: int) -> tuple[bytes, bytes]:
    """One little-endian IFD at offset `at`: (ifd bytes, out-of-line data placed right after it)."""
    entries = sorted(entries)
    data_at = at + 2 + 12 * len(entries) + 4
    head, extra = struct.pack("<H", len(entries)), b""
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            head += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            head += struct.pack("<HHII", tag, typ, count, data_at + len(extra))
            extra += value + (b"\0" if len(value) % 2 else b"")
    return head + struct.pack("<I", next_offset), extra


def _long(tag: int, *values: int) -> tuple[int, int, int, bytes]:
    return (tag, 4, len(values), struct.pack(f"<{len(values)}I", *values))


def _ascii(tag: int, text: str) -> tuple[int, int, int, bytes]:
    raw = text.encode() + b"\0"
    return (tag, 2, len(raw), raw)


def _raw_like_tiff(full_res_marked: bool) -> bytes:
    """IFD0 = a 160x120 thumbnail with a SubIFD holding the 3000x2000 image (a NEF's layout)."""
    sub_at = 400
    ifd0_entries = [_long(0x0100, 160), _long(0x0101, 120), _long(0x014A, sub_at), _ascii(0x010F, "NIKON"),
                    _ascii(0x0110, "TEST D1")]
    if full_res_marked:
        ifd0_entries.append(_long(0x00FE, 1))
    ifd0, extra0 = _tiff_ifd(ifd0_entries, 0, 8)
    sub_entries = [_long(0x0100, 3000), _long(0x0101, 2000)]
    if full_res_marked:
        sub_entries.append(_long(0x00FE, 0))
    sub, extra_sub = _tiff_ifd(sub_entries, 0, sub_at)
    body = b"II*\x00" + struct.pack("<I", 8) + ifd0 + extra0
    return body.ljust(sub_at, b"\0") + sub + extra_sub


def test_tiff_size_prefers_the_full_resolution_ifd() -> None:
    meta = _meta(_raw_like_tiff(full_res_marked=True), "raw", "x.nef")
    assert (meta.width, meta.height) == (3000, 2000)
    assert (meta.make, meta.model) == ("NIKON", "TEST D1")
    # Without SubfileType marks, IFD0 is the image (a CR2's layout).
    meta = _meta(_raw_like_tiff(full_res_marked=False), "raw", "x.cr2")
    assert (meta.width, meta.height) == (160, 120)


def test_tiff_xmp_tag_and_exif() -> None:
    packet = _xmp_packet('<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" '
                         'exif:DateTimeOriginal="2012-03-04T05:06:07+01:00"/>')
    buf = io.BytesIO()
    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[700] = packet
    info.tagtype[700] = 1  # BYTE, as writers store XMP
    info[0x0112] = 1
    Image.new("RGB", (30, 20), "blue").save(buf, "TIFF", tiffinfo=info)
    meta = _meta(buf.getvalue(), "image", "x.tif")
    assert (meta.width, meta.height, meta.orientation) == (30, 20, 1)
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2012-03-04T05:06:07", 60, "xmp")


def test_heif_size_is_stored_size_and_exif_is_read() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    ex = _exif(dates={0x9003: "2022:08:09 10:11:12", 0x9011: "+02:00"}, ifd0={0x0112: 6, 0x010F: "Apple"})
    buf = io.BytesIO()
    Image.new("RGB", (64, 32), "green").save(buf, "HEIF", exif=ex.tobytes(), quality=30)
    meta = _meta(buf.getvalue(), "heic", "x.heic")
    # pillow-heif turns EXIF orientation 6 into an irot; the stored image is still 64x32.
    assert (meta.width, meta.height, meta.orientation) == (64, 32, 6)
    assert (meta.taken_at, meta.taken_at_offset, meta.make) == ("2022-08-09T10:11:12", 120, "Apple")


def test_png_and_webp_exif() -> None:
    ex = _exif(dates={0x9003: "2020:01:02 03:04:05"}, ifd0={0x0110: "PNGCam"})
    for fmt, name in (("PNG", "x.png"), ("WEBP", "x.webp")):
        buf = io.BytesIO()
        Image.new("RGB", (21, 13), "white").save(buf, fmt, exif=ex.tobytes())
        meta = _meta(buf.getvalue(), "image", name)
        assert (meta.width, meta.height, meta.model, meta.taken_at) == (21, 13, "PNGCam", "2020-01-02T03:04:05"), fmt


def test_wrong_content_is_a_warning_not_an_exception() -> None:
    for data, kind, name in ((b"%PDF-1.4 ...", "image", "x.jpg"), (b"", "raw", "x.nef"),
                             (b"PK\x03\x04zipzip", "heic", "x.heic"), (b"\xff\xd8\xff", "image", "x.jpg")):
        meta = _meta(data, kind, name)
        assert meta.taken_at is None and meta.width is None
        assert meta.warnings, name


def test_raw_container_without_raw_module(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "imageapi.core.raw", None)   # import now fails
    meta = _read(corpus / "raw/Canon_M50_nopreview.cr3")
    assert meta.taken_at is None
    assert any("CR3" in w for w in meta.warnings)


def _slow_ifd(at: int, entries: int, next_offset: int = 0) -> bytes:
    """An IFD whose entries each hold 999 rationals, all sharing one data block: exifread decodes
    every value (about 2 ms per entry), so a few thousand entries cost it minutes."""
    data_at = at + 2 + 12 * entries + 4
    ifd = struct.pack("<H", entries)
    for i in range(entries):
        ifd += struct.pack("<HHII", 0xC000 + i % 0x3000, 5, 999, data_at)
    return ifd + struct.pack("<I", next_offset) + b"\x01\0\0\0\x02\0\0\0" * 999


def test_hostile_ifds_stay_fast() -> None:
    # A TIFF: IFD0 with 20000 such entries whose next IFD is itself.
    tiff = b"II*\x00" + struct.pack("<I", 8) + _slow_ifd(8, 20000, next_offset=8)
    start = time.monotonic()
    meta = _meta(tiff, "image", "x.tif")
    assert time.monotonic() - start < 3
    assert isinstance(meta, Metadata)
    # A JPEG: the EXIF IFD (reached through IFD0) has them, next to a real date.
    exif_at = 8 + 2 + 2 * 12 + 4
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x8769, 4, 1, exif_at)
    ifd0 += struct.pack("<I", 0)
    blob = b"II*\x00" + struct.pack("<I", 8) + ifd0 + _slow_ifd(exif_at, 4000)
    segment = b"Exif\0\0" + blob
    assert len(segment) < 0xFFFD
    data = b"\xff\xd8\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + b"\xff\xd9"
    start = time.monotonic()
    meta = _meta(data)
    assert time.monotonic() - start < 3
    assert meta.orientation == 6   # what is sound is still read


@pytest.mark.parametrize("pointer_type", [3, 4, 8, 9, 13])  # SHORT, LONG, SSHORT, SLONG, IFD
def test_exif_pointer_of_any_integer_type_is_tamed(pointer_type: int) -> None:
    # exifread follows an EXIF pointer whatever integer type it is stored as, so the guard must too:
    # typed SLONG, this once took 6.7 s.
    exif_at = 8 + 2 + 2 * 12 + 4
    packed = struct.pack("<HHIi" if pointer_type in (8, 9) else "<HHII", 0x8769, pointer_type, 1, exif_at)
    ifd0 = struct.pack("<H", 2) + struct.pack("<HHII", 0x0112, 3, 1, 6) + packed + struct.pack("<I", 0)
    blob = b"II*\x00" + struct.pack("<I", 8) + ifd0 + _slow_ifd(exif_at, 3000)
    segment = b"Exif\0\0" + blob
    data = b"\xff\xd8\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + b"\xff\xd9"
    start = time.monotonic()
    meta = _meta(data)
    assert time.monotonic() - start < 3
    assert meta.orientation == 6


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_exif_never_raises(data: st.DataObject) -> None:
    base = bytearray(_jpeg(_exif(
        dates={0x9003: "2021:07:04 09:15:00", 0x9011: "+05:30"},
        ifd0={0x010F: "Canon", 0x0112: 6},
        gps={1: "S", 2: (R(33, 1), R(51, 1), R(216, 10)), 3: "W", 4: (R(151, 1), R(12, 1), R(36, 1))},
    )))
    exif_len = struct.unpack(">H", base[4:6])[0]
    for _ in range(data.draw(st.integers(1, 12))):
        pos = data.draw(st.integers(12, 4 + exif_len - 1))   # inside the TIFF structure
        base[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(6, len(base))))
    blob = bytes(base[:cut] if cut else base)
    meta = _meta(blob)
    assert meta.orientation is None or 1 <= meta.orientation <= 8
    assert meta.taken_at_source in (None, *TAKEN_SOURCES)


# --------------------------------------------------------------------------------------------
# Videos


def _video(path: Path, *extra: str) -> Path:
    out = run([ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
               "-i", "testsrc=size=96x64:rate=10:duration=1", "-c:v", "mpeg4", *extra, str(path)], 60)
    assert out.returncode == 0, out.stderr
    return path


def test_video_dates_and_location(tmp_path: Path) -> None:
    apple = _video(tmp_path / "apple.mov", "-movflags", "use_metadata_tags",
                   "-metadata", "com.apple.quicktime.creationdate=2021-04-11T15:47:53-0500",
                   "-metadata", "creation_time=2021-04-11T20:47:53Z",
                   "-metadata", "com.apple.quicktime.make=Apple",
                   "-metadata", "location=-33.8560+151.2100+012.500/")
    meta = read_metadata(apple, "video")
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2021-04-11T15:47:53", -300, "video")
    assert (meta.gps_lat, meta.gps_lon, meta.gps_alt) == (pytest.approx(-33.856), pytest.approx(151.21),
                                                          pytest.approx(12.5))
    assert (meta.width, meta.height, meta.duration, meta.video_codec) == (96, 64, 1.0, "mpeg4")
    assert meta.make == "Apple"
    utc = _video(tmp_path / "utc.mp4", "-metadata", "creation_time=2020-02-03T04:05:06Z")
    meta = read_metadata(utc, "video")
    assert (meta.taken_at, meta.taken_at_offset, meta.taken_at_source) == ("2020-02-03T04:05:06", 0, "video")
    plain = _video(tmp_path / "plain.mp4")
    meta = read_metadata(plain, "video")
    assert (meta.taken_at, meta.rotation, meta.audio_codec) == (None, 0, None)


def test_video_that_is_not_one(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(MediaError):
        read_metadata(bogus, "video")


# --------------------------------------------------------------------------------------------
# Parsers


@pytest.mark.parametrize(
    ("text", "date_only", "expected"),
    [
        ("2009:09:09 20:27:09.60:04:00", False, ("2009-09-09T20:27:09", None)),
        ("2009-09-09T20:27:09.60-04:00", False, ("2009-09-09T20:27:09", -240)),
        ("2021-04-11T15:47:53-0500", False, ("2021-04-11T15:47:53", -300)),
        ("2021-04-11T20:47:53.000000Z", False, ("2021-04-11T20:47:53", 0)),
        ("2010:04:13 09:37", False, ("2010-04-13T09:37:00", None)),
        ("2012-12-06", False, None),
        ("2012-12-06", True, ("2012-12-06T00:00:00", None)),
        ("0000:00:00 00:00:00", False, None),
        ("    :  :     :  :  ", False, None),
        ("2015:02:30 10:00:00", False, None),
        ("2015:01:01 10:00:00+25:00", False, ("2015-01-01T10:00:00", None)),
        ("", False, None),
    ],
)
def test_parse_date(text: str, date_only: bool, expected: tuple[str, int | None] | None) -> None:
    assert parse_date(text, date_only=date_only) == expected


def test_parse_offset() -> None:
    assert [parse_offset(t) for t in ("+05:30", "-0800", "Z", "  ", "+5:30", "+14:01", None)] == \
        [330, -480, 0, None, None, None, None]


def test_parse_iso6709() -> None:
    assert parse_iso6709("+39.0513-094.2887+259.861/") == (39.0513, -94.2887, 259.861)
    lat, lon, alt = parse_iso6709("+3903.078-09417.326/") or (0.0, 0.0, 0.0)   # degrees and minutes
    assert (lat, lon, alt) == (pytest.approx(39.0513), pytest.approx(-94.28876667), None)
    lat, lon, _ = parse_iso6709("-335121.6+1511236/") or (0.0, 0.0, 0.0)       # degrees, minutes, seconds
    assert (lat, lon) == (pytest.approx(-33.856), pytest.approx(151.21))
    assert parse_iso6709("garbage") is None
    assert parse_iso6709("+99.0+000.0/") is None


def test_xmp_parser_fallback_and_no_entities() -> None:
    broken = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreateDate="2011-09-23T12:43:03Z"'
              b' broken <<< & >')
    assert xmp.parse(broken) == {"xmp:CreateDate": "2011-09-23T12:43:03Z"}
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            b'<rdf:Description xmlns:aux="http://ns.adobe.com/exif/1.0/aux/"><aux:Lens>&b;</aux:Lens>'
            b"</rdf:Description></rdf:RDF></x:xmpmeta>")
    assert xmp.parse(bomb) == {"aux:Lens": "&b;"}   # read as text, never expanded
    assert xmp.parse(b"no xmp here") == {}
    assert xmp.parse(None) == {}
