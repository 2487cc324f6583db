"""Thumbnails and `render`: every kind of media, orientation, bad content, atomic writes.

Corpus tests check real camera files against the exiftool oracle; generated fixtures (Pillow,
pillow-heif, ffmpeg) cover formats and modes the corpus lacks and run without it.
"""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import IO, Any

import imageio_ffmpeg
import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from imageapi.core import thumbs
from imageapi.core.errors import MediaError, ToolError, UnsupportedMediaError, UsageError
from imageapi.core.kinds import kind_of
from imageapi.core.libraries import sentinel_path
from imageapi.core.thumbs import Rendered, fit, make_thumbnail, render
from tests.conftest import REPO, find_corpus

BOX = 400
CORPUS = find_corpus()
DECODABLE_DIRS = ("jpeg", "heic", "tiff", "raw", "video", "faces")
NO_PICTURE = ("raw/Canon_M50_nopreview.cr3",)  # only a 28-byte placeholder preview inside


def corpus_files(*dirs: str) -> list[str]:
    """Corpus files (relative names) in these folders, for parametrize; one placeholder without a
    corpus, so that the `corpus` fixture reports the skip (or the failure under CI)."""
    if CORPUS is None:
        return ["<no corpus>"]
    return sorted(
        f"{d}/{p.name}" for d in dirs for p in (CORPUS / d).iterdir() if kind_of(p.name) is not None
    )


def decode(jpeg: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(jpeg))
    assert im.format == "JPEG"
    im.load()
    return im


def as_displayed(im: Image.Image) -> Image.Image:
    """RGB as a colour-managed viewer shows it: the embedded ICC profile (kept in thumbnails)
    converted to sRGB."""
    icc = im.info.get("icc_profile")
    if not icc:
        return im.convert("RGB")
    src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    assert out is not None
    return out


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel (0..255) of two pictures, b resized to a's size."""
    a, b = a.convert("RGB"), b.convert("RGB").resize(a.size)
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def upright_shape(entry: dict[str, Any], rel: str) -> str | None:
    """landscape/portrait/square as displayed, from the oracle (stored size, then orientation
    or a video's rotation). RAW thumbnails come from previews: the README lists them all 3:2."""
    if rel.startswith("raw/"):
        return "landscape"
    w, h = entry.get("ImageWidth"), entry.get("ImageHeight")
    if not w or not h:
        return None
    if entry.get("Orientation") in (5, 6, 7, 8) or entry.get("Rotation") in (90, 270, -90):
        w, h = h, w
    return "landscape" if w > h else "portrait" if h > w else "square"


def shape_of(w: int, h: int) -> str:
    return "landscape" if w > h else "portrait" if h > w else "square"


