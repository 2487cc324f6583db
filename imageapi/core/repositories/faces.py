"""SQL of faces and persons, for the face services (imageapi.core.faces.people)."""

from __future__ import annotations

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
