"""What the index holds and what is left to do: backlog sizes and the newest scans (GET /status,
`imageapi library list`)."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.db import Connection
from imageapi.core.libraries import Library, list_libraries
from imageapi.core.repositories import duplicates, files, places, scans, search
from imageapi.core.repositories.scans import LastScan

__all__ = ["Backlog", "LastScan", "LibraryCount", "backlog", "file_counts", "last_scans", "libraries_with_counts"]


@dataclass(frozen=True)
class Backlog:
    files: int
    unhashed: int
    thumbnails_pending: int   # pending or failed: the next thumbnail pass tries them
    file_errors: int
    # What the workers (or the watcher) still have to do for duplicates, places and search:
    perceptual_hashes_pending: int   # contents with a thumbnail and no perceptual hash yet
    places_pending: int              # files with GPS and no place yet
    search_pending: int              # files whose search document is out of date


@dataclass(frozen=True)
class LibraryCount:
    library: Library
    files: int


async def backlog(db: Connection) -> Backlog:
    return Backlog(
        files=await files.count_all(db),
        unhashed=await files.count_unhashed(db),
        thumbnails_pending=await files.count_thumbs_pending(db),
        file_errors=await files.count_with_error(db),
        perceptual_hashes_pending=await duplicates.count_due(db),
        places_pending=await places.count_due(db),
        search_pending=await search.count_dirty(db),
    )


async def last_scans(db: Connection) -> list[LastScan]:
    return await scans.last_scans(db)


async def file_counts(db: Connection) -> dict[int, int]:
    """library id -> indexed files; a library with none is missing."""
    return await files.count_by_library(db)


async def libraries_with_counts(db: Connection) -> list[LibraryCount]:
    """Every library, by name, with its number of indexed files."""
    return [LibraryCount(lib, await files.count_in_library(db, lib.id)) for lib in await list_libraries(db)]
