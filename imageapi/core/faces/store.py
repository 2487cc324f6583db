"""Queries of the face backlog: what still needs a detect call, storing what came back, failures.

Work is keyed on content_hash: duplicates of a photo (in one library or several) cause one detect
call, and the faces follow the content when a file is moved or renamed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.faces.apollo import Detection
from imageapi.core.faces.embeddings import to_blob
from imageapi.core.store import abs_path

# Kinds that are sent to Apollo (videos are not).
DETECT_KINDS = ("image", "heic", "raw")
_KINDS_SQL = "(" + ", ".join(f"'{k}'" for k in DETECT_KINDS) + ")"

BACKOFF_FIRST = 60.0       # seconds before the first retry of a transient failure
BACKOFF_MAX = 86_400.0     # a day


def stamp(when: datetime) -> str:
    """The same sortable UTC format as imageapi.core.db.utcnow()."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_utc() -> datetime:
    return datetime.now(UTC)


def backoff_seconds(attempts: int) -> float:
    """60 s, 120 s, 240 s, ... capped at a day."""
    return min(BACKOFF_FIRST * 2 ** max(0, min(attempts - 1, 30)), BACKOFF_MAX)


@dataclass(frozen=True)
class Candidate:
    file_id: int
    library_id: int
    content_hash: str
    kind: str
    path: str   # absolute path of one file holding this content


# Hashed image rows whose content has no scan mark and is not waiting (permanent failure, or a
# transient one not yet due). `?` order: now.
_UNSCANNED_WHERE = f"""
    f.content_hash IS NOT NULL AND f.kind IN {_KINDS_SQL}
    AND NOT EXISTS (SELECT 1 FROM face_scans s WHERE s.content_hash = f.content_hash)
    AND NOT EXISTS (SELECT 1 FROM face_failures x WHERE x.content_hash = f.content_hash
                    AND (x.permanent = 1 OR x.next_attempt_at > ?))
"""


async def list_unscanned_candidates(
    db: Connection, library_id: int, limit: int, now: datetime | None = None
) -> list[Candidate]:
    """Hashed, unscanned, due image rows of one library, one per distinct hash (its lowest id),
    oldest first, at most `limit`."""
    if limit <= 0:
        return []
    sql = (
        "SELECT f.id, f.library_id, f.content_hash, f.kind, f.rel_path, l.root "
        "FROM files f JOIN libraries l ON l.id = f.library_id "
        # `+f.library_id`: walk files in id order (no index on library_id, no sort of the whole
        # library first), so the scan stops as soon as `limit` hashes are found.
        f"WHERE +f.library_id = ? AND {_UNSCANNED_WHERE} ORDER BY f.id"
    )
    out: list[Candidate] = []
    seen: set[str] = set()
    # Streamed, not fetched whole: stops reading as soon as `limit` distinct hashes are found.
    async with db.execute(sql, (library_id, stamp(now or now_utc()))) as cur:
        async for r in cur:
            if r[2] in seen:
                continue
            seen.add(r[2])
            out.append(Candidate(r[0], r[1], r[2], r[3], abs_path(r[5], r[4])))
            if len(out) >= limit:
                break
    return out


async def count_pending(db: Connection, library_id: int | None = None,
                        now: datetime | None = None) -> int:
    """Distinct hashes that list_unscanned_candidates would return with no limit."""
    sql = f"SELECT COUNT(DISTINCT f.content_hash) FROM files f WHERE {_UNSCANNED_WHERE}"
    params: tuple[object, ...] = (stamp(now or now_utc()),)
    if library_id is not None:
        sql += " AND f.library_id = ?"
        params += (library_id,)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def count_unhashed_images(db: Connection, library_id: int | None = None) -> int:
    """Image rows still waiting for a hash (each may become a candidate once hashed)."""
    sql = f"SELECT COUNT(*) FROM files WHERE content_hash IS NULL AND kind IN {_KINDS_SQL}"
    params: tuple[object, ...] = ()
    if library_id is not None:
        sql += " AND library_id = ?"
        params = (library_id,)
    async with db.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def insert_detection(db: Connection, content_hash: str, detection: Detection,
                           now: str) -> bool:
    """Faces and the scan mark of one hash. Call inside the caller's transaction, so the mark is
    never written without the faces (or the faces twice). False when already scanned."""
    cur = await db.execute(
        "INSERT INTO face_scans (content_hash, model, face_count, scanned_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (content_hash, detection.model, len(detection.faces), now),
    )
    if cur.rowcount == 0:
        return False
    # Each face takes the next position: boxes drawn by hand before detection keep the first
    # ones and Apollo's faces follow, in its order (the rows are inserted one after the other).
    await db.executemany(
        "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, created_at) "
        "SELECT ?, COALESCE((SELECT MAX(idx) + 1 FROM faces WHERE content_hash = ?), 0), ?, ?, ?, ?, ?, ?, ?, ?",
        [
            (content_hash, content_hash, *face.bbox, face.score, to_blob(face.embedding), detection.model, now)
            for face in detection.faces
        ],
    )
    await db.execute("DELETE FROM face_failures WHERE content_hash = ?", (content_hash,))
    return True


