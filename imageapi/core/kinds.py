"""Which files imageapi indexes, by extension. The content is checked when the file is read."""

from __future__ import annotations

import fnmatch
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
    """fnmatch patterns matched against one path component (a folder or file name)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        self.globs = tuple(p for p in patterns if any(c in p for c in "*?["))

    def __call__(self, name: str) -> bool:
        if name in self.exact:
            return True
        return any(fnmatch.fnmatchcase(name, g) for g in self.globs)
