"""Reading file rows back: what the index holds for one file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imageapi.core.config import Config
from imageapi.core.db import Connection, Row
from imageapi.core.errors import NotFoundError
from imageapi.core.libraries import Library, sentinel_path
from imageapi.core.repositories import files as files_repo


def last_seen(row: Row) -> str:
    """When a scan last saw the file: read it (row) or listed its folder (dir_seen_at)."""
    own = row["last_seen"]
    folder = row["dir_seen_at"] if "dir_seen_at" in row.keys() else None
    return max(own, folder) if folder else own


def format_offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def taken_at_iso(local: str | None, offset: int | None) -> str | None:
    """ISO 8601, with the UTC offset when it is known."""
    if local is None:
        return None
    return local + format_offset(offset) if offset is not None else local


def mtime_iso(mtime_ns: int) -> str:
    return datetime.fromtimestamp(mtime_ns / 1e9).astimezone().isoformat(timespec="seconds")


async def get_file_row(db: Connection, lib: Library, rel_path: str) -> Row:
    row = await files_repo.file_row(db, lib.id, rel_path)
    if row is None:
        raise NotFoundError(f"{rel_path!r} is not in the index of library {lib.name!r}")
    return row


def describe_row(config: Config, lib: Library, row: Row) -> dict[str, Any]:
    # Paths are shown in the stored form (imageapi.core.names): a name that is not UTF-8 has its
    # bytes escaped, here as in the API's `path`.
    rel = row["rel_path"]
    thumb = config.thumbnails / lib.name / rel
    state = row["thumb_state"]
    thumb_file = thumb if state == "done" else sentinel_path(thumb) if state == "unsupported" else None
    return {
        "id": row["id"],
        "library": lib.name,
        "path": rel,
        "absolute_path": str(lib.root / rel),
        "kind": row["kind"],
        "size": row["size"],
        "mtime": mtime_iso(row["mtime_ns"]),
        "content_hash": row["content_hash"],
        "taken_at": taken_at_iso(row["taken_at"], row["taken_at_offset"]),
        "taken_at_source": row["taken_at_source"],
        "taken_at_offset_source": row["taken_at_offset_source"],
        "make": row["make"],
        "model": row["model"],
        "lens": row["lens"],
        "orientation": row["orientation"],
        "width": row["width"],
        "height": row["height"],
        "gps_lat": row["gps_lat"],
        "gps_lon": row["gps_lon"],
        "gps_alt": row["gps_alt"],
        "place": {"city": row["place_city"], "region": row["place_region"], "country": row["place_country"],
                  "cc": row["place_cc"]} if row["place_cc"] else None,
        "exposure_time": row["exposure_time"],
        "f_number": row["f_number"],
        "iso": row["iso"],
        "focal_length": row["focal_length"],
        "duration": row["duration"],
        "rotation": row["rotation"],
        "video_codec": row["video_codec"],
        "audio_codec": row["audio_codec"],
        "error": row["error"],
        "thumbnail": {
            "state": state,
            "path": str(thumb_file) if thumb_file is not None else None,
            "reason": row["thumb_reason"],
        },
        "first_seen": row["first_seen"],
        "last_seen": last_seen(row),
    }
