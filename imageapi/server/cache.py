"""A bounded in-memory cache of small files' bytes (thumbnails, previews), checked against the
file's identity (mtime, size, inode) so a regenerated file is not served stale.

The check is a stat of the file, which measured as the largest cost of our own code on the
thumbnail path; `recent` lets a caller skip it for an entry checked less than `recheck` seconds
ago (a re-rendered thumbnail then shows up within that time).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

Ident = tuple[Any, ...]


CACHE_CONTROL = "private, max-age=3600"


@dataclass(frozen=True)
class CachedBody:
    ident: Ident
    body: bytes
    etag: str           # quoted, strong
    last_modified: str  # HTTP date
    mtime_s: int        # whole seconds, for If-Modified-Since
    headers: dict[str, str] = field(default_factory=dict)  # of a 200 (JPEG), built once
    headers_304: dict[str, str] = field(default_factory=dict)


def make_entry(ident: Ident, body: bytes, mtime_ns: int, tag: str = "", content_type: str = "image/jpeg") -> CachedBody:
    etag = f'"{tag}{mtime_ns:x}-{len(body):x}"'
    mtime_s = mtime_ns // 1_000_000_000
    modified = formatdate(mtime_s, usegmt=True)
    h304 = {"ETag": etag, "Last-Modified": modified, "Cache-Control": CACHE_CONTROL}
    return CachedBody(ident, body, etag, modified, mtime_s, {**h304, "Content-Type": content_type}, h304)


class ByteCache:
    def __init__(self, max_bytes: int, recheck: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.recheck = recheck
        self.used = 0
        self._items: OrderedDict[str, CachedBody] = OrderedDict()
        self._checked: dict[str, float] = {}

    def recent(self, key: str) -> CachedBody | None:
        """The entry, if its file was checked less than `recheck` seconds ago."""
        checked = self._checked.get(key)
        if checked is None or time.monotonic() - checked >= self.recheck:
            return None
        return self._items.get(key)

    def get(self, key: str, ident: Ident) -> CachedBody | None:
        """The entry, if it still matches the file's identity (just read by the caller)."""
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.ident != ident:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        self._checked[key] = time.monotonic()
        return entry

    def put(self, key: str, entry: CachedBody) -> CachedBody:
        if len(entry.body) > self.max_bytes // 8:
            return entry  # too large to be worth keeping
        self._drop(key)
        self._items[key] = entry
        self._checked[key] = time.monotonic()
        self.used += len(entry.body)
        while self.used > self.max_bytes and self._items:
            self._drop(next(iter(self._items)))
        return entry

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        self._checked.pop(key, None)
        if old is not None:
            self.used -= len(old.body)

    def __len__(self) -> int:
        return len(self._items)
