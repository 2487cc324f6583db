"""The face backlog: what still needs a detect call, storing what came back, failures (the SQL is
imageapi.core.repositories.faces').

Work is keyed on content_hash: duplicates of a photo (in one library or several) cause one detect
call, and the faces follow the content when a file is moved or renamed.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.faces.apollo import Detection
from imageapi.core.faces.embeddings import to_blob
from imageapi.core.faces.reindex import carry_over, drop_old_faces
from imageapi.core.repositories import faces as repo
from imageapi.core.store import abs_path

# Kinds that are sent to Apollo (videos are not).
DETECT_KINDS = ("image", "heic", "raw")

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


async def list_unscanned_candidates(
    db: Connection, library_id: int, limit: int, now: datetime | None = None
) -> list[Candidate]:
    """Hashed, unscanned, due image rows of one library, one per distinct hash (its lowest id),
    oldest first, at most `limit`."""
    if limit <= 0:
        return []
    out: list[Candidate] = []
    seen: set[str] = set()
    # Streamed, not fetched whole: stops reading as soon as `limit` distinct hashes are found.
    async with aclosing(repo.unscanned_rows(db, DETECT_KINDS, library_id, stamp(now or now_utc()))) as rows:
        async for r in rows:
            if r.content_hash in seen:
                continue
            seen.add(r.content_hash)
            out.append(Candidate(r.file_id, r.library_id, r.content_hash, r.kind, abs_path(Path(r.root), r.rel_path)))
            if len(out) >= limit:
                break
    return out


async def count_pending(db: Connection, library_id: int | None = None,
                        now: datetime | None = None) -> int:
    """Distinct hashes that list_unscanned_candidates would return with no limit."""
    return await repo.count_unscanned(db, DETECT_KINDS, library_id, stamp(now or now_utc()))


async def count_unhashed_images(db: Connection, library_id: int | None = None) -> int:
    """Image rows still waiting for a hash (each may become a candidate once hashed)."""
    return await repo.count_unhashed(db, DETECT_KINDS, library_id)


async def insert_detection(db: Connection, content_hash: str, detection: Detection,
                           now: str) -> bool:
    """Faces and the scan mark of one hash. Call inside the caller's transaction, so the mark is
    never written without the faces (or the faces twice). False when already scanned."""
    if not await repo.mark_scanned(db, content_hash, detection.model, len(detection.faces), now):
        return False
    # Content queued again by `imageapi faces reindex`: the old detected faces go, their persons
    # (and boxes drawn by hand) pass to the new faces they overlap.
    old = await drop_old_faces(db, content_hash)
    # Each face takes the next position: boxes drawn by hand before detection keep the first
    # ones and the detector's faces follow, in its order (the rows are inserted one after the other).
    await repo.append_faces(db, [
        (content_hash, face.bbox, face.score, to_blob(face.embedding), detection.model, now)
        for face in detection.faces
    ])
    if old:
        await carry_over(db, content_hash, old)
    await repo.clear_failure(db, content_hash)
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
    attempts = await repo.failure_attempts(db, content_hash) + 1
    next_at = None if permanent else stamp(when + timedelta(seconds=backoff_seconds(attempts)))
    error = error if len(error) <= 1000 else error[:1000] + "..."
    await repo.put_failure(db, content_hash, permanent, attempts, error, next_at, stamp(when))
    return FailureRecord(content_hash, permanent, attempts, error, next_at)


async def retry_failed(db: Connection, *, include_backing_off: bool = False) -> int:
    """Put permanent failures (and, when asked, transient ones still backing off) back in the queue."""
    async with transaction(db):
        return await repo.delete_failures(db, permanent_only=not include_backing_off)


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
    st = FaceStatus()
    files = await repo.file_counts(db, DETECT_KINDS, library_id)
    st.files, st.hashed, st.unhashed_images = files.files, files.hashed, files.unhashed
    scans = await repo.scan_counts(db, DETECT_KINDS, library_id, stamp(now or now_utc()))
    st.scanned, st.pending, st.backing_off, st.failed = scans.scanned, scans.pending, scans.backing_off, scans.failed
    st.faces, st.people = await repo.count_faces_and_people(db)
    return st
