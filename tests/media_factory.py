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
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path
