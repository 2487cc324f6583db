"""Synthetic libraries for the benchmarks: camera-like JPEGs and a large tree of tiny JPEGs.

Only Pillow is needed (numpy is not installed here). Generated sets are reused when a manifest next
to them says they were made with the same parameters, since the large photos take a while to make.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

SIZES = {"12mp": (4000, 3000), "24mp": (6000, 4000)}

# EXIF tags (and sub-IFDs) written into every synthetic photo.
TAG_MAKE, TAG_MODEL, TAG_ORIENTATION = 0x010F, 0x0110, 0x0112
IFD_EXIF, IFD_GPS = 0x8769, 0x8825
TAG_DATETIME_ORIGINAL, TAG_OFFSET_TIME_ORIGINAL = 0x9003, 0x9011
CAMERAS = (("Canon", "Canon EOS 5D Mark IV"), ("NIKON CORPORATION", "NIKON D750"), ("SONY", "ILCE-7M3"),
           ("FUJIFILM", "X-T3"), ("Apple", "iPhone 13"))


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round((value - degrees - minutes / 60) * 3600, 2)
    return float(degrees), float(minutes), seconds


def camera_exif(rng: random.Random, orientation: int) -> Image.Exif:
    """Make, model, orientation, DateTimeOriginal (with its offset) and a GPS position."""
    exif = Image.Exif()
    make, model = rng.choice(CAMERAS)
    exif[TAG_MAKE], exif[TAG_MODEL], exif[TAG_ORIENTATION] = make, model, orientation
    taken = datetime(2015, 1, 1) + timedelta(seconds=rng.randrange(10 * 365 * 86400))
    sub = exif.get_ifd(IFD_EXIF)
    sub[TAG_DATETIME_ORIGINAL] = taken.strftime("%Y:%m:%d %H:%M:%S")
    sub[TAG_OFFSET_TIME_ORIGINAL] = "+02:00"
    lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
    gps = exif.get_ifd(IFD_GPS)
    gps[0] = b"\x02\x03\x00\x00"            # GPSVersionID
    gps[1], gps[2] = ("N" if lat >= 0 else "S"), _dms(lat)
    gps[3], gps[4] = ("E" if lon >= 0 else "W"), _dms(lon)
    gps[5], gps[6] = 0, round(rng.uniform(0, 2500), 1)  # above sea level, metres
    return exif


def _gradient(size: tuple[int, int], angle: float) -> Image.Image:
    # Pillow's 256x256 ramp, turned and stretched: smooth like sky or a wall, cheap to make.
    ramp = Image.linear_gradient("L").rotate(angle, resample=Image.Resampling.BILINEAR)
    return ramp.resize(size, Image.Resampling.BILINEAR)


def photo(width: int, height: int, seed: int, *, noise: float = 16.0, quality: int = 90) -> bytes:
    """A photographic-looking JPEG: smooth colour gradients, soft shapes and mild sensor-like noise,
    with camera EXIF. At quality 90 a 12 MP one is about 5 MB, like a camera's file."""
    rng = random.Random(seed)
    size = (width, height)
    im = Image.merge("RGB", [_gradient(size, rng.uniform(0, 360)) for _ in range(3)])
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randrange(15, 40)):
        x, y = rng.randrange(width), rng.randrange(height)
        s = rng.randrange(width // 80, width // 5)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + s, y + int(s * rng.uniform(0.5, 1.5))), fill=colour)
        else:
            corners = [(x + rng.randrange(-s, s), y + rng.randrange(-s, s)) for _ in range(rng.randrange(3, 7))]
            draw.polygon(corners, fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(3))
    grain = Image.effect_noise(size, noise).convert("RGB")
    im = ImageChops.add(im, grain, scale=1.0, offset=-128)
    orientation = 6 if rng.random() < 0.25 else 1  # some portrait shots, stored rotated like cameras do
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality, exif=camera_exif(rng, orientation))
    return out.getvalue()


