"""SQL of re-detection (imageapi.core.faces.reindex): the scan marks of one model, and a content's
faces with their bindings as the new detection replaces them."""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.db import Connection


@dataclass(frozen=True)
class OldFace:
    id: int
    box: tuple[float, float, float, float]
    model: str
    person_id: int | None
    bound_by: str | None
    bound_at: str | None
    rejected: tuple[int, ...] = ()   # persons the user said this face is not


async def unmark_model(db: Connection, model: str) -> int:
    """Drop the scan marks of contents detected by `model` (their faces stay until the new
    detection replaces them); how many. In the caller's transaction."""
    cur = await db.execute("DELETE FROM face_scans WHERE model = ?", (model,))
    return int(cur.rowcount)


async def count_marked(db: Connection, model: str) -> int:
    async with db.execute("SELECT COUNT(*) FROM face_scans WHERE model = ?", (model,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def faces_with_bindings(db: Connection, content_hash: str) -> list[OldFace]:
    async with db.execute(
        "SELECT id, x, y, w, h, model, person_id, bound_by, bound_at FROM faces WHERE content_hash = ? ORDER BY idx",
        (content_hash,),
    ) as cur:
        rows = await cur.fetchall()
    rejected: dict[int, list[int]] = {}
    async with db.execute(
        "SELECT r.face_id, r.person_id FROM face_rejections r JOIN faces f ON f.id = r.face_id "
        "WHERE f.content_hash = ? ORDER BY r.person_id", (content_hash,)
    ) as cur:
        for face_id, person_id in await cur.fetchall():
            rejected.setdefault(face_id, []).append(person_id)
    return [OldFace(r[0], (r[1], r[2], r[3], r[4]), r[5], r[6], r[7], r[8], tuple(rejected.get(r[0], ())))
            for r in rows]


async def carry_rejections(db: Connection, face_id: int, person_ids: tuple[int, ...], now: str) -> None:
    """In the caller's transaction."""
    await db.executemany(
        "INSERT INTO face_rejections (face_id, person_id, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(face_id, p, now) for p in person_ids])


async def delete_faces(db: Connection, ids: list[int]) -> None:
    """In the caller's transaction."""
    await db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])


async def carry_binding(db: Connection, face_id: int, person_id: int, bound_by: str | None,
                        bound_at: str | None) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE faces SET person_id = ?, bound_by = ?, bound_at = ? WHERE id = ?",
                     (person_id, bound_by, bound_at, face_id))
