"""Perceptual hashes of pictures, computed from their stored thumbnail (upright, 400 px) in the
worker processes.

Two hashes per content, both DCT hashes (the pHash of Zauner 2010), written here with numpy and
Pillow rather than taken from the `imagehash` package: it is twenty lines, it needs no SciPy, and
the finer one (which imagehash does not make from one decode) comes from the same pixels.

- `phash`: 64 bits. The picture in grey at 32x32, its 2-D DCT, the 8x8 lowest frequencies, one bit
  per coefficient above their median. Resizing, recompression, a format round trip and a uniform
  change of brightness move few bits; it is what candidates are found by (core/duplicates.py).
- `fine`: 256 bits. The same at 64x64 with the 16x16 lowest frequencies: finer detail, so frames of
  a burst (a head turned, a hand moved) differ by many more of its bits than copies of one photo.
- `phash_inner`, `fine_inner`: both again for the centre of the picture, 2.5% cut off each side:
  what a copy cropped by 5% (a light edit) holds, so that such a copy matches its original closely.

Bits are numbered from the lowest frequency, row by row; a hash is stored as lower-case hex.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

PHASH_BITS = 64
FINE_BITS = 256


@cache
def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: D @ x is the DCT of the column x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0, :] = np.sqrt(1.0 / n)
    return d


def _dct_bits(pixels: np.ndarray, keep: int) -> int:
    """The keep x keep lowest DCT frequencies of a square grey picture, one bit each: above their
    median or not."""
    d = _dct_matrix(pixels.shape[0])
    low = (d @ pixels @ d.T)[:keep, :keep].ravel()
    return int.from_bytes(np.packbits(low > np.median(low)).tobytes(), "big")


INNER_CUT = 0.025          # of the width and of the height, off each side


def hashes_of(img: Image.Image) -> tuple[str, str]:
    """(phash, fine) of an upright picture, as hex. Box-filtered (area averages) to 64x64, then
    halved to 32x32: what a smaller or recompressed copy gives too."""
    grey64 = img.convert("L").resize((64, 64), Image.Resampling.BOX)
    px64 = np.asarray(grey64, dtype=np.float64)
    px32 = px64.reshape(32, 2, 32, 2).mean(axis=(1, 3))
    return f"{_dct_bits(px32, 8):016x}", f"{_dct_bits(px64, 16):064x}"


def inner(img: Image.Image) -> Image.Image:
    w, h = img.size
    dx, dy = round(w * INNER_CUT), round(h * INNER_CUT)
    return img.crop((dx, dy, w - dx, h - dy))


Hashes = tuple[str, str, str, str]   # phash, fine, phash_inner, fine_inner


def hashes_of_file(path: str) -> Hashes:
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("L", (128, 128))  # decoded at 1/2 or 1/4 of the size: 64x64 is what is used
        grey = img.convert("L")
    return (*hashes_of(grey), *hashes_of(inner(grey)))


def hash_batch(items: list[tuple[str, str]]) -> list[tuple[str, Hashes | None, str | None]]:
    """(content hash, thumbnail path) -> (content hash, hashes, error). In a worker process; never
    raises."""
    out: list[tuple[str, Hashes | None, str | None]] = []
    for key, path in items:
        try:
            out.append((key, hashes_of_file(path), None))
        except Exception as exc:  # a missing or unreadable thumbnail costs that content alone
            out.append((key, None, f"{type(exc).__name__}: {exc}"[:500]))
    return out


def distance(a: str, b: str) -> int:
    """Hamming distance of two hex hashes of one length."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