@dataclass(frozen=True)
class FailureRecord:
    content_hash: str
    permanent: bool
    attempts: int
    error: str
    next_attempt_at: str | None


async def record_failure(db: Connection, content_hash: str, error: str, *, permanent: bool,
                         now: datetime | None = None) -> FailureRecord:
    """Count one more failed attempt. Transient: retry after an exponential backoff. Call inside
    the caller's transaction."""
    when = now or now_utc()
    async with db.execute("SELECT attempts FROM face_failures WHERE content_hash = ?", (content_hash,)) as cur:
        row = await cur.fetchone()
    attempts = (int(row[0]) if row else 0) + 1
    next_at = None if permanent else stamp(when + timedelta(seconds=backoff_seconds(attempts)))
    error = error if len(error) <= 1000 else error[:1000] + "..."
    await db.execute(
        "INSERT INTO face_failures (content_hash, permanent, attempts, last_error, next_attempt_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (content_hash) DO UPDATE SET permanent = excluded.permanent, "
        "attempts = excluded.attempts, last_error = excluded.last_error, "
        "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at",
        (content_hash, int(permanent), attempts, error, next_at, stamp(when)),
    )
    return FailureRecord(content_hash, permanent, attempts, error, next_at)


async def retry_failed(db: Connection, *, include_backing_off: bool = False) -> int:
    """Put permanent failures (and, when asked, transient ones still backing off) back in the queue."""
    sql = "DELETE FROM face_failures" + ("" if include_backing_off else " WHERE permanent = 1")
    async with transaction(db):
        cur = await db.execute(sql)
    return cur.rowcount


@dataclass
class FaceStatus:
    files: int = 0
    hashed: int = 0
    scanned: int = 0       # distinct image contents with a scan mark
    pending: int = 0       # ... not scanned and due now
    backing_off: int = 0   # ... waiting after a transient failure
    failed: int = 0        # ... permanently failed
    faces: int = 0
    people: int = 0
    unhashed_images: int = 0  # image rows with no hash yet (not in the JSON keys of `faces status`)


async def face_status(db: Connection, library_id: int | None = None,
                      now: datetime | None = None) -> FaceStatus:
    lib_sql, lib_params = ("WHERE library_id = ?", (library_id,)) if library_id is not None else ("", ())
    st = FaceStatus()
    async with db.execute(
        f"SELECT COUNT(*), COUNT(content_hash), "
        f"SUM(content_hash IS NULL AND kind IN {_KINDS_SQL}) FROM files {lib_sql}", lib_params
    ) as cur:
        row = await cur.fetchone()
    if row:
        st.files, st.hashed, st.unhashed_images = int(row[0]), int(row[1]), int(row[2] or 0)
    ts = stamp(now or now_utc())
    hashes_where = f"content_hash IS NOT NULL AND kind IN {_KINDS_SQL}"
    if library_id is not None:
        hashes_where += " AND library_id = ?"
    async with db.execute(
        f"""
        WITH h AS (SELECT DISTINCT content_hash FROM files WHERE {hashes_where})
        SELECT
            COALESCE(SUM(s.content_hash IS NOT NULL), 0),
            COALESCE(SUM(s.content_hash IS NULL AND (x.content_hash IS NULL
                         OR (x.permanent = 0 AND x.next_attempt_at <= ?))), 0),
            COALESCE(SUM(s.content_hash IS NULL AND x.permanent = 0 AND x.next_attempt_at > ?), 0),
            COALESCE(SUM(s.content_hash IS NULL AND x.permanent = 1), 0)
        FROM h LEFT JOIN face_scans s ON s.content_hash = h.content_hash
               LEFT JOIN face_failures x ON x.content_hash = h.content_hash
        """,
        (*lib_params, ts, ts),
    ) as cur:
        row = await cur.fetchone()
    if row:
        st.scanned, st.pending, st.backing_off, st.failed = (int(v) for v in row)
    async with db.execute("SELECT (SELECT COUNT(*) FROM faces), (SELECT COUNT(*) FROM persons)") as cur:
        row = await cur.fetchone()
    if row:
        st.faces, st.people = int(row[0]), int(row[1])
    return st
