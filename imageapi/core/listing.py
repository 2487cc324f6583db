"""The photo listing behind `GET /photos`: one folder (or a subtree) of a library, filtered by tag
or person, in a stable order, paginated by an opaque cursor (keyset: the last row's sort key and
id), plus the sub-folders of the folder with how many files each holds."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from imageapi.core import duplicates
from imageapi.core.config import Config
from imageapi.core.db import Connection, Row
from imageapi.core.errors import UsageError
from imageapi.core.files import describe_row
from imageapi.core.libraries import Library
from imageapi.core.repositories import listing as repo
from imageapi.core.tags import tag_key

# sort name -> descending (the keys: taken_at, '' for none; the path; the modification time; then id)
SORTS: dict[str, bool] = {
    "taken_desc": True,
    "taken_asc": False,
    "name_asc": False,
    "name_desc": True,
    "mtime_desc": True,
    "mtime_asc": False,
}
DEFAULT_SORT = "taken_desc"
MAX_LIMIT = 1000


@dataclass
class PhotoQuery:
    path: str = ""             # a folder, relative to the library root ('' = the root)
    recursive: bool = False
    sort: str = DEFAULT_SORT
    tag: str | None = None
    person: int | None = None
    limit: int = 200
    cursor: str | None = None
    stack: bool = False        # each item's duplicates stack (core/duplicates.stacks)


@dataclass
class PhotoPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    folders: list[dict[str, Any]] = field(default_factory=list)


def file_record(config: Config, lib: Library, row: Row) -> dict[str, Any]:
    """What a client sees of a file: the metadata record without server-side absolute paths."""
    rec = describe_row(config, lib, row)
    rec.pop("absolute_path", None)
    thumb = rec.get("thumbnail")
    if isinstance(thumb, dict):
        thumb.pop("path", None)
    rec["name"] = row["rel_path"].rpartition("/")[2]
    return rec


def encode_cursor(sort: str, key: object, row_id: int) -> str:
    raw = json.dumps([sort, key, row_id], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


MAX_ROW_KEY = 2**63 - 1  # SQLite's integers: ids and mtime_ns are within it
_BAD_CURSOR = "bad cursor: pass back the next_cursor of the previous page unchanged"


def decode_cursor(cursor: str, sort: str) -> tuple[object, int]:
    """The (sort key, row id) a cursor carries. Cursors come back from clients: anything that is
    not what encode_cursor makes (forged, truncated, out of range) is a UsageError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        got_sort, key, row_id = json.loads(raw, parse_constant=_refuse, parse_float=_refuse)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise UsageError(_BAD_CURSOR) from None
    if got_sort != sort:
        raise UsageError("bad cursor: it was made for another sort order")
    if sort.startswith("mtime"):
        key_ok = isinstance(key, int) and not isinstance(key, bool) and -MAX_ROW_KEY <= key <= MAX_ROW_KEY
    else:
        key_ok = isinstance(key, str) and _storable(key)
    if not key_ok or not _is_int(row_id) or not 0 <= row_id <= MAX_ROW_KEY:
        raise UsageError(_BAD_CURSOR)
    return key, row_id


def _refuse(text: str) -> object:
    raise ValueError(text)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _storable(text: str) -> bool:
    """Whether SQLite can take the string (a lone surrogate cannot be encoded)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def list_photos(db: Connection, config: Config, lib: Library, q: PhotoQuery) -> PhotoPage:
    if q.sort not in SORTS:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}")
    if not 1 <= q.limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}")
    rows = await repo.photos_page(db, repo.PageQuery(
        library_id=lib.id, folder=q.path, recursive=q.recursive, sort=q.sort, descending=SORTS[q.sort],
        limit=q.limit + 1, tag=(tag_key(q.tag), q.tag) if q.tag is not None else None, person=q.person,
        after=decode_cursor(q.cursor, q.sort) if q.cursor else None))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    items = [file_record(config, lib, r) for r in rows]
    if q.stack:
        stacks = await duplicates.stacks(db, [lib.id], [r["id"] for r in rows])
        for item, r in zip(items, rows, strict=True):
            item["stack"] = stacks.get(r["id"])
    next_cursor = encode_cursor(q.sort, rows[-1]["sort_key"], rows[-1]["id"]) if more else None
    folders: list[dict[str, Any]] = []
    if not q.cursor and not q.recursive and q.tag is None and q.person is None:
        folders = await folder_counts(db, lib, q.path)
    return PhotoPage(items, next_cursor, folders)


async def folder_counts(db: Connection, lib: Library, folder: str) -> list[dict[str, Any]]:
    """The direct sub-folders of `folder` that hold indexed files, each with its file count
    (the whole subtree), by name."""
    counts: dict[str, int] = {}
    for d, n in await repo.dir_counts(db, lib.id, folder):
        rest = d[len(folder) + 1:] if folder else d
        child = rest.split("/", 1)[0]
        counts[child] = counts.get(child, 0) + n
    return [
        {"name": name, "path": f"{folder}/{name}" if folder else name, "count": n}
        for name, n in sorted(counts.items())
    ]
