"""Which files imageapi indexes, by extension. The content is checked when the file is read."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable

IMAGE_EXTS = frozenset({"jpg", "jpeg", "jpe", "png", "webp", "gif", "tif", "tiff", "bmp"})
HEIC_EXTS = frozenset({"heic", "heif", "hif", "avif"})
# The camera RAW formats exiftool knows: TIFF-based ones, CR3 (ISO BMFF), RAF (Fujifilm header +
# JPEG + TIFF), MRW (Minolta, a TIFF block inside), CRW/CIFF (Canon heaps), X3F (Sigma sections)
# and RAW (Panasonic's TIFF-like or Kyocera's). Left out: what no camera writes (Capture One's
# EIP package, Rawzor's RWZ recompression), raw video (CRM, R3D), Sinar's Photoshop-based CS1
# (CaptureShop's), and extensions exiftool does not know (MDC, CAP, ARI, BAY, DCS, DRF, PTX,
# PXN): no reader or oracle for them, and a ".cap" is more often a network capture.
RAW_EXTS = frozenset({
    "3fr", "arq", "arw", "ciff", "cr2", "cr3", "crw", "dcr", "dng", "erf", "fff", "gpr", "iiq",
    "k25", "kdc", "mef", "mos", "mrw", "nef", "nrw", "orf", "ori", "pef", "raf", "raw", "rw2",
    "rwl", "sr2", "srf", "srw", "x3f",
})
VIDEO_EXTS = frozenset({
    "mp4", "m4v", "mov", "qt", "avi", "mkv", "webm", "mts", "m2ts", "3gp", "mpg", "mpeg", "wmv",
})

KINDS = ("image", "heic", "raw", "video")

KIND_BY_EXT: dict[str, str] = {
    **{e: "image" for e in IMAGE_EXTS},
    **{e: "heic" for e in HEIC_EXTS},
    **{e: "raw" for e in RAW_EXTS},
    **{e: "video" for e in VIDEO_EXTS},
}


def kind_of(name: str) -> str | None:
    """The kind for a file name, or None when imageapi does not index it."""
    dot = name.rfind(".")
    if dot <= 0:
        return None
    return KIND_BY_EXT.get(name[dot + 1:].lower())


class IgnoreRules:
    """fnmatch patterns matched against one path component (a folder or file name).

    The glob patterns are compiled into one regular expression: this runs once per directory
    entry, 100,000 times on a large library's re-scan."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
        globs = [p for p in patterns if any(c in p for c in "*?[")]
        self._match = re.compile("|".join(fnmatch.translate(g) for g in globs)).match if globs else None
        # When every glob starts with a literal character (".*", "._*"), a name starting with
        # anything else cannot match: most names skip the regex.
        self._firsts = None if any(g[0] in "*?[" for g in globs) else frozenset(g[0] for g in globs)

    def __call__(self, name: str) -> bool:
        if name in self.exact:
            return True
        if self._match is None or (self._firsts is not None and name[:1] not in self._firsts):
            return False
        return self._match(name) is not None
