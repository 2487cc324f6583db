"""SQL of persons and of binding faces to them, for imageapi.core.faces.people."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection
from imageapi.core.repositories import nocase


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str | None      # None: an unnamed cluster


@dataclass(frozen=True)
class BoundCount:
    """Faces bound to one person in one way, and the photos they are in."""
    person_id: int
    bound_by: str
    faces: int
    photos: int


@dataclass(frozen=True)
class PhotoFace:
    id: int
    embedding: bytes
    person_id: int | None
    model: str


async def by_id(db: Connection, person_id: int) -> PersonRow | None:
    async with db.execute("SELECT id, name FROM persons WHERE id = ?", (person_id,)) as cur:
        row = await cur.fetchone()
    return PersonRow(row[0], row[1]) if row is not None else None


async def by_name(db: Connection, name: str) -> PersonRow | None:
    """The person of this name, case aside (ASCII letters)."""
    async with db.execute(f"SELECT id, name FROM persons WHERE {nocase(db, 'name')} = {nocase(db, '?')}",
                          (name,)) as cur:
        row = await cur.fetchone()
    return PersonRow(row[0], row[1]) if row is not None else None


async def name_taken(db: Connection, name: str, except_id: int) -> bool:
    """Whether a person other than `except_id` has this name (case aside)."""
    async with db.execute(f"SELECT id FROM persons WHERE {nocase(db, 'name')} = {nocase(db, '?')} AND id != ?",
                          (name, except_id)) as cur:
        return await cur.fetchone() is not None


async def insert_person(db: Connection, name: str, now: str) -> int:
    """The new person's id; IntegrityError when the name is taken. In the caller's transaction."""
    return await insert(db, "INSERT INTO persons (name, created_at) VALUES (?, ?)", (name, now))


async def insert_unnamed(db: Connection, now: str) -> int:
    """A new unnamed person (a cluster); its id. In the caller's transaction."""
    return await insert(db, "INSERT INTO persons (name, created_at) VALUES (NULL, ?)", (now,))


async def all_people(db: Connection) -> list[PersonRow]:
    """Named ones by name, case aside, then unnamed ones by id."""
    async with db.execute(
        f"SELECT id, name FROM persons ORDER BY CASE WHEN name IS NULL THEN 1 ELSE 0 END, {nocase(db, 'name')}, id"
    ) as cur:
        return [PersonRow(r[0], r[1]) for r in await cur.fetchall()]


async def cover_faces(db: Connection) -> dict[int, int]:
    """Each person's best-scored face (its id), by person id."""
    async with db.execute(
        "SELECT person_id, id FROM (SELECT person_id, id, ROW_NUMBER() OVER "
        "(PARTITION BY person_id ORDER BY score DESC, id) AS rn FROM faces WHERE person_id IS NOT NULL) t "
        "WHERE rn = 1"
    ) as cur:
        return {r[0]: r[1] for r in await cur.fetchall()}


async def delete_empty_unnamed(db: Connection) -> int:
    """Unnamed persons left with no face; how many. In the caller's transaction."""
    cur = await db.execute(
        "DELETE FROM persons WHERE name IS NULL AND NOT EXISTS (SELECT 1 FROM faces f WHERE f.person_id = persons.id)"
    )
    return int(cur.rowcount)


@dataclass(frozen=True)
class PersonFace:
    id: int
    library: str | None      # a library holding a file of the face's content (None: no file now)
    path: str | None
    box: tuple[float, float, float, float]
    score: float
    bound_by: str | None


