"""Re-detection with another backend (`imageapi faces reindex --model M`).

Embeddings of two models live in different spaces and are never compared, so switching backends
means detecting again. `mark_for_reindex` drops the scan marks of the contents detected by M (one
transaction; their faces stay); the backlog then finds them due like any unscanned content and the
current backend detects them in the background. When a new detection is stored
(store.insert_detection, one transaction with the scan mark) it replaces the content's old
detected faces, carrying over what people made by box overlap: an old face bound to a person, or a
box drawn by hand, whose box overlaps a new face by IoU >= 0.5 gives that face its person and how
it was bound (the best overlaps first, each face used once), and the persons the user said it is
not ("not this person" is remembered across backends); a drawn box with no match stays as it is.
Killed at any moment, nothing is lost: a content is either still waiting with its old faces or
stored with its new ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.repositories import face_reindex as repo

MIN_IOU = 0.5
MANUAL_MODEL = "manual"   # as imageapi.core.faces.people.MANUAL_MODEL (not imported: people imports the store)

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two x, y, w, h boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


async def mark_for_reindex(db: Connection, model: str) -> int:
    """Contents detected by `model`, now due for detection by the current backend; how many."""
    async with transaction(db):
        return await repo.unmark_model(db, model)


@dataclass(frozen=True)
class Replaced:
    carried: int     # bindings (or drawn boxes) given to new faces
    kept: int        # drawn boxes with no match, kept as they were


async def drop_old_faces(db: Connection, content_hash: str) -> list[repo.OldFace]:
    """Before a new detection of the content is appended: delete its detected faces and return
    them with its drawn boxes (the caller matches them). In the caller's transaction."""
    old = await repo.faces_with_bindings(db, content_hash)
    detected = [f.id for f in old if f.model != MANUAL_MODEL]
    if detected:
        await repo.delete_faces(db, detected)
    return old


async def carry_over(db: Connection, content_hash: str, old: list[repo.OldFace]) -> Replaced:
    """After the new faces are in: give them the persons of the old faces they overlap. In the
    caller's transaction."""
    worth = [f for f in old if f.person_id is not None or f.rejected or f.model == MANUAL_MODEL]
    if not worth:
        return Replaced(0, 0)
    new = [f for f in await repo.faces_with_bindings(db, content_hash) if f.model != MANUAL_MODEL]
    pairs = sorted(((iou(o.box, n.box), i, j) for i, o in enumerate(worth) for j, n in enumerate(new)),
                   key=lambda t: (-t[0], t[1], t[2]))
    used_old: set[int] = set()
    used_new: set[int] = set()
    matched: list[tuple[repo.OldFace, repo.OldFace]] = []
    for overlap, i, j in pairs:
        if overlap < MIN_IOU:
            break
        if i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        matched.append((worth[i], new[j]))
    # A drawn box that a new face matches is replaced by it (first, so its person is free).
    await repo.delete_faces(db, [o.id for o, _ in matched if o.model == MANUAL_MODEL])
    carried = 0
    now = utcnow()
    for o, n in matched:
        if o.person_id is not None:
            await repo.carry_binding(db, n.id, o.person_id, o.bound_by, o.bound_at)
            carried += 1
        if o.rejected:
            await repo.carry_rejections(db, n.id, o.rejected, now)
    kept = sum(1 for i, f in enumerate(worth) if f.model == MANUAL_MODEL and i not in used_old)
    return Replaced(carried, kept)
