"""A bounded in-memory cache of small files' bytes (thumbnails, previews), checked against the
file's identity (mtime, size, inode) on every hit so a regenerated file is never served stale."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

Ident = tuple[Any, ...]


@dataclass(frozen=True)
class CachedBody:
    ident: Ident
    body: bytes
    etag: str           # quoted, strong
    last_modified: str  # HTTP date
    mtime_s: int        # whole seconds, for If-Modified-Since


def make_entry(ident: Ident, body: bytes, mtime_ns: int, tag: str = "") -> CachedBody:
    etag = f'"{tag}{mtime_ns:x}-{len(body):x}"'
    mtime_s = mtime_ns // 1_000_000_000
    return CachedBody(ident, body, etag, formatdate(mtime_s, usegmt=True), mtime_s)


class ByteCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._items: OrderedDict[str, CachedBody] = OrderedDict()

    def get(self, key: str, ident: Ident) -> CachedBody | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.ident != ident:
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedBody) -> CachedBody:
        if len(entry.body) > self.max_bytes // 8:
            return entry  # too large to be worth keeping
        self._drop(key)
        self._items[key] = entry
        self.used += len(entry.body)
        while self.used > self.max_bytes and self._items:
            self._drop(next(iter(self._items)))
        return entry

    def _drop(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.used -= len(old.body)

    def __len__(self) -> int:
        return len(self._items)