async def faces_page(db: Connection, person_id: int, after: int, limit: int) -> list[PersonFace]:
    """The person's faces by id, after the face id `after`, at most `limit`; each with the file of
    lowest id holding its content."""
    async with db.execute(
        "SELECT fc.id, l.name, f.rel_path, fc.x, fc.y, fc.w, fc.h, fc.score, fc.bound_by FROM faces fc "
        "LEFT JOIN files f ON f.id = (SELECT MIN(g.id) FROM files g WHERE g.content_hash = fc.content_hash) "
        "LEFT JOIN libraries l ON l.id = f.library_id "
        "WHERE fc.person_id = ? AND fc.id > ? ORDER BY fc.id LIMIT ?", (person_id, after, limit),
    ) as cur:
        return [PersonFace(r[0], r[1], r[2], (r[3], r[4], r[5], r[6]), r[7], r[8]) for r in await cur.fetchall()]


# -- "not this person" ----------------------------------------------------------------------------

async def reject(db: Connection, face_id: int, person_id: int, now: str) -> None:
    """In the caller's transaction."""
    await db.execute("INSERT INTO face_rejections (face_id, person_id, created_at) VALUES (?, ?, ?) "
                     "ON CONFLICT DO NOTHING", (face_id, person_id, now))


async def unreject(db: Connection, face_id: int, person_id: int) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM face_rejections WHERE face_id = ? AND person_id = ?", (face_id, person_id))


async def rejections_in_content(db: Connection, content_hash: str) -> set[tuple[int, int]]:
    """(face id, person id) pairs the user unbound, of this content's faces."""
    async with db.execute(
        "SELECT r.face_id, r.person_id FROM face_rejections r JOIN faces f ON f.id = r.face_id "
        "WHERE f.content_hash = ?", (content_hash,)
    ) as cur:
        return {(r[0], r[1]) for r in await cur.fetchall()}


async def rejections_of_model(db: Connection, model: str) -> set[tuple[int, int]]:
    async with db.execute(
        "SELECT r.face_id, r.person_id FROM face_rejections r JOIN faces f ON f.id = r.face_id WHERE f.model = ?",
        (model,),
    ) as cur:
        return {(r[0], r[1]) for r in await cur.fetchall()}


async def move_rejections(db: Connection, source_id: int, target_id: int) -> None:
    """A face rejected from the source is rejected from what it merges into. In the caller's transaction."""
    await db.execute(
        "INSERT INTO face_rejections (face_id, person_id, created_at) "
        "SELECT face_id, ?, created_at FROM face_rejections WHERE person_id = ? ON CONFLICT DO NOTHING",
        (target_id, source_id),
    )


async def unbind_rejected(db: Connection, source_id: int, target_id: int) -> int:
    """Unbind the source's faces that were rejected from the target (a merge does not bind them to
    it); how many. In the caller's transaction."""
    cur = await db.execute(
        "UPDATE faces SET person_id = NULL, bound_by = NULL, bound_at = NULL WHERE person_id = ? "
        "AND id IN (SELECT face_id FROM face_rejections WHERE person_id = ?)", (source_id, target_id),
    )
    return int(cur.rowcount)


async def bound_counts(db: Connection) -> list[BoundCount]:
    async with db.execute(
        "SELECT person_id, bound_by, COUNT(*), COUNT(DISTINCT content_hash) FROM faces "
        "WHERE person_id IS NOT NULL GROUP BY person_id, bound_by"
    ) as cur:
        return [BoundCount(r[0], r[1], int(r[2]), int(r[3])) for r in await cur.fetchall()]


async def rename(db: Connection, person_id: int, name: str) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE persons SET name = ? WHERE id = ?", (name, person_id))


async def unbind_where_both(db: Connection, source_id: int, target_id: int) -> int:
    """Unbind the source's faces in photos where the target has a face; how many. In the caller's
    transaction."""
    cur = await db.execute(
        "UPDATE faces SET person_id = NULL, bound_by = NULL, bound_at = NULL "
        "WHERE person_id = ? AND content_hash IN (SELECT content_hash FROM faces WHERE person_id = ?)",
        (source_id, target_id),
    )
    return int(cur.rowcount)


async def move_faces(db: Connection, source_id: int, target_id: int) -> int:
    """Every face of the source to the target; how many. In the caller's transaction."""
    cur = await db.execute("UPDATE faces SET person_id = ? WHERE person_id = ?", (target_id, source_id))
    return int(cur.rowcount)