def rgb(im: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    r, g, b = im.convert("RGB").getpixel(xy)  # type: ignore[misc]
    return r, g, b


def grey(im: Image.Image, xy: tuple[int, int]) -> int:
    value = im.convert("L").getpixel(xy)
    assert isinstance(value, int)
    return value


def leftovers(folder: Path) -> list[str]:
    """Temporary files make_thumbnail may have left in a folder."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------- corpus: every decodable file


@pytest.mark.parametrize("rel", [r for r in corpus_files(*DECODABLE_DIRS) if r not in NO_PICTURE])
def test_corpus_thumbnail(corpus: Path, oracle: dict[str, dict], rel: str, tmp_path: Path) -> None:
    src = corpus / rel
    kind = kind_of(src.name)
    assert kind is not None
    dest = tmp_path / "thumbs" / rel
    res = make_thumbnail(src, kind, dest, BOX)
    assert res.state == "done", res.reason
    assert res.width is not None and res.height is not None
    im = decode(dest.read_bytes())
    assert im.size == (res.width, res.height)
    assert max(im.size) <= BOX
    expected = upright_shape(oracle[rel], rel)
    if expected is not None:
        assert shape_of(*im.size) == expected, f"{rel}: {im.size}, expected {expected}"
    assert not sentinel_path(dest).exists()
    assert leftovers(dest.parent) == []


@pytest.mark.parametrize("rel", [r for r in corpus_files("jpeg", "tiff", "faces")])
def test_corpus_image_size_is_fitted_not_upscaled(corpus: Path, oracle: dict[str, dict], rel: str) -> None:
    entry = oracle[rel]
    w, h = entry["ImageWidth"], entry["ImageHeight"]
    if entry.get("Orientation") in (5, 6, 7, 8):
        w, h = h, w
    out = render(corpus / rel, "image", BOX)
    assert (out.width, out.height) == fit(w, h, BOX)
    assert max(out.width, out.height) == min(BOX, max(w, h))


@pytest.mark.parametrize("series", ["landscape", "portrait"])
def test_corpus_orientations_match_upright_reference(corpus: Path, series: str) -> None:
    """orient_<series>_N.jpg all show the same upright picture once orientation N is applied."""
    # Orientation 1 carries no profile, 2..8 a "Generic RGB" one: compare them as displayed.
    shots = {n: as_displayed(decode(render(corpus / f"jpeg/orient_{series}_{n}.jpg", "image", 200).jpeg))
             for n in range(1, 9)}
    ref = shots[1]
    assert shape_of(*ref.size) == series
    # The comparison can tell a wrong transform from the right one on this picture...
    wrong = [ref.transpose(t) for t in (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_180,
                                        Image.Transpose.FLIP_TOP_BOTTOM)]
    assert min(mean_abs_diff(ref, w) for w in wrong) > 25
    # ...and every orientation comes out as the reference.
    for n, im in shots.items():
        assert im.size == ref.size, n
        assert mean_abs_diff(ref, im) < 10, f"orient_{series}_{n}"


def test_corpus_colour_profile_is_kept(corpus: Path) -> None:
    src = corpus / "jpeg/orient_landscape_6.jpg"
    icc = Image.open(src).info["icc_profile"]
    assert decode(render(src, "image", BOX).jpeg).info.get("icc_profile") == icc
    assert "icc_profile" not in decode(render(corpus / "jpeg/orient_landscape_1.jpg", "image", BOX).jpeg).info


def test_corpus_heic_is_portrait_and_not_rotated_twice(corpus: Path) -> None:
    out = render(corpus / "heic/IMG_5195.HEIC", "heic", BOX)
    assert (out.width, out.height) == fit(2566, 3313, BOX) == (310, 400)


def test_corpus_rotated_mov_is_portrait(corpus: Path) -> None:
    out = render(corpus / "video/rotated.mov", "video", BOX)
    assert out.height > out.width
    assert max(out.width, out.height) <= BOX


def test_corpus_short_clip_uses_an_earlier_frame(corpus: Path, tmp_path: Path) -> None:
    # 1.5 s: no frame at 3 s. With the duration known (no probe) and without it (probe).
    for duration in (1.52, None):
        res = make_thumbnail(corpus / "video/short_1_5s.mp4", "video", tmp_path / "s.mp4", BOX,
                             duration=duration)
        assert res.state == "done", res.reason
        assert decode((tmp_path / "s.mp4").read_bytes()).size == (res.width, res.height)


@pytest.mark.parametrize("rel", ["jpeg/gps_DSCN0010.jpg", "heic/IMG_5195.HEIC", "raw/Nikon_D70.nef",
                                 "tiff/BSG1.tiff"])
def test_corpus_data_given_renders_the_same(corpus: Path, rel: str) -> None:
    src = corpus / rel
    kind = kind_of(src.name)
    assert kind is not None
    assert render(src, kind, BOX, data=src.read_bytes()) == render(src, kind, BOX)


def test_corpus_raw_previews(corpus: Path) -> None:
    # The largest valid preview is 3008x2000 (FinePix: 160x120), never upscaled.
    for name in ("Nikon_D70.nef", "Nikon_D70_previewifd.nef", "Canon_350D.cr2", "Canon_350D.dng"):
        out = render(corpus / "raw" / name, "raw", BOX)
        assert (out.width, out.height) == fit(3008, 2000, BOX), name
    out = render(corpus / "raw/FinePix_S5Pro.raf", "raw", BOX)
    assert (out.width, out.height) == (160, 120)
    big = render(corpus / "raw/Canon_350D.cr2", "raw", 1600)  # face detection size
    assert (big.width, big.height) == fit(3008, 2000, 1600)


# ---------------------------------------------------------------- corpus: no picture


# Content that gives no picture at all: wrong content under a photo name, empty, cut short.
UNSUPPORTED_BAD = ("bad/actually_pdf.jpg", "bad/actually_zip.nef", "bad/actually_elf.mp4", "bad/empty.jpg",
                   "bad/truncated.jpg", "bad/truncated.heic")
# Pictures whose EXIF is malformed (it crashed EXIF readers) or whose scan data is damaged near
# the end: Pillow decodes every pixel row, so they get a thumbnail (orientation 1 when unreadable).
DECODABLE_BAD = ("bad/exif_28-hex_value.jpg", "bad/exif_30-type_error.jpg", "bad/exif_36-memory_error.jpg",
                 "bad/exif_87_OSError.jpg", "bad/invalid_exif_image00971.jpg",
                 "bad/invalid_exif_image01088.jpg", "bad/invalid_exif_image01137.jpg",
                 "bad/invalid_exif_image01551.jpg", "bad/corrupted.jpg")
# Cut files that may still hold a picture: a CR2 cut after its small IFD1 thumbnail, an MP4 whose
# first frames are there. Either a real thumbnail or unsupported, never failed.
EITHER_BAD = ("bad/truncated.cr2", "bad/truncated.mp4")


def test_bad_folder_is_fully_classified(corpus: Path) -> None:
    listed = set(UNSUPPORTED_BAD) | set(DECODABLE_BAD) | set(EITHER_BAD)
    assert {f"bad/{p.name}" for p in (corpus / "bad").iterdir()} == listed


@pytest.mark.parametrize("rel", [*UNSUPPORTED_BAD, *NO_PICTURE])
def test_no_picture_writes_sentinel(corpus: Path, rel: str, tmp_path: Path) -> None:
    src = corpus / rel
    kind = kind_of(src.name)
    assert kind is not None
    dest = tmp_path / "t" / src.name
    dest.parent.mkdir()
    dest.write_bytes(b"stale thumbnail of an earlier version")
    res = make_thumbnail(src, kind, dest, BOX)
    assert res.state == "unsupported"
    assert res.reason
    assert res.width is None and res.height is None
    sentinel = sentinel_path(dest)
    assert sentinel.exists() and sentinel.stat().st_size == 0
    assert not dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == [sentinel.name]
    with pytest.raises(UnsupportedMediaError):
        render(src, kind, BOX)


@pytest.mark.parametrize("rel", DECODABLE_BAD)
def test_malformed_exif_still_gives_a_picture(corpus: Path, oracle: dict[str, dict], rel: str,
                                              tmp_path: Path) -> None:
    dest = tmp_path / "t.jpg"
    res = make_thumbnail(corpus / rel, "image", dest, BOX)
    assert res.state == "done", res.reason
    im = decode(dest.read_bytes())
    w, h = oracle[rel]["ImageWidth"], oracle[rel]["ImageHeight"]  # all orientation 1 or none
    assert im.size == fit(w, h, BOX)
    assert not sentinel_path(dest).exists()


@pytest.mark.parametrize("rel", EITHER_BAD)
def test_cut_files_never_fail(corpus: Path, rel: str, tmp_path: Path) -> None:
    src = corpus / rel
    kind = kind_of(src.name)
    assert kind is not None
    dest = tmp_path / src.name
    res = make_thumbnail(src, kind, dest, BOX)
    assert res.state in ("done", "unsupported"), res.reason
    if res.state == "done":
        assert max(decode(dest.read_bytes()).size) <= BOX
        assert not sentinel_path(dest).exists()
    else:
        assert not dest.exists() and sentinel_path(dest).exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- generated fixtures


def save(im: Image.Image, path: Path, fmt: str, **kw: Any) -> Path:
    im.save(path, fmt, **kw)
    return path


def photo(w: int, h: int) -> Image.Image:
    """A picture with structure in both directions (so flips and rotations show)."""
    r = Image.linear_gradient("L").resize((w, h))
    g = Image.linear_gradient("L").rotate(90).resize((w, h))
    b = Image.radial_gradient("L").resize((w, h))
    return Image.merge("RGB", (r, g, b))


def test_png_with_alpha_is_flattened_on_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (64, 48), (200, 0, 0, 255))
    im.paste((0, 0, 255, 0), (32, 0, 64, 48))  # right half fully transparent (blue underneath)
    out = render(save(im, tmp_path / "a.png", "PNG"), "image", BOX)
    got = decode(out.jpeg)
    assert got.mode == "RGB" and got.size == (64, 48)  # never upscaled
    assert all(abs(a - b) < 12 for a, b in zip(rgb(got, (8, 24)), (200, 0, 0), strict=True))
    assert all(c > 240 for c in rgb(got, (56, 24)))


def test_gif_first_frame_of_a_palette_animation(tmp_path: Path) -> None:
    frames = [Image.new("P", (120, 80), 0), Image.new("P", (120, 80), 1)]
    palette = [255, 0, 0, 0, 0, 255] + [0] * 762
    for f in frames:
        f.putpalette(palette)
    src = tmp_path / "anim.gif"
    frames[0].save(src, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    got = decode(render(src, "image", BOX).jpeg)
    r, g, b = rgb(got, (60, 40))
    assert r > 230 and g < 25 and b < 25  # red: the first frame, not the blue second one


def test_gif_palette_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (40, 40), 1)
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    im.paste(0, (0, 0, 20, 40))
    src = save(im, tmp_path / "t.gif", "GIF", transparency=0)
    got = decode(render(src, "image", BOX).jpeg)
    assert all(c > 240 for c in rgb(got, (5, 20)))  # transparent black -> white
    assert rgb(got, (30, 20))[1] > 180


def test_16bit_grey_tiff_is_scaled_not_clipped(tmp_path: Path) -> None:
    im = Image.new("I;16", (256, 16))
    im.putdata([x * 257 for x in range(256)] * 16)  # 0..65535 left to right
    src = save(im, tmp_path / "g16.tif", "TIFF")
    assert Image.open(src).mode.startswith("I;16")
    got = decode(render(src, "image", BOX).jpeg)
    assert got.mode == "L"
    assert grey(got, (2, 8)) < 10
    assert 110 < grey(got, (128, 8)) < 145  # mid-grey: scaled, not clipped to white
    assert grey(got, (253, 8)) > 245


def tiff_rgb16(w: int, h: int, rgb16: tuple[int, int, int]) -> bytes:
    """A minimal uncompressed 48-bit RGB TIFF (Pillow cannot write one)."""
    pixels = struct.pack(">3H", *rgb16) * (w * h)
    entries = [  # tag, type, count, value
        (256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 8 + 2 + 12 * 9 + 4), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4 + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
    ]
    ifd = struct.pack(">H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack(">HI", value, 0)[:4] if typ == 3 and count == 1 else struct.pack(">I", value)
        ifd += struct.pack(">HHI", tag, typ, count) + packed
    ifd += struct.pack(">I", 0)
    return b"MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">3H", 16, 16, 16) + pixels


def test_48bit_rgb_tiff(tmp_path: Path) -> None:
    src = tmp_path / "rgb16.tif"
    src.write_bytes(tiff_rgb16(30, 20, (65535, 32768, 0)))
    got = decode(render(src, "image", BOX).jpeg)
    assert got.size == (30, 20)
    r, g, b = rgb(got, (15, 10))
    assert r > 240 and 115 < g < 140 and b < 15


def test_cmyk_jpeg_comes_out_rgb(tmp_path: Path) -> None:
    src = save(Image.new("CMYK", (500, 300), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", "JPEG")
    assert Image.open(src).mode == "CMYK"
    out = render(src, "image", BOX)
    got = decode(out.jpeg)
    assert got.mode == "RGB" and got.size == (400, 240)
    assert "icc_profile" not in got.info  # a CMYK profile would not describe these pixels
    r, g, b = rgb(got, (200, 120))
    assert r > 220 and g < 40 and b < 40


def test_tiny_image_is_not_upscaled(tmp_path: Path) -> None:
    src = save(photo(10, 10), tmp_path / "tiny.jpg", "JPEG")
    res = make_thumbnail(src, "image", tmp_path / "t" / "tiny.jpg", BOX)
    assert (res.state, res.width, res.height) == ("done", 10, 10)


@pytest.mark.parametrize("fmt,ext", [("WEBP", "webp"), ("BMP", "bmp"), ("PNG", "png"), ("TIFF", "tif"),
                                     ("AVIF", "avif")])
def test_other_formats(tmp_path: Path, fmt: str, ext: str) -> None:
    src = save(photo(900, 600), tmp_path / f"p.{ext}", fmt)
    kind = kind_of(src.name)
    assert kind is not None
    got = decode(render(src, kind, BOX).jpeg)
    assert got.size == (400, 267)
    assert mean_abs_diff(got, photo(900, 600)) < 8


def exif_with_orientation(n: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = n
    return exif.tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_generated(tmp_path: Path, orientation: int) -> None:
    """A picture stored transformed, tagged with the orientation that undoes it, comes out as
    the upright original."""
    upright = photo(300, 200)
    # The inverse of each orientation's display transform (5 and 7 are their own inverses too).
    inverse = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
               4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
               6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
    t = inverse[orientation]
    stored = upright.transpose(t) if t is not None else upright
    src = save(stored, tmp_path / "o.jpg", "JPEG", quality=95, exif=exif_with_orientation(orientation))
    got = decode(render(src, "image", BOX).jpeg)
    assert got.size == (300, 200)
    assert mean_abs_diff(got, upright) < 4


def test_heic_orientation_applied_once(tmp_path: Path) -> None:
    """libheif applies irot itself (pillow-heif writes orientation 6 as irot and resets the EXIF
    tag): the landscape original comes out portrait, once."""
    base = photo(640, 480)
    src = save(base, tmp_path / "r.heic", "HEIF", quality=90, exif=exif_with_orientation(6))
    got = decode(render(src, "heic", BOX).jpeg)
    assert got.size == (300, 400)
    assert mean_abs_diff(got, base.transpose(Image.Transpose.ROTATE_270)) < 8


def test_avif_orientation(tmp_path: Path) -> None:
    base = photo(640, 480)
    src = save(base, tmp_path / "r.avif", "AVIF", quality=90, exif=exif_with_orientation(6))
    got = decode(render(src, "heic", BOX).jpeg)
    assert got.size == (300, 400)
    assert mean_abs_diff(got, base.transpose(Image.Transpose.ROTATE_270)) < 8


def test_heic_embedded_thumbnail_is_used_when_large_enough(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pillow_heif.as_plugin import HeifImageFile

    src = save(photo(1280, 960), tmp_path / "t.heic", "HEIF", quality=70, thumbnails=[320])
    picked: list[object] = []
    original = HeifImageFile.draft

    def spy(self: HeifImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = original(self, mode, size)
        picked.append(result)
        return result

    monkeypatch.setattr(HeifImageFile, "draft", spy)
    small = decode(render(src, "heic", 200).jpeg)
    assert small.size == (200, 150)
    assert picked[-1] is not None  # the 320x240 thumbnail was decoded, not the 1280x960 image
    assert mean_abs_diff(small, photo(1280, 960)) < 8
    big = decode(render(src, "heic", BOX).jpeg)
    assert big.size == (400, 300)
    assert picked[-1] is None  # the thumbnail is smaller than the box: the full image


def test_jpeg_decodes_at_one_eighth_for_the_final_size(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's requirement: draft is asked for the fitted size itself (not twice the box),
    so a 3200x2400 photo decodes at 1/8 (400x300) for a 400 box."""
    from PIL.JpegImagePlugin import JpegImageFile

    asked: list[tuple[tuple[int, int] | None, tuple[int, int]]] = []
    original = JpegImageFile.draft

    def spy(self: JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> Any:
        result = original(self, mode, size)
        asked.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImageFile, "draft", spy)
    src = save(photo(3200, 2400), tmp_path / "big.jpg", "JPEG", quality=90)
    out = render(src, "image", BOX)
    assert (out.width, out.height) == (400, 300)
    assert asked == [((400, 300), (400, 300))]


def test_generated_bad_content(tmp_path: Path) -> None:
    good = save(photo(800, 600), tmp_path / "good.jpg", "JPEG")
    heic = save(photo(800, 600), tmp_path / "good.heic", "HEIF", quality=50)
    png = save(photo(800, 600), tmp_path / "good.png", "PNG")
    cases = {
        "noise.jpg": random.Random(2).randbytes(5000),
        "empty.png": b"",
        "cut.jpg": good.read_bytes()[: good.stat().st_size // 2],
        "cut.heic": heic.read_bytes()[: heic.stat().st_size * 2 // 3],
        "cut.png": png.read_bytes()[: png.stat().st_size // 2],
        "script.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        "text.heic": b"hello, not a picture\n" * 50,
    }
    for name, content in cases.items():
        src = tmp_path / name
        src.write_bytes(content)
        kind = kind_of(name)
        assert kind is not None
        with pytest.raises(UnsupportedMediaError):
            render(src, kind, BOX)
        with pytest.raises(UnsupportedMediaError):
            render(src, kind, BOX, data=content)


def test_bmff_truncation_check() -> None:
    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    whole = box(b"ftyp", b"heic\x00\x00\x00\x00") + box(b"meta", b"x" * 40) + box(b"mdat", b"y" * 100)
    assert not thumbs.bmff_truncated(io.BytesIO(whole))
    assert thumbs.bmff_truncated(io.BytesIO(whole[:-1]))
    assert thumbs.bmff_truncated(io.BytesIO(whole + b"\x00\x00"))  # a cut box header
    large = box(b"ftyp", b"heic\x00\x00\x00\x00") + struct.pack(">I4sQ", 1, b"mdat", 16 + 10) + b"z" * 10
    assert not thumbs.bmff_truncated(io.BytesIO(large))
    assert thumbs.bmff_truncated(io.BytesIO(large[:-3]))
    to_end = box(b"ftyp", b"heic\x00\x00\x00\x00") + struct.pack(">I4s", 0, b"mdat") + b"z" * 10
    assert not thumbs.bmff_truncated(io.BytesIO(to_end))


def test_bad_arguments_raise_usage_error(tmp_path: Path) -> None:
    src = save(photo(20, 20), tmp_path / "p.jpg", "JPEG")
    for kwargs in ({"kind": "image", "box": 0}, {"kind": "sound", "box": 100}):
        with pytest.raises(UsageError):
            render(src, kwargs["kind"], kwargs["box"])  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        render(src, "image", 100, quality=0)


def test_fit() -> None:
    assert fit(6000, 4000, 400) == (400, 267)
    assert fit(4000, 6000, 400) == (267, 400)
    assert fit(400, 400, 400) == (400, 400)
    assert fit(10, 10, 400) == (10, 10)
    assert fit(10000, 3, 400) == (400, 1)


# ---------------------------------------------------------------- video (ffmpeg)


@pytest.fixture(scope="module")
def testsrc_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("video") / "testsrc.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=1:size=320x240:rate=25",
         "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", str(out)],
        check=True, timeout=60, capture_output=True,
    )
    return out


def test_generated_video(testsrc_mp4: Path, tmp_path: Path) -> None:
    for duration in (None, 1.0):
        dest = tmp_path / f"{duration}.mp4"
        res = make_thumbnail(testsrc_mp4, "video", dest, 200, duration=duration)
        assert res.state == "done", res.reason
        got = decode(dest.read_bytes())
        assert got.size == (res.width, res.height) == (200, 150)
        colours = got.resize((16, 12)).getcolors(16 * 12) or []
        assert len(colours) > 8  # testsrc's pattern, not a blank frame


def test_video_frame_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """3 s into long clips, the middle of short ones, the first frame when the asked one is missing."""
    from imageapi.core import ffmpeg

    src = tmp_path / "clip.mp4"
    src.write_bytes(b"not inspected by the fake")
    asked: list[float] = []
    frame = io.BytesIO()
    photo(160, 90).save(frame, "JPEG")

    def fake_frame(path: Path, at: float, box: int, timeout: float = 60.0) -> bytes:
        asked.append(at)
        if at > 2.0:
            raise MediaError("no frame there")
        return frame.getvalue()

    monkeypatch.setattr(ffmpeg, "extract_frame", fake_frame)
    assert render(src, "video", BOX, duration=1.5) == Rendered(frame.getvalue(), 160, 90)
    assert asked == [0.75]
    asked.clear()
    render(src, "video", BOX, duration=10.0)
    assert asked == [3.0, 0.0]  # 3 s failed (the container lied): first frame


def test_video_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imageapi.core import ffmpeg

    src = tmp_path / "v.mp4"
    src.write_bytes(b"x")
    dest = tmp_path / "t" / "v.mp4"

    def timeout(path: Path, at: float, box: int, timeout: float = 60.0) -> bytes:
        raise ToolError("ffmpeg timed out")

    monkeypatch.setattr(ffmpeg, "extract_frame", timeout)
    res = make_thumbnail(src, "video", dest, duration=5.0)
    assert res.state == "failed" and "timed out" in (res.reason or "")
    assert not dest.exists() and not sentinel_path(dest).exists()

    def no_frame(path: Path, at: float, box: int, timeout: float = 60.0) -> bytes:
        raise MediaError("no video stream")

    monkeypatch.setattr(ffmpeg, "extract_frame", no_frame)
    res = make_thumbnail(src, "video", dest, duration=5.0)
    assert res.state == "unsupported" and "no video stream" in (res.reason or "")
    assert sentinel_path(dest).exists()


# ---------------------------------------------------------------- make_thumbnail: states, atomicity


def test_done_replaces_sentinel_and_creates_folders(tmp_path: Path) -> None:
    src = save(photo(640, 480), tmp_path / "p.jpg", "JPEG")
    dest = tmp_path / "thumbs" / "lib" / "deep" / "p.jpg"
    dest.parent.mkdir(parents=True)
    sentinel_path(dest).touch()  # the file was unsupported before, it was replaced since
    res = make_thumbnail(src, "image", dest)
    assert (res.state, res.reason, res.width, res.height) == ("done", None, 400, 300)
    assert decode(dest.read_bytes()).size == (400, 300)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["p.jpg"]


def test_missing_source_is_failed_not_unsupported(tmp_path: Path) -> None:
    for kind in ("image", "heic", "raw", "video"):
        dest = tmp_path / f"gone.{kind}"
        res = make_thumbnail(tmp_path / "gone", kind, dest)
        assert res.state == "failed", kind
        assert not dest.exists() and not sentinel_path(dest).exists()


def test_transient_errors_are_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = save(photo(64, 64), tmp_path / "p.jpg", "JPEG")
    dest = tmp_path / "t" / "p.jpg"

    def oom(*args: Any, **kwargs: Any) -> Rendered:
        raise MemoryError

    monkeypatch.setattr(thumbs, "render", oom)
    res = make_thumbnail(src, "image", dest)
    assert res.state == "failed" and "memory" in (res.reason or "")
    assert not sentinel_path(dest).exists()


def test_unwritable_destination_is_failed(tmp_path: Path) -> None:
    src = save(photo(64, 64), tmp_path / "p.jpg", "JPEG")
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    res = make_thumbnail(src, "image", blocker / "p.jpg")  # its parent is a file
    assert res.state == "failed" and res.reason


def half_then(exc: BaseException) -> Any:
    def write(fh: IO[bytes], payload: bytes) -> None:
        fh.write(payload[: len(payload) // 2])
        fh.flush()
        raise exc

    return write


@pytest.mark.parametrize("previous", [None, b"previous complete thumbnail"])
def test_failure_while_writing_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               previous: bytes | None) -> None:
    src = save(photo(640, 480), tmp_path / "p.jpg", "JPEG")
    dest = tmp_path / "t" / "p.jpg"
    dest.parent.mkdir()
    if previous is not None:
        dest.write_bytes(previous)
    monkeypatch.setattr(thumbs, "_write_all", half_then(OSError(errno.ENOSPC, "No space left on device")))
    res = make_thumbnail(src, "image", dest)
    assert res.state == "failed" and "No space" in (res.reason or "")
    assert sorted(p.name for p in dest.parent.iterdir()) == ([] if previous is None else ["p.jpg"])
    if previous is not None:
        assert dest.read_bytes() == previous
    # The same with an interruption (KeyboardInterrupt is not caught, but cleaned up).
    monkeypatch.setattr(thumbs, "_write_all", half_then(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        make_thumbnail(src, "image", dest)
    assert leftovers(dest.parent) == []
    monkeypatch.undo()
    assert make_thumbnail(src, "image", dest).state == "done"
    assert decode(dest.read_bytes()).size == (400, 300)


def test_kill_9_while_writing_keeps_the_previous_thumbnail(tmp_path: Path) -> None:
    src = save(photo(640, 480), tmp_path / "p.jpg", "JPEG")
    dest = tmp_path / "t" / "p.jpg"
    dest.parent.mkdir()
    dest.write_bytes(b"previous complete thumbnail")
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from imageapi.core import thumbs

        def write(fh, payload):
            fh.write(payload[: len(payload) // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        thumbs._write_all = write
        thumbs.make_thumbnail(Path({str(src)!r}), "image", Path({str(dest)!r}))
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, timeout=60, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert dest.read_bytes() == b"previous complete thumbnail"
    tmp = [p for p in dest.parent.iterdir() if p != dest]
    assert len(tmp) == 1  # the half-written temporary file, under a name no scan takes for a thumbnail
    assert tmp[0].name.startswith(".p.jpg.tmp-") and not tmp[0].name.endswith("p.jpg")
    assert thumbs.is_temp_name(tmp[0].name)


def test_temp_names() -> None:
    dest = Path("/thumbs/lib/IMG_1.HEIC")
    a, b = thumbs.temp_name(dest), thumbs.temp_name(dest)
    assert a != b and a.parent == dest.parent
    assert a.name.startswith(f".IMG_1.HEIC.tmp-{os.getpid()}-")
    assert not a.name.endswith(dest.name) and not a.name.endswith(".unsupported")
    assert thumbs.is_temp_name(a.name)
    assert not thumbs.is_temp_name(dest.name) and not thumbs.is_temp_name(".IMG_1.HEIC.tmp-12")
    assert not thumbs.is_temp_name("IMG_1.tmp-12-0123abcd")  # a visible file is a user's file