def _reuse_or_build(folder: Path, params: dict[str, object], build: Callable[[Path], list[Path]]) -> list[Path]:
    """The files made earlier with the same parameters, or a fresh set."""
    manifest = folder.with_name(folder.name + ".manifest.json")
    if folder.is_dir() and manifest.is_file():
        try:
            saved = json.loads(manifest.read_text())
            files = [folder / rel for rel in saved["files"]]
            if saved["params"] == params and all(p.is_file() for p in files):
                return files
        except (ValueError, KeyError, TypeError):
            pass
    shutil.rmtree(folder, ignore_errors=True)
    manifest.unlink(missing_ok=True)
    folder.mkdir(parents=True)
    files = build(folder)
    manifest.write_text(json.dumps({"params": params, "files": [str(p.relative_to(folder)) for p in files]}))
    return files


def photo_library(folder: Path, count_12mp: int, count_24mp: int, seed: int = 1) -> list[Path]:
    """count_12mp 4000x3000 and count_24mp 6000x4000 camera-like JPEGs, a few per dated folder."""

    def build(root: Path) -> list[Path]:
        files: list[Path] = []
        jobs = [("12mp", i) for i in range(count_12mp)] + [("24mp", i) for i in range(count_24mp)]
        for n, (label, i) in enumerate(jobs):
            w, h = SIZES[label]
            dest = root / f"2023-{n // 8 + 1:02d}" / f"{label.upper()}_{i:04d}.JPG"
            dest.parent.mkdir(exist_ok=True)
            dest.write_bytes(photo(w, h, seed * 100_000 + n))
            files.append(dest)
        return files

    params = {"kind": "photos", "12mp": count_12mp, "24mp": count_24mp, "seed": seed, "version": 1}
    return _reuse_or_build(folder, params, build)


def tiny_jpegs(variants: int = 4, seed: int = 1) -> list[bytes]:
    """A few distinct 16x16 JPEGs, half of them with camera EXIF."""
    rng = random.Random(seed)
    out = []
    for i in range(variants):
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        im = Image.new("RGB", (16, 16), colour)
        ImageDraw.Draw(im).line((0, 0, 15, 15), fill=(255 - colour[0], 128, colour[2]))
        buf = io.BytesIO()
        extra = {"exif": camera_exif(rng, 1)} if i % 2 else {}
        im.save(buf, "JPEG", quality=80, **extra)
        out.append(buf.getvalue())
    return out


def with_comment(jpeg: bytes, text: bytes) -> bytes:
    """The JPEG with a COM segment right after SOI: same picture, different bytes (and hash)."""
    if jpeg[:2] != b"\xff\xd8" or len(text) > 65533:
        raise ValueError("not a JPEG, or comment too long")
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def tiny_tree(folder: Path, files: int, dirs: int, parents: int = 10) -> list[Path]:
    """`files` tiny valid JPEGs spread over `dirs` leaf folders grouped under `parents` folders.
    Each file is one of a few base pictures with its own comment, so every hash differs.
    Writes bytes only (no encoding per file): 100,000 files take seconds."""

    def build(root: Path) -> list[Path]:
        bases = tiny_jpegs()
        parents_n = max(1, min(parents, dirs))
        leaves = []
        for d in range(dirs):
            leaf = root / f"{2000 + d % parents_n}" / f"event-{d:04d}"
            leaf.mkdir(parents=True)
            leaves.append(leaf)
        out: list[Path] = []
        for i in range(files):
            dest = leaves[i % dirs] / f"IMG_{i:06d}.jpg"
            dest.write_bytes(with_comment(bases[i % len(bases)], b"imageapi bench file %06d" % i))
            out.append(dest)
        return out

    params = {"kind": "tiny", "files": files, "dirs": dirs, "parents": parents, "version": 1}
    return _reuse_or_build(folder, params, build)
