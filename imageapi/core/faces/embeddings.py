"""Face embeddings: stored as little-endian float32 blobs, compared by cosine similarity.

Plain Python (array + math): a photo has a handful of faces and a person's mean is computed
once per tick, so numpy would buy nothing worth a dependency here.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Sequence

MAX_DIM = 4096  # larger than any face model's embedding; bounds what one answer can allocate


def to_blob(values: Sequence[float]) -> bytes:
    arr = array("f", values)
    if sys.byteorder != "little":
        arr.byteswap()
    return arr.tobytes()


def from_blob(blob: bytes) -> array[float]:
    arr = array("f")
    arr.frombytes(blob[: len(blob) - len(blob) % 4])
    if sys.byteorder != "little":
        arr.byteswap()
    return arr


def norm(v: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def normalized(v: Sequence[float]) -> list[float]:
    n = norm(v)
    return [x / n for x in v] if n > 0 else [0.0] * len(v)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; 0.0 for mismatched lengths or a zero vector (never binds)."""
    if len(a) != len(b) or not a:
        return 0.0
    na, nb = norm(a), norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def mean_direction(vectors: Iterable[Sequence[float]]) -> list[float] | None:
    """The mean of the unit vectors of the same length as the first one (None when there are none).

    Each face is normalised first so one large-norm embedding does not outweigh the others."""
    total: list[float] | None = None
    count = 0
    for v in vectors:
        if total is None:
            total = [0.0] * len(v)
        if len(v) != len(total):
            continue  # another model's embedding: not comparable
        for i, x in enumerate(normalized(v)):
            total[i] += x
        count += 1
    if total is None or count == 0:
        return None
    return [x / count for x in total]