async def delete_person(db: Connection, person_id: int) -> None:
    """In the caller's transaction."""
    await db.execute("DELETE FROM persons WHERE id = ?", (person_id,))


async def embeddings_of(db: Connection, person_id: int, model: str) -> AsyncIterator[bytes]:
    """The embeddings of the person's faces of one model, streamed."""
    async with db.execute("SELECT embedding FROM faces WHERE person_id = ? AND model = ?", (person_id, model)) as cur:
        async for (blob,) in cur:
            yield blob


async def person_tags(db: Connection, content_hash: str) -> list[PersonRow]:
    """The persons whose name is a tag of this content (case aside), by id."""
    async with db.execute(
        "SELECT DISTINCT p.id, p.name FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
        f"JOIN persons p ON {nocase(db, 'p.name')} = {nocase(db, 't.name')} WHERE ct.content_hash = ? ORDER BY p.id",
        (content_hash,),
    ) as cur:
        return [PersonRow(r[0], r[1]) for r in await cur.fetchall()]


async def photo_faces(db: Connection, content_hash: str) -> list[PhotoFace]:
    """The content's faces in order, with their embeddings and persons."""
    async with db.execute(
        "SELECT id, embedding, person_id, model FROM faces WHERE content_hash = ? ORDER BY idx", (content_hash,)
    ) as cur:
        return [PhotoFace(r[0], r[1], r[2], r[3]) for r in await cur.fetchall()]


async def bind_if_free(db: Connection, face_id: int, person_id: int, how: str, now: str) -> None:
    """Bind a face that is bound to no one. In the caller's transaction."""
    await db.execute(
        "UPDATE faces SET person_id = ?, bound_by = ?, bound_at = ? WHERE id = ? AND person_id IS NULL",
        (person_id, how, now, face_id),
    )


async def face_state(db: Connection, key: str) -> str | None:
    async with db.execute("SELECT value FROM face_state WHERE key = ?", (key,)) as cur:
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def set_face_state(db: Connection, key: str, value: str) -> None:
    """In the caller's transaction."""
    await db.execute(
        "INSERT INTO face_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value),
    )


async def claim_face_state(db: Connection, key: str, value: str) -> bool:
    """Set `key` to `value` unless it already holds it; whether this call changed it. One of
    several processes racing to set the same value wins (the nightly pass runs once a day, whether
    the watcher or a worker starts it). In the caller's transaction."""
    async with db.execute(
        "INSERT INTO face_state (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE face_state.value <> excluded.value "
        "RETURNING key", (key, value),
    ) as cur:
        return await cur.fetchone() is not None


async def newest_tag_link(db: Connection) -> str | None:
    """created_at of the newest content-tag link."""
    async with db.execute("SELECT MAX(created_at) FROM content_tags") as cur:
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def photos_to_autobind(db: Connection, since: str | None) -> list[str]:
    """Contents with a person tag and an unbound face where some tagged person has no face yet;
    only tag links made at or after `since` when given. Oldest link first."""
    sql = (
        "SELECT ct.content_hash, MAX(ct.created_at) FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
        f"JOIN persons p ON {nocase(db, 'p.name')} = {nocase(db, 't.name')} "
        "WHERE EXISTS (SELECT 1 FROM faces f WHERE f.content_hash = ct.content_hash AND f.person_id IS NULL) "
        # Photos where every tagged person already has their face are done.
        "AND NOT EXISTS (SELECT 1 FROM faces b WHERE b.content_hash = ct.content_hash AND b.person_id = p.id)"
    )
    params: tuple[object, ...] = ()
    if since is not None:
        sql += " AND ct.created_at >= ?"  # >=: a link made in the same microsecond is not missed
        params = (since,)
    sql += " GROUP BY ct.content_hash ORDER BY MAX(ct.created_at)"
    async with db.execute(sql, params) as cur:
        return [r[0] for r in await cur.fetchall()]
