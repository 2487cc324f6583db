"""A thumbnail asked for before the thumbnail pass made it: the rules for making it on demand and
recording the outcome on the file's row, as the pass records it (state, reason and the tools
tried), so the backlog, `imageapi thumbs` and the new-tools retry see it the same way."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from imageapi.core.database import transaction
from imageapi.core.db import Connection, Row
from imageapi.core.errors import MediaError, UnsupportedMediaError
from imageapi.core.files import get_file_row
from imageapi.core.libraries import Library, resolve_in_library, sentinel_path
from imageapi.core.media import ThumbResult
from imageapi.core.names import safe_text
from imageapi.core.repositories import files as files_repo

PICTURE_KINDS = ("image", "heic", "raw", "video")

# (source, kind, destination, box, duration) -> outcome; the server renders in its worker pool.
Render = Callable[[str, str, str, int, "float | None"], Awaitable[ThumbResult]]


def _exists(path: Path) -> bool:
    """Path.exists, but False (not an exception) for a name too long to exist."""
    try:
        return os.path.lexists(path)
    except OSError:
        return False


async def record(db: Connection, row: Row, result: ThumbResult) -> None:
    """Write the outcome on the row when it differs from what the row holds: the state, the reason
    (escaped where a name is not UTF-8) and the tools an unsupported file was tried with (which
    `maintenance.retry_new_tools` compares with the tools there now)."""
    new = (result.state, safe_text(result.reason), result.tool)
    if (row["thumb_state"], row["thumb_reason"], row["thumb_tool"]) != new:
        async with transaction(db):
            await files_repo.set_thumb_state(db, row["id"], *new)


async def make_on_demand(db: Connection, lib: Library, rel: str, dest: str, box: int, render: Render) -> None:
    """Make the thumbnail of an indexed file at `dest` and record the outcome. A file known to
    have none (its row says unsupported, or the sentinel is there) is not tried again:
    UnsupportedMediaError, as for a kind without a picture; a failed render is MediaError;
    NotFoundError for a file not in the index."""
    row = await get_file_row(db, lib, rel)
    if row["thumb_state"] == "unsupported" or _exists(sentinel_path(Path(dest))):
        raise UnsupportedMediaError(f"{rel!r} has no thumbnail: {row['thumb_reason'] or 'unsupported'}")
    if row["kind"] not in PICTURE_KINDS:
        raise UnsupportedMediaError(f"{rel!r} has no picture")
    src = resolve_in_library(lib, rel)
    result = await render(str(src), row["kind"], dest, box, row["duration"])
    await record(db, row, result)
    if result.state == "unsupported":
        raise UnsupportedMediaError(f"{rel!r} has no thumbnail: {result.reason}")
    if result.state != "done":
        raise MediaError(f"cannot make a thumbnail of {rel!r}: {result.reason}")
