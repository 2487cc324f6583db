"""Finding files: the full walk (every folder listed) and the quick walk (only folders whose mtime
moved since the last scan listed them).

Adding, removing or renaming an entry changes its folder's mtime, so a quick walk finds files
created, renamed or moved in without a stat per file. An in-place edit of a file's content leaves its
folder's mtime alone: such edits wait for the next full scan.
"""

from __future__ import annotations

import os
import stat as stat_mod
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from imageapi.core.kinds import KIND_BY_EXT, IgnoreRules
from imageapi.core.names import on_disk, stored

# A folder modified this recently may change again within the filesystem's timestamp granularity
# (1-2 s on some NAS filesystems) without its mtime moving: do not trust it for the next quick scan.
RACY_SECONDS = 2.0


class Entry(NamedTuple):
    size: int
    mtime_ns: int
    kind: str


@dataclass
class WalkResult:
    # Every path here is in the stored form (imageapi.core.names): a name that is not valid UTF-8
    # is escaped, never a lone surrogate.
    files: dict[str, Entry] = field(default_factory=dict)   # rel path -> entry
    dirs: dict[str, int] = field(default_factory=dict)       # rel dir -> mtime_ns to remember
    fingerprints: dict[str, int] = field(default_factory=dict)  # listed dir -> fingerprint()
    listed: set[str] = field(default_factory=set)            # folders whose entries were all seen
    gone_dirs: set[str] = field(default_factory=set)         # known folders that no longer exist
    errors: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)


FINGERPRINT_MASK = (1 << 63) - 1  # fits SQLite's signed 64-bit INTEGER


def entry_fingerprint(name: str, size: int, mtime_ns: int) -> int:
    """64 bits of one media entry; a folder's fingerprint is the sum of its entries' (mod 2^63),
    so it does not depend on listing order. Any rename, add, removal, resize or touch moves it."""
    return (zlib.crc32(name.encode("utf-8", "surrogateescape")) << 32) | zlib.crc32(b"%d:%d" % (size, mtime_ns))


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _remembered_mtime(mtime_ns: int, now: float) -> int:
    return 0 if now - mtime_ns / 1e9 < RACY_SECONDS else mtime_ns


class Walker:
    def __init__(
        self,
        root: str,
        ignore: IgnoreRules,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.root = root
        self.ignore = ignore
        self.on_progress = on_progress
        self.now = time.time()

    def _abs(self, rel: str) -> str:
        return os.path.join(self.root, on_disk(rel)) if rel else self.root

    def _list(self, rel: str, result: WalkResult) -> list[tuple[str, int]]:
        """List one folder: record its media files, return its subfolders with their mtimes.

        The hot loop of every full scan (once per directory entry), so it is kept lean."""
        subdirs: list[tuple[str, int]] = []
        files = result.files
        ignore = self.ignore
        kinds = KIND_BY_EXT
        prefix = rel + "/" if rel else ""
        crc32 = zlib.crc32
        fingerprint = 0
        try:
            with os.scandir(self._abs(rel)) as it:
                for entry in it:
                    name = entry.name
                    if ignore(name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            # Paths are kept in the stored form (imageapi.core.names): the name
                            # itself unless it is not valid UTF-8 (or holds U+FFFD).
                            subdirs.append((prefix + (name if name.isascii() else stored(name)),
                                            entry.stat(follow_symlinks=False).st_mtime_ns))
                            continue
                        dot = name.rfind(".")
                        kind = kinds.get(name[dot + 1:].lower()) if dot > 0 else None
                        # Symlinks are not followed: a link could lead outside the library root.
                        if kind is None or not entry.is_file(follow_symlinks=False):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError as exc:
                        result.errors.append((prefix + stored(name), exc.strerror or str(exc)))
                        continue
                    files[prefix + (name if name.isascii() else stored(name))] = Entry(
                        st.st_size, st.st_mtime_ns, kind)
                    fingerprint += (crc32(name.encode("utf-8", "surrogateescape")) << 32) | crc32(
                        b"%d:%d" % (st.st_size, st.st_mtime_ns))
        except OSError as exc:
            result.errors.append((rel, exc.strerror or str(exc)))
            return subdirs
        result.listed.add(rel)
        result.fingerprints[rel] = fingerprint & FINGERPRINT_MASK
        if self.on_progress:
            self.on_progress(len(files))
        return subdirs

    def _start(self, start: str, result: WalkResult) -> int | None:
        try:
            st = os.stat(self._abs(start), follow_symlinks=False)
        except OSError as exc:
            result.errors.append((start, exc.strerror or str(exc)))
            return None
        if not stat_mod.S_ISDIR(st.st_mode):
            result.errors.append((start, "not a folder"))
            return None
        return st.st_mtime_ns

    def full(self, start: str = "") -> WalkResult:
        """List every folder under `start` (a relative folder, '' for the root)."""
        result = WalkResult()
        mtime = self._start(start, result)
        if mtime is None:
            return result
        stack = [(start, mtime)]
        while stack:
            rel, mtime_ns = stack.pop()
            stack.extend(self._list(rel, result))
            if rel in result.listed:
                result.dirs[rel] = _remembered_mtime(mtime_ns, self.now)
        return result

    def quick(self, known_dirs: dict[str, int], start: str = "") -> WalkResult:
        """List only folders that are new or whose mtime differs from `known_dirs`.

        Unchanged folders are not listed; their known subfolders are still visited (one stat each),
        since a change deep in the tree does not move the mtimes of the folders above it.
        """
        result = WalkResult()
        children: dict[str, list[str]] = {}
        for d in known_dirs:
            if d and (d == start or not start or d.startswith(start + "/")):
                parent = d.rpartition("/")[0]
                children.setdefault(parent, []).append(d)
        mtime = self._start(start, result)
        if mtime is None:
            result.gone_dirs.update(d for d in known_dirs if _within(d, start))
            return result
        stack: list[tuple[str, int]] = [(start, mtime)]
        while stack:
            rel, mtime_ns = stack.pop()
            if known_dirs.get(rel) == mtime_ns:
                # Unchanged folder: descend through the subfolders we know, one stat each.
                for child in children.get(rel, ()):
                    try:
                        st = os.stat(self._abs(child), follow_symlinks=False)
                    except FileNotFoundError:
                        result.gone_dirs.update(d for d in known_dirs if _within(d, child))
                        continue
                    except OSError as exc:
                        result.errors.append((child, exc.strerror or str(exc)))
                        continue
                    if not stat_mod.S_ISDIR(st.st_mode):
                        result.gone_dirs.update(d for d in known_dirs if _within(d, child))
                        continue
                    stack.append((child, st.st_mtime_ns))
                continue
            subdirs = self._list(rel, result)
            if rel not in result.listed:
                continue
            result.dirs[rel] = _remembered_mtime(mtime_ns, self.now)
            present = {d for d, _ in subdirs}
            for child in children.get(rel, ()):
                if child not in present:
                    result.gone_dirs.update(d for d in known_dirs if _within(d, child))
            stack.extend(subdirs)
        return result


def _within(path: str, folder: str) -> bool:
    return not folder or path == folder or path.startswith(folder + "/")


def within_any(path: str, folders: Iterable[str]) -> bool:
    return any(_within(path, f) for f in folders)
