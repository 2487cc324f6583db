"""Generated test media (never committed): photographic-looking JPEGs with EXIF."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw


def make_jpeg(
    path: Path,
    size: tuple[int, int] = (320, 240),
    *,
    taken: str | None = "2021:06:01 12:00:00",
    make: str | None = "TestCam",
    model: str | None = "T1",
    orientation: int | None = None,
    seed: int = 0,
    quality: int = 85,
    gps: tuple[float, float] | None = None,
) -> Path:
    """A small JPEG with content that differs per seed (so hashes differ) and optional EXIF."""
    rnd = random.Random(seed)
    im = Image.new("RGB", size, (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rnd.randrange(size[0]), rnd.randrange(size[1])
        x1, y1 = x0 + rnd.randrange(1, size[0]), y0 + rnd.randrange(1, size[1])
        draw.rectangle([x0, y0, x1, y1], fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if orientation:
        exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal
    if gps is not None:  # (lat, lon) in signed degrees: the GPS IFD's refs and degrees, minutes, seconds
        ifd = exif.get_ifd(0x8825)
        for ref, tag, value, signs in ((1, 2, gps[0], "NS"), (3, 4, gps[1], "EW")):
            ifd[ref] = signs[value < 0]
            minutes, seconds = divmod(abs(value) * 3600, 60)
            ifd[tag] = (float(int(minutes // 60)), float(int(minutes % 60)), round(seconds, 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path
