"""Which files imageapi indexes, by extension. The content is checked when the file is read."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

IMAGE_EXTS = frozenset({"jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff", "bmp"})
HEIC_EXTS = frozenset({"heic", "heif", "hif", "avif"})
# TIFF-based RAW containers plus CR3 (ISO BMFF) and RAF (Fujifilm header + JPEG + TIFF).
RAW_EXTS = frozenset({
    "arw", "srf", "sr2", "nef", "nrw", "cr2", "cr3", "crw", "dng", "raf", "orf", "rw2", "pef",
    "srw", "erf", "kdc", "dcr", "mef", "mos", "3fr", "iiq", "rwl",
})
VIDEO_EXTS = frozenset({
    "mp4", "m4v", "mov", "qt", "avi", "mkv", "webm", "mts", "m2ts", "3gp", "mpg", "mpeg", "wmv",
})

KINDS = ("image", "heic", "raw", "video")


def kind_of(name: str) -> str | None:
    """The kind for a file name, or None when imageapi does not index it."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    ext = name[dot + 1:].lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in HEIC_EXTS:
        return "heic"
    if ext in RAW_EXTS:
        return "raw"
    if ext in VIDEO_EXTS:
        return "video"
    return None


class IgnoreRules:
    """fnmatch patterns matched against one path component (a folder or file name).

    The glob patterns are compiled into one regular expression: this runs once per directory
    entry, 100,000 times on a large library's re-scan."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        globs = [p for p in patterns if any(c in p for c in "*?[")]
        self._match = re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None

    def __call__(self, name: str) -> bool:
        if name in self.exact:
            return True
        return self._match is not None and self._match(name) is not None
