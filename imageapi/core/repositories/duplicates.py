"""SQL of duplicates: perceptual hashes per content (migration 21), the contents held at several
paths, and the files of a set of contents."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imageapi.core.db import Connection

# Pictures whose perceptual hash is computed: what has an upright thumbnail of its own pixels
# (a video's thumbnail is one frame, not the video).
HASHED_KINDS = ("image", "heic", "raw")

# A row is due when its content has a thumbnail made and no perceptual hash row (made or failed).
DUE_WHERE = (
    "f.content_hash IS NOT NULL AND f.thumb_state = 'done' AND f.kind IN ('image', 'heic', 'raw') "
    "AND NOT EXISTS (SELECT 1 FROM perceptual_hashes p WHERE p.content_hash = f.content_hash)"
)
CHUNK = 500   # ids or hashes per IN list


def _libs(library_ids: Sequence[int] | None, alias: str = "f", *, indexed: bool = True) -> tuple[str, list[object]]:
    """The condition on the files' library. Not `indexed` where the rows are picked by id or content
    hash: SQLite would otherwise walk the library's index (every file of a one-library install)
    instead of looking the few rows up (`+` keeps a column off an index, in both databases)."""
    if not library_ids:
        return "", []
    column = f"{'' if indexed else '+'}{alias}.library_id"
    return f" AND {column} IN ({', '.join('?' * len(library_ids))})", list(library_ids)


async def due_rows(db: Connection, library_ids: Sequence[int] | None, limit: int | None,
                   file_ids: Sequence[int] | None = None) -> list[tuple[int, str, str, str]]:
    """(file id, content hash, library name, rel_path) of due rows, one per content (its lowest id),
    oldest first, at most `limit` contents; `file_ids`: among these rows only."""
    libs, params = _libs(library_ids, indexed=file_ids is None)
    ids = ""
    if file_ids is not None:
        if not file_ids:
            return []
        ids = f" AND f.id IN ({', '.join('?' * len(file_ids))})"
        params += list(file_ids)
    sql = (f"SELECT f.id, f.content_hash, l.name, f.rel_path FROM files f JOIN libraries l ON l.id = f.library_id "
           f"WHERE {DUE_WHERE}{libs}{ids} ORDER BY f.id")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit * 2)  # a content held twice takes two rows
    async with db.execute(sql, params) as cur:
        rows = await cur.fetchall()
    seen: set[str] = set()
    out: list[tuple[int, str, str, str]] = []
    for file_id, content_hash, name, rel in rows:
        if content_hash not in seen and (limit is None or len(out) < limit):
            seen.add(content_hash)
            out.append((int(file_id), content_hash, name, rel))
    return out


async def count_due(db: Connection, library_ids: Sequence[int] | None = None) -> int:
    libs, params = _libs(library_ids)
    async with db.execute(f"SELECT COUNT(DISTINCT f.content_hash) FROM files f WHERE {DUE_WHERE}{libs}",
                          params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


HashRow = tuple[str, str | None, str | None, str | None, str | None, str | None, str]


async def record(db: Connection, rows: Sequence[HashRow]) -> None:
    """(content hash, phash, fine, phash_inner, fine_inner, error, computed_at) rows; a content
    already hashed keeps its row. In the caller's transaction."""
    for r in rows:
        await db.execute("INSERT INTO perceptual_hashes (content_hash, phash, fine, phash_inner, fine_inner, error, "
                         "computed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (content_hash) DO NOTHING", r)


async def state(db: Connection) -> tuple[int, str | None]:
    """(rows, newest computed_at): what a cached grouping was made from."""
    async with db.execute("SELECT COUNT(*), MAX(computed_at) FROM perceptual_hashes") as cur:
        row = await cur.fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


