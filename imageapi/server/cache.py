"""A bounded in-memory cache of small files' bytes (thumbnails, previews), checked against the
file's identity (mtime, size, inode) so a regenerated file is not served stale.

The check is a stat of the file, which measured as the largest cost of our own code on the
thumbnail path; `recent` lets a caller skip it for an entry checked less than `recheck` seconds
ago (a re-rendered thumbnail then shows up within that time).
"""

from __future__ import annotations

import os
import stat
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
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
    # The same responses as aiohttp writes them, up to the Date and Server lines (fastpath.py).
    head_200: bytes = b""
    head_304: bytes = b""


def make_entry(ident: Ident, body: bytes, mtime_ns: int, tag: str = "", content_type: str = "image/jpeg") -> CachedBody:
    etag = f'"{tag}{mtime_ns:x}-{len(body):x}"'
    mtime_s = mtime_ns // 1_000_000_000
    modified = formatdate(mtime_s, usegmt=True)
    h304 = {"ETag": etag, "Last-Modified": modified, "Cache-Control": CACHE_CONTROL}
    h200 = {**h304, "Content-Type": content_type}
    return CachedBody(ident, body, etag, modified, mtime_s, h200, h304,
                      _head("200 OK", {**h200, "Content-Length": str(len(body))}), _head("304 Not Modified", h304))


def _head(status: str, headers: dict[str, str]) -> bytes:
    """Status line and headers in aiohttp's order (the handler's, then Content-Length; aiohttp
    adds Date and Server after them). Values here are ours: no CR/LF can be in them."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"HTTP/1.1 {status}\r\n{lines}".encode("latin-1")


def not_modified(headers: Mapping[str, str], etag: str, mtime_s: int) -> bool:
    """If-None-Match (weak comparison, '*') wins over If-Modified-Since, as RFC 9110 says."""
    inm = headers.get("If-None-Match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = headers.get("If-Modified-Since")
    if ims is not None:
        try:
            return mtime_s <= int(parsedate_to_datetime(ims).timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


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

    def current(self, path: str) -> CachedBody | None:
        """The entry of a file cached under its path, if it is known to still be the file's
        bytes: checked less than `recheck` seconds ago, or stat'ed now and the same file (mtime,
        size, inode). None: not cached, changed, or unreadable (the caller looks again). No
        await: the thumbnail fast path calls it too."""
        entry = self.recent(path)
        if entry is not None:
            return entry
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        return self.get(path, (st.st_mtime_ns, st.st_size, st.st_ino))

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
