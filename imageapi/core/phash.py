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


def _dct_bits(grey: Image.Image, size: int, keep: int) -> int:
    pixels = np.asarray(grey.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float64)
    d = _dct_matrix(size)
    low = (d @ pixels @ d.T)[:keep, :keep].ravel()
    bits = low > np.median(low)
    return int("".join("1" if b else "0" for b in bits), 2)


def hashes_of(img: Image.Image) -> tuple[str, str]:
    """(phash, fine) of an upright picture, as hex."""
    grey = img.convert("L")
    return f"{_dct_bits(grey, 32, 8):016x}", f"{_dct_bits(grey, 64, 16):064x}"


def hashes_of_file(path: str) -> tuple[str, str]:
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("L", (128, 128))  # decode at a fraction of the size: 64x64 is all that is used
        return hashes_of(img)


def hash_batch(items: list[tuple[str, str]]) -> list[tuple[str, str | None, str | None, str | None]]:
    """(content hash, thumbnail path) -> (content hash, phash, fine, error). In a worker process;
    never raises."""
    out: list[tuple[str, str | None, str | None, str | None]] = []
    for key, path in items:
        try:
            p, f = hashes_of_file(path)
            out.append((key, p, f, None))
        except Exception as exc:  # a missing or unreadable thumbnail costs that content alone
            out.append((key, None, None, f"{type(exc).__name__}: {exc}"[:500]))
    return out


def distance(a: str, b: str) -> int:
    """Hamming distance of two hex hashes of one length."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