async def all_hashes(db: Connection) -> list[tuple[str, str, str, str, str]]:
    """(content hash, phash, fine, phash_inner, fine_inner) of every content still indexed that has
    them, by content hash."""
    async with db.execute(
        "SELECT p.content_hash, p.phash, p.fine, p.phash_inner, p.fine_inner FROM perceptual_hashes p "
        "WHERE p.phash IS NOT NULL AND EXISTS (SELECT 1 FROM files f WHERE f.content_hash = p.content_hash) "
        "ORDER BY p.content_hash",
    ) as cur:
        return [(r[0], r[1], r[2], r[3], r[4]) for r in await cur.fetchall()]


async def exact_contents(db: Connection, library_id: int | None) -> list[str]:
    """Content hashes held by two or more files (with `library_id`: one of them in that library)."""
    sql = ("SELECT f.content_hash FROM files f WHERE f.content_hash IS NOT NULL "
           "GROUP BY f.content_hash HAVING COUNT(*) > 1")
    params: list[object] = []
    if library_id is not None:
        sql += " AND SUM(CASE WHEN f.library_id = ? THEN 1 ELSE 0 END) > 0"
        params.append(library_id)
    async with db.execute(sql + " ORDER BY f.content_hash", params) as cur:
        return [r[0] for r in await cur.fetchall()]


async def stacked_contents(db: Connection, library_ids: Sequence[int]) -> list[str]:
    """Content hashes held by two or more files of these libraries."""
    libs, params = _libs(library_ids)
    async with db.execute(f"SELECT f.content_hash FROM files f WHERE f.content_hash IS NOT NULL{libs} "
                          "GROUP BY f.content_hash HAVING COUNT(*) > 1", params) as cur:
        return [r[0] for r in await cur.fetchall()]


async def files_state(db: Connection, library_ids: Sequence[int]) -> tuple[int, int, int]:
    """(files, hashed files, newest id) of these libraries: what a cached stacking was made from."""
    libs, params = _libs(library_ids)
    async with db.execute(f"SELECT COUNT(*), COUNT(f.content_hash), COALESCE(MAX(f.id), 0) FROM files f "
                          f"WHERE 1 = 1{libs}", params) as cur:
        row = await cur.fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


@dataclass(frozen=True)
class MemberRow:
    id: int
    library_id: int
    library: str
    rel_path: str
    kind: str
    size: int
    mtime_ns: int
    content_hash: str
    width: int | None
    height: int | None
    orientation: int | None
    taken_at: str | None
    taken_at_offset: int | None
    taken_at_source: str | None
    make: str | None
    model: str | None
    gps_lat: float | None


async def files_of(db: Connection, contents: Sequence[str],
                   library_ids: Sequence[int] | None = None) -> list[MemberRow]:
    """The files holding these contents (in these libraries), by id."""
    out: list[MemberRow] = []
    libs, lib_params = _libs(library_ids, indexed=False)
    unique = sorted(set(contents))
    for i in range(0, len(unique), CHUNK):
        part = unique[i:i + CHUNK]
        async with db.execute(
            "SELECT f.id, f.library_id, l.name, f.rel_path, f.kind, f.size, f.mtime_ns, f.content_hash, f.width, "
            "f.height, f.orientation, f.taken_at, f.taken_at_offset, f.taken_at_source, f.make, f.model, f.gps_lat "
            "FROM files f JOIN libraries l ON l.id = f.library_id "
            f"WHERE f.content_hash IN ({', '.join('?' * len(part))}){libs}", (*part, *lib_params),
        ) as cur:
            out.extend(MemberRow(*r) for r in await cur.fetchall())
    return sorted(out, key=lambda m: m.id)


async def contents_of_files(db: Connection, file_ids: Sequence[int]) -> dict[int, str]:
    """file id -> content hash, for the hashed ones of `file_ids`."""
    out: dict[int, str] = {}
    unique = sorted(set(file_ids))
    for i in range(0, len(unique), CHUNK):
        part = unique[i:i + CHUNK]
        async with db.execute(f"SELECT id, content_hash FROM files WHERE id IN ({', '.join('?' * len(part))}) "
                              "AND content_hash IS NOT NULL", part) as cur:
            out.update((int(r[0]), r[1]) for r in await cur.fetchall())
    return out
