"""RAW containers that are not TIFF files (Minolta MRW, Canon CRW/CIFF, Sigma X3F, Kyocera RAW)
and Phase One IIQ, built in tests/raw_factory.py: previews, metadata and sentinels, checked
against exiftool where it is installed (CI installs it: libimage-exiftool-perl)."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from imageapi.core import raw, rawformats
from imageapi.core.errors import UnsupportedMediaError
from imageapi.core.exif import read_metadata
from imageapi.core.kinds import RAW_EXTS, kind_of
from imageapi.core.raw import container_tiff_blobs, embedded_jpegs, extract_preview
from imageapi.core.thumbs import make_thumbnail, render
from tests import raw_factory as rf

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(EXIFTOOL is None, reason="exiftool not installed (apt-get install "
                                                              "libimage-exiftool-perl)")

# name: (builder, exiftool FileType, our preview source and size, exiftool's tag for that preview)
FIXTURES: dict[str, tuple[Callable[[], bytes], str, tuple[str, int, int] | None, str | None]] = {
    "a2.mrw": (rf.make_mrw, "MRW", ("Minolta PreviewImage", 640, 424), "PreviewImage"),
    "a2_bad_first_byte.mrw": (lambda: rf.make_mrw(bad_first_byte=True), "MRW",
                              ("Minolta PreviewImage", 640, 424), "PreviewImage"),
    "dimage7.mrw": (lambda: rf.make_mrw(None, thumbnail=(640, 480), model="DiMAGE 7",
                                        make="Minolta Co., Ltd."),
                    "MRW", ("Minolta ThumbnailImage", 640, 480), "PreviewImage"),
    "10d.crw": (rf.make_crw, "CRW", ("CIFF JpgFromRaw", 1536, 1024), "JpgFromRaw"),
    "thumb_only.crw": (lambda: rf.make_crw(None), "CRW", ("CIFF ThumbnailImage", 160, 120),
                       "ThumbnailImage"),
    "sd10.x3f": (rf.make_x3f, "X3F", ("X3F IMA2", 640, 426), "PreviewImage"),
    "dp2.x3f": (lambda: rf.make_x3f(exif=True, model="SIGMA DP2"), "X3F", ("X3F IMA2", 640, 426),
                "JpgFromRaw"),
    "p45.iiq": (rf.make_iiq, "IIQ", ("IFD0", 1200, 900), "OtherImage"),
    "contax.raw": (rf.make_kyocera, "RAW", None, None),
}


def write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(FIXTURES[name][0]())
    return path


def exiftool_json(path: Path) -> dict:
    """exiftool -j -n, with "Group:Tag" keys (-G1 -a): an X3F's ImageWidth is both the
    sensor's (SigmaRaw) and the preview's (File, from the JPEG it reads); the first is meant."""
    assert EXIFTOOL is not None
    out = subprocess.run([EXIFTOOL, "-j", "-n", "-G1", "-a", str(path)], capture_output=True,
                         timeout=60, check=True)
    [entry] = json.loads(out.stdout)
    return entry


def tag(entry: dict, name: str) -> object:
    """The value of tag `name` in any group, a container's group before exiftool's File group."""
    found = sorted((k.startswith("File:"), k) for k in entry if k.split(":")[-1] == name)
    return entry[found[0][1]] if found else None


def size_of(jpeg: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(jpeg)) as im:
        im.load()
        return im.size


# --- extensions ---------------------------------------------------------------------------------


def test_every_camera_raw_extension_is_indexed() -> None:
    for ext in ("mrw", "x3f", "crw", "ciff", "iiq", "erf", "kdc", "dcr", "mos", "3fr", "fff", "mef",
                "srf", "sr2", "rwl", "nrw", "k25", "gpr", "raw", "arq", "ori", "srw", "pef"):
        assert kind_of(f"IMG_0001.{ext.upper()}") == "raw", ext


@needs_exiftool
def test_indexed_raw_extensions_are_all_known_to_exiftool() -> None:
    assert EXIFTOOL is not None
    listed = subprocess.run([EXIFTOOL, "-listf"], capture_output=True, text=True, timeout=60).stdout
    known = {w.lower() for w in listed.split()}
    assert RAW_EXTS <= known, RAW_EXTS - known


# --- each fixture -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_preview_and_metadata(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name)
    expected = FIXTURES[name][2]
    meta = read_metadata(path, "raw")
    assert meta.make and meta.model and meta.taken_at, meta
    assert meta.taken_at_source == "exif_original" and not meta.warnings
    if expected is None:
        with pytest.raises(UnsupportedMediaError, match="no embedded preview"):
            extract_preview(path, fallbacks=False)
        return
    source, width, height = expected
    p = extract_preview(path, fallbacks=False)
    assert (p.source, p.width, p.height) == expected
    assert size_of(p.jpeg) == (width, height)
    out = render(path, "raw", 400)
    assert max(out.width, out.height) == min(400, max(width, height))   # fitted, never upscaled
    assert size_of(out.jpeg) == (out.width, out.height)


@needs_exiftool
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_exiftool_reads_each_fixture_as_that_format(tmp_path: Path, name: str) -> None:
    # exiftool is the oracle: it must recognise the container (FileType) with no warning, read
    # the same make, model, date and size, and extract the very bytes we take as the preview.
    path = write(tmp_path, name)
    _, file_type, expected, preview_tag = FIXTURES[name]
    entry = exiftool_json(path)
    assert tag(entry, "FileType") == file_type, entry
    assert tag(entry, "Warning") is None and tag(entry, "Error") is None, entry
    meta = read_metadata(path, "raw")
    assert (meta.make, meta.model) == (tag(entry, "Make"), tag(entry, "Model"))
    taken = str(tag(entry, "DateTimeOriginal"))
    assert meta.taken_at == taken.replace(":", "-", 2).replace(" ", "T")
    assert (meta.width, meta.height) == (tag(entry, "ImageWidth"), tag(entry, "ImageHeight"))
    if preview_tag is None:
        assert all(tag(entry, t) is None for t in ("PreviewImage", "JpgFromRaw", "ThumbnailImage"))
        return
    assert expected is not None and EXIFTOOL is not None
    theirs = subprocess.run([EXIFTOOL, "-b", f"-{preview_tag}", str(path)], capture_output=True,
                            timeout=60).stdout
    assert extract_preview(path, fallbacks=False).jpeg == theirs


# --- orientation, placeholders, what a container lacks ------------------------------------------


@pytest.mark.parametrize(("rotation", "orientation"), [(0, 1), (90, 6), (180, 3), (270, 8)])
@pytest.mark.parametrize("builder", [rf.make_crw, rf.make_x3f])
def test_camera_rotation_turns_the_thumbnail(tmp_path: Path, builder: Callable[..., bytes],
                                             rotation: int, orientation: int) -> None:
    path = tmp_path / "r.raw"
    path.write_bytes(builder(rotation=rotation))
    p = extract_preview(path, fallbacks=False)
    assert p.orientation == orientation
    assert read_metadata(path, "raw").orientation == orientation
    out = render(path, "raw", 400)
    assert (out.height > out.width) == (rotation in (90, 270))


def test_mrw_orientation_comes_from_its_tiff(tmp_path: Path) -> None:
    path = tmp_path / "o.mrw"
    path.write_bytes(rf.make_mrw(orientation=8))
    assert extract_preview(path, fallbacks=False).orientation == 8
    assert read_metadata(path, "raw").orientation == 8


@pytest.mark.parametrize("builder", [
    lambda size: rf.make_mrw(size),
    lambda size: rf.make_crw(size, size),
    lambda size: rf.make_x3f(size),
])
@pytest.mark.parametrize("fallbacks", [False, True])
def test_placeholder_preview_gets_a_sentinel(tmp_path: Path, builder: Callable[[tuple[int, int]], bytes],
                                             fallbacks: bool) -> None:
    # The only picture inside is 1x1 (or 8x8): a placeholder, never a thumbnail.
    for size in ((1, 1), (8, 8), (raw.MIN_SIDE - 1, 200)):
        path = tmp_path / "p.raw"
        path.write_bytes(builder(size))
        assert embedded_jpegs(path.read_bytes()) == []
        with pytest.raises(UnsupportedMediaError, match="placeholder"):
            extract_preview(path, fallbacks=fallbacks)
    dest = tmp_path / "thumbs" / "p.raw"
    res = make_thumbnail(path, "raw", dest)
    assert res.state == "unsupported" and "placeholder" in (res.reason or "")
    assert dest.with_name("p.raw.unsupported").exists() and not dest.exists()


def test_containers_without_a_preview(tmp_path: Path) -> None:
    for name, data, fmt in (("none.mrw", rf.make_mrw(None), "MRW"),
                            ("none.crw", rf.make_crw(None, None), "CIFF"),
                            ("none.x3f", rf.make_x3f(None), "X3F")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(UnsupportedMediaError, match=f"^no embedded preview in this {fmt} file"):
            extract_preview(path, fallbacks=False)
        assert read_metadata(path, "raw").make   # the records are still read
    path = tmp_path / "contax.raw"
    path.write_bytes(rf.make_kyocera())
    res = make_thumbnail(path, "raw", tmp_path / "t" / "contax.raw")
    assert res.state == "unsupported" and res.reason == "Kyocera RAW files hold no embedded preview"


def test_container_blobs() -> None:
    blobs = container_tiff_blobs(rf.make_mrw())
    assert [n for n, _ in blobs] == ["MRW-TTW"] and blobs[0][1].startswith(b"MM\0*")
    blobs = container_tiff_blobs(rf.make_x3f(exif=True))
    assert [n for n, _ in blobs] == ["X3F-JPEG"] and blobs[0][1][:4] == b"\xff\xd8\xff\xe1"
    assert container_tiff_blobs(rf.make_x3f()) == []     # an SD10's preview has no EXIF
    assert container_tiff_blobs(rf.make_crw()) == []


# --- bounded readers ----------------------------------------------------------------------------


def test_ciff_heap_pointing_to_itself_ends() -> None:
    # A heap record (type 0x30) whose span is the whole root heap: the same directory again.
    data = bytearray(rf.make_crw())
    root = 26
    dir_at = root + struct.unpack_from("<I", data, len(data) - 4)[0]
    (count,) = struct.unpack_from("<H", data, dir_at)
    for i in range(count):
        entry = dir_at + 2 + 10 * i
        if struct.unpack_from("<H", data, entry)[0] == 0x300A:
            struct.pack_into("<HII", data, entry, 0x300A, len(data) - root, 0)
    box = rawformats.read(bytes(data))
    assert box is not None and box.format == "CIFF"
    assert [s for s, _, _ in box.jpegs] == ["CIFF JpgFromRaw", "CIFF ThumbnailImage"]


def test_lengths_and_counts_beyond_the_file_are_not_followed() -> None:
    mrw = bytearray(rf.make_mrw())
    struct.pack_into(">I", mrw, 4, 0xFFFFFFFF)                 # header claims 4 GB of blocks
    box = rawformats.read(bytes(mrw))
    assert box is not None and box.tiff is not None and box.width == 3264
    x3f = bytearray(rf.make_x3f())
    dir_at = struct.unpack_from("<I", x3f, len(x3f) - 4)[0]
    struct.pack_into("<I", x3f, dir_at + 8, 0xFFFFFFFF)         # 4 billion sections
    struct.pack_into("<I", x3f, dir_at + 12 + 4, 0xFFFFFFF0)    # the first one 4 GB long
    box = rawformats.read(bytes(x3f))
    assert box is not None and box.jpegs == [] and box.make == "SIGMA"
    struct.pack_into("<I", x3f, len(x3f) - 4, 0xFFFFFFFF)       # directory past the end
    box = rawformats.read(bytes(x3f))
    assert box is not None and box.make is None and box.width == 2268
    crw = bytearray(rf.make_crw())
    struct.pack_into("<I", crw, len(crw) - 4, 0xFFFFFFF0)       # root directory past the end
    box = rawformats.read(bytes(crw))
    assert box is not None and box.jpegs == [] and box.make is None
