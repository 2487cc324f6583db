"""Writing file rows. Shared by the scan and the maintenance jobs; always in batches."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.libraries import sentinel_path, thumbnail_path
from imageapi.core.media import METADATA_COLUMNS, FileResult
from imageapi.core.names import on_disk, safe_text
from imageapi.core.repositories import files as files_repo
from imageapi.core.repositories import mapindex as map_repo

_ROW_COLUMNS = (
    "library_id", "rel_path", "dir", "kind", "size", "mtime_ns", "content_hash",
    *METADATA_COLUMNS, "thumb_state", "thumb_reason", "thumb_tool", "error", "first_seen", "last_seen",
)
_UPDATED = tuple(c for c in _ROW_COLUMNS if c not in ("library_id", "rel_path", "first_seen"))
_WRITES = files_repo.file_row_writes(_ROW_COLUMNS, _UPDATED)
_GPS = _ROW_COLUMNS.index("gps_lat")


def parent_dir(rel_path: str) -> str:
    return rel_path.rpartition("/")[0]


def row_values(library_id: int, result: FileResult, now: str) -> dict[str, object]:
    thumb = result.thumb
    values: dict[str, object] = {
        "library_id": library_id,
        "rel_path": result.rel_path,
        "dir": parent_dir(result.rel_path),
        "kind": result.kind,
        "size": result.size,
        "mtime_ns": result.mtime_ns,
        "content_hash": result.content_hash,
        **result.metadata.columns(),
        "thumb_state": thumb.state if thumb else "pending",
        # Messages may quote a file name that is not UTF-8: SQLite TEXT cannot hold it as it is.
        "thumb_reason": safe_text(thumb.reason) if thumb else None,
        "error": safe_text(result.error),
        "thumb_tool": thumb.tool if thumb else None,
        "first_seen": now,
        "last_seen": now,
    }
    return values


def upsert_params(library_id: int, result: FileResult, now: str) -> tuple[object, ...]:
    values = row_values(library_id, result, now)
    return tuple(values[c] for c in _ROW_COLUMNS)


def move_params(row_id: int, library_id: int, result: FileResult, now: str) -> tuple[object, ...]:
    values = row_values(library_id, result, now)
    return (result.rel_path, *(values[c] for c in _UPDATED), row_id)


async def write_results(
    db: Connection,
    upserts: list[tuple[object, ...]],
    moves: list[tuple[object, ...]],
) -> None:
    """One transaction per batch: either every row of it lands or none does (a full disk:
    DatabaseFullError, the batch rolled back)."""
    if not upserts and not moves:
        return
    async with transaction(db):
        await files_repo.write_file_rows(db, _WRITES, upserts, moves)
        # The map reads a library's positions again (a moved row keeps its id and its position).
        await map_repo.bump(db, (int(str(u[0])) for u in upserts if u[_GPS] is not None))


def remove_thumbnail_files(config: Config, library: str, rel_paths: Iterable[str]) -> None:
    """Delete the thumbnails (and sentinels) of files that are gone or moved."""
    for rel in rel_paths:
        thumb = thumbnail_path(config, library, rel)
        for p in (thumb, sentinel_path(thumb)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError:
                pass  # a read-only cache is not worth failing a scan for


def abs_path(root: Path | str, rel_path: str) -> str:
    """The file's path on disk from its stored relative path (imageapi.core.names)."""
    return os.path.join(root, on_disk(rel_path))
