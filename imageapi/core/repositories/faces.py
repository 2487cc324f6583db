"""SQL of faces and persons, for the face services (imageapi.core.faces.people)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection


@dataclass(frozen=True)
class FaceRow:
    id: int
    x: float
    y: float
    w: float
    h: float
    score: float
    model: str
    person_id: int | None
    person_name: str | None
    bound_by: str | None     # auto, bootstrap, manual; None when unbound


_FACE_SQL = (
    "SELECT f.id, f.x, f.y, f.w, f.h, f.score, f.model, f.person_id, p.name, f.bound_by "
    "FROM faces f LEFT JOIN persons p ON p.id = f.person_id"
)


async def face(db: Connection, face_id: int) -> FaceRow | None:
    async with db.execute(_FACE_SQL + " WHERE f.id = ?", (face_id,)) as cur:
        row = await cur.fetchone()
    return FaceRow(*row) if row is not None else None


async def faces_of_content(db: Connection, content_hash: str) -> list[FaceRow]:
    async with db.execute(_FACE_SQL + " WHERE f.content_hash = ? ORDER BY f.idx", (content_hash,)) as cur:
        return [FaceRow(*r) for r in await cur.fetchall()]


async def is_scanned(db: Connection, content_hash: str) -> bool:
    async with db.execute("SELECT 1 FROM face_scans WHERE content_hash = ?", (content_hash,)) as cur:
        return await cur.fetchone() is not None


async def content_of_face(db: Connection, face_id: int) -> str | None:
    async with db.execute("SELECT content_hash FROM faces WHERE id = ?", (face_id,)) as cur:
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def next_idx(db: Connection, content_hash: str) -> int:
    """The position after the content's last face (0 for none)."""
    async with db.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM faces WHERE content_hash = ?",
                          (content_hash,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


async def insert_face(db: Connection, content_hash: str, idx: int, box: tuple[float, float, float, float],
                      score: float, embedding: bytes, model: str, now: str) -> int:
    """A face row; its id. In the caller's transaction."""
    return await insert(
        db,
        "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (content_hash, idx, *box, score, embedding, model, now),
    )


async def unbind_person_in_content(db: Connection, content_hash: str, person_id: int, except_face: int) -> None:
    """Unbind the person's faces in this content but `except_face`. In the caller's transaction."""
    await db.execute(
        "UPDATE faces SET person_id = NULL, bound_by = NULL, bound_at = NULL "
        "WHERE content_hash = ? AND person_id = ? AND id != ?", (content_hash, person_id, except_face),
    )


async def bind(db: Connection, face_id: int, person_id: int, how: str, now: str) -> None:
    await db.execute("UPDATE faces SET person_id = ?, bound_by = ?, bound_at = ? WHERE id = ?",
                     (person_id, how, now, face_id))


async def unbind(db: Connection, face_id: int) -> None:
    await db.execute("UPDATE faces SET person_id = NULL, bound_by = NULL, bound_at = NULL WHERE id = ?", (face_id,))


async def delete_face(db: Connection, face_id: int) -> int:
    """Rows deleted (0 or 1). In the caller's transaction."""
    cur = await db.execute("DELETE FROM faces WHERE id = ?", (face_id,))
    return cur.rowcount


async def person_by_id(db: Connection, person_id: int) -> tuple[int, str] | None:
    async with db.execute("SELECT id, name FROM persons WHERE id = ?", (person_id,)) as cur:
        row = await cur.fetchone()
    return (row[0], row[1]) if row is not None else None


# ---------------------------------------------------------------------------------- face backlog
# Work is keyed on content_hash: the scan marks (face_scans), failures (face_failures) and faces of
# a content. `kinds` are the file kinds sent to detection (code constants, written into the SQL).


def kinds_sql(kinds: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{k}'" for k in kinds) + ")"


def unscanned_where(kinds: tuple[str, ...]) -> str:
    """Hashed rows of these kinds whose content has no scan mark and is not waiting (permanent
    failure, or a transient one not yet due). `?`: now."""
    return f"""
    f.content_hash IS NOT NULL AND f.kind IN {kinds_sql(kinds)}
    AND NOT EXISTS (SELECT 1 FROM face_scans s WHERE s.content_hash = f.content_hash)
    AND NOT EXISTS (SELECT 1 FROM face_failures x WHERE x.content_hash = f.content_hash
                    AND (x.permanent = 1 OR x.next_attempt_at > ?))
"""


@dataclass(frozen=True)
class UnscannedRow:
    file_id: int
    library_id: int
    content_hash: str
    kind: str
    rel_path: str
    root: str      # the library's root


async def unscanned_rows(db: Connection, kinds: tuple[str, ...], library_id: int,
                         now: str) -> AsyncGenerator[UnscannedRow, None]:
    """Unscanned, due rows of one library in id order, streamed (duplicates of a content included:
    the caller stops reading when it has enough)."""
    sql = (
        "SELECT f.id, f.library_id, f.content_hash, f.kind, f.rel_path, l.root "
        "FROM files f JOIN libraries l ON l.id = f.library_id "
        # `+f.library_id`: walk files in id order (no index on library_id, no sort of the whole
        # library first), so the scan stops as soon as `limit` hashes are found.
        f"WHERE +f.library_id = ? AND {unscanned_where(kinds)} ORDER BY f.id"
    )
    async with db.execute(sql, (library_id, now)) as cur:
        async for r in cur:
            yield UnscannedRow(r[0], r[1], r[2], r[3], r[4], r[5])


async def count_unscanned(db: Connection, kinds: tuple[str, ...], library_id: int | None, now: str) -> int:
    """Distinct contents `unscanned_rows` would give (of every library when None)."""
    sql = f"SELECT COUNT(DISTINCT f.content_hash) FROM files f WHERE {unscanned_where(kinds)}"
    params: tuple[object, ...] = (now,)
    if library_id is not None:
        sql += " AND f.library_id = ?"
        params += (library_id,)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def count_unhashed(db: Connection, kinds: tuple[str, ...], library_id: int | None) -> int:
    sql = f"SELECT COUNT(*) FROM files WHERE content_hash IS NULL AND kind IN {kinds_sql(kinds)}"
    params: tuple[object, ...] = ()
    if library_id is not None:
        sql += " AND library_id = ?"
        params = (library_id,)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def mark_scanned(db: Connection, content_hash: str, model: str, face_count: int, now: str) -> bool:
    """The scan mark; False when the content was already marked. In the caller's transaction."""
    cur = await db.execute(
        "INSERT INTO face_scans (content_hash, model, face_count, scanned_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (content_hash, model, face_count, now),
    )
    return bool(cur.rowcount != 0)


# content hash, (x, y, w, h), score, embedding, model, created_at
DetectedFace = tuple[str, tuple[float, float, float, float], float, bytes, str, str]


async def append_faces(db: Connection, faces: list[DetectedFace]) -> None:
    """Faces added after the content's last ones, in order (one batch). In the caller's transaction."""
    await db.executemany(
        "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
        "SELECT ?, COALESCE((SELECT MAX(idx) + 1 FROM faces WHERE content_hash = ?), 0), ?, ?, ?, ?, ?, ?, ?, ?",
        [(h, h, *box, score, embedding, model, now) for h, box, score, embedding, model, now in faces],
    )


async def clear_failure(db: Connection, content_hash: str) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM face_failures WHERE content_hash = ?", (content_hash,))


async def failure_attempts(db: Connection, content_hash: str) -> int:
    """Attempts recorded so far (0 for none)."""
    async with db.execute("SELECT attempts FROM face_failures WHERE content_hash = ?", (content_hash,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def put_failure(db: Connection, content_hash: str, permanent: bool, attempts: int, error: str,
                      next_attempt_at: str | None, now: str) -> None:
    """In the caller's transaction."""
    await db.execute(
        "INSERT INTO face_failures (content_hash, permanent, attempts, last_error, next_attempt_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (content_hash) DO UPDATE SET permanent = excluded.permanent, "
        "attempts = excluded.attempts, last_error = excluded.last_error, "
        "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
        (content_hash, int(permanent), attempts, error, next_attempt_at, now),
    )


async def delete_failures(db: Connection, *, permanent_only: bool) -> int:
    """How many were deleted. In the caller's transaction."""
    cur = await db.execute("DELETE FROM face_failures" + (" WHERE permanent = 1" if permanent_only else ""))
    return int(cur.rowcount)


@dataclass(frozen=True)
class FileCounts:
    files: int
    hashed: int
    unhashed: int      # of the kinds asked


@dataclass(frozen=True)
class ScanCounts:
    """Distinct hashed contents of the kinds asked."""
    scanned: int
    pending: int       # not scanned and due
    backing_off: int   # waiting after a transient failure
    failed: int        # permanently failed


async def file_counts(db: Connection, kinds: tuple[str, ...], library_id: int | None) -> FileCounts:
    lib_sql, lib_params = ("WHERE library_id = ?", (library_id,)) if library_id is not None else ("", ())
    async with db.execute(
        f"SELECT COUNT(*), COUNT(content_hash), "
        f"SUM(CASE WHEN content_hash IS NULL AND kind IN {kinds_sql(kinds)} THEN 1 ELSE 0 END) "
        f"FROM files {lib_sql}", lib_params
    ) as cur:
        row = await cur.fetchone()
    if not row:
        return FileCounts(0, 0, 0)
    return FileCounts(int(row[0]), int(row[1]), int(row[2] or 0))


async def scan_counts(db: Connection, kinds: tuple[str, ...], library_id: int | None, now: str) -> ScanCounts:
    hashes_where = f"content_hash IS NOT NULL AND kind IN {kinds_sql(kinds)}"
    lib_params: tuple[object, ...] = ()
    if library_id is not None:
        hashes_where += " AND library_id = ?"
        lib_params = (library_id,)
    async with db.execute(
        f"""
        WITH h AS (SELECT DISTINCT content_hash FROM files WHERE {hashes_where})
        SELECT
            COALESCE(SUM(CASE WHEN s.content_hash IS NOT NULL THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN s.content_hash IS NULL AND (x.content_hash IS NULL
                         OR (x.permanent = 0 AND x.next_attempt_at <= ?)) THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN s.content_hash IS NULL AND x.permanent = 0 AND x.next_attempt_at > ?
                         THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN s.content_hash IS NULL AND x.permanent = 1 THEN 1 ELSE 0 END), 0)
        FROM h LEFT JOIN face_scans s ON s.content_hash = h.content_hash
               LEFT JOIN face_failures x ON x.content_hash = h.content_hash
        """,
        (*lib_params, now, now),
    ) as cur:
        row = await cur.fetchone()
    if not row:
        return ScanCounts(0, 0, 0, 0)
    return ScanCounts(*(int(v) for v in row))


async def count_faces_and_people(db: Connection) -> tuple[int, int]:
    async with db.execute("SELECT (SELECT COUNT(*) FROM faces), (SELECT COUNT(*) FROM persons)") as cur:
        row = await cur.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


@dataclass(frozen=True)
class ThumbnailedFace:
    face_id: int
    box: tuple[float, float, float, float]
    library: str        # a library holding a file of the face's content with a thumbnail
    rel_path: str       # ... and that file


async def thumbnailed_face(db: Connection, face_id: int) -> ThumbnailedFace | None:
    """The face, with a file of its content (lowest id) that has a stored thumbnail."""
    async with db.execute(
        "SELECT fc.id, fc.x, fc.y, fc.w, fc.h, l.name, f.rel_path FROM faces fc "
        "JOIN files f ON f.content_hash = fc.content_hash AND f.thumb_state = 'done' "
        "JOIN libraries l ON l.id = f.library_id WHERE fc.id = ? ORDER BY f.id LIMIT 1", (face_id,)
    ) as cur:
        row = await cur.fetchone()
    return ThumbnailedFace(row[0], (row[1], row[2], row[3], row[4]), row[5], row[6]) if row is not None else None


async def best_thumbnailed_face(db: Connection, person_id: int) -> ThumbnailedFace | None:
    """The person's best-scored face of which some file has a stored thumbnail."""
    async with db.execute(
        "SELECT fc.id, fc.x, fc.y, fc.w, fc.h, l.name, f.rel_path FROM faces fc "
        "JOIN files f ON f.content_hash = fc.content_hash AND f.thumb_state = 'done' "
        "JOIN libraries l ON l.id = f.library_id WHERE fc.person_id = ? "
        "ORDER BY fc.score DESC, fc.id, f.id LIMIT 1", (person_id,)
    ) as cur:
        row = await cur.fetchone()
    return ThumbnailedFace(row[0], (row[1], row[2], row[3], row[4]), row[5], row[6]) if row is not None else None
