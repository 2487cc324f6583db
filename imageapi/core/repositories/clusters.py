"""SQL of face clustering (imageapi.core.faces.cluster): the faces of one model with their
embeddings, and binding faces to the persons a pass chose."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from imageapi.core.db import Connection, IntegrityError, dialect
from imageapi.core.repositories import nocase


@dataclass(frozen=True)
class ModelFace:
    id: int
    content_hash: str
    embedding: bytes
    person_id: int | None
    bound_by: str | None


async def models(db: Connection, manual_model: str) -> list[str]:
    """The models of detected faces (boxes drawn by hand have no embedding)."""
    async with db.execute("SELECT DISTINCT model FROM faces WHERE model != ? ORDER BY model", (manual_model,)) as cur:
        return [r[0] for r in await cur.fetchall()]


async def faces_of_model(db: Connection, model: str) -> AsyncIterator[ModelFace]:
    """Every face of the model, by id, streamed (embeddings as float32 little-endian bytes)."""
    async with db.execute(
        "SELECT id, content_hash, embedding, person_id, bound_by FROM faces WHERE model = ? ORDER BY id", (model,)
    ) as cur:
        async for r in cur:
            yield ModelFace(r[0], r[1], r[2], r[3], r[4])


async def unbound_in_contents(db: Connection, content_hashes: Sequence[str]) -> list[tuple[int, str]]:
    """(face id, model) of the unbound faces of these contents, by id."""
    out: list[tuple[int, str]] = []
    for i in range(0, len(content_hashes), 500):
        part = list(content_hashes[i:i + 500])
        marks = ", ".join("?" * len(part))
        async with db.execute(f"SELECT id, model FROM faces WHERE person_id IS NULL AND content_hash IN ({marks})",
                              part) as cur:
            out.extend((r[0], r[1]) for r in await cur.fetchall())
    return sorted(out)


_BIND_AUTO = (
    "UPDATE faces SET person_id = ?, bound_by = 'auto', bound_at = ? WHERE id = ? AND person_id IS NULL "
    "AND NOT EXISTS (SELECT 1 FROM faces o WHERE o.content_hash = faces.content_hash AND o.person_id = ?) "
    "AND NOT EXISTS (SELECT 1 FROM face_rejections r WHERE r.face_id = faces.id AND r.person_id = ?)"
)


async def bind_auto(db: Connection, face_id: int, person_id: int, now: str) -> bool:
    """Bind a face that is bound to no one, unless the person already has a face in its photo or
    the user said the face is not them. In the caller's transaction."""
    cur = await db.execute(_BIND_AUTO, (person_id, now, face_id, person_id, person_id))
    return bool(cur.rowcount)


async def bind_auto_many(db: Connection, binds: Sequence[tuple[int, int]], now: str) -> int:
    """bind_auto for many (face id, person id) pairs at once; how many were bound (the faces
    stamped `now`: give each pass its own). In the caller's transaction."""
    await db.executemany(_BIND_AUTO, [(person, now, face, person, person) for face, person in binds])
    async with db.execute("SELECT COUNT(*) FROM faces WHERE bound_at = ? AND bound_by = 'auto'", (now,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def unbind_many(db: Connection, face_ids: Sequence[int]) -> None:
    """Unbind faces a pass takes off their person (never manual ones). In the caller's transaction."""
    await db.executemany(
        "UPDATE faces SET person_id = NULL, bound_by = NULL, bound_at = NULL WHERE id = ? "
        "AND (bound_by IS NULL OR bound_by != 'manual')", [(i,) for i in face_ids])


@dataclass(frozen=True)
class TagVote:
    person_id: int       # the cluster
    tagged_id: int       # a named person whose name tags a photo of the cluster's faces, alone
    photos: int


async def single_tag_votes(db: Connection, person_ids: Sequence[int]) -> list[TagVote]:
    """For each of these persons, the named persons whose name is the only person tag of a photo
    holding one of their faces, and in how many such photos."""
    out: list[TagVote] = []
    for i in range(0, len(person_ids), 500):
        part = list(person_ids[i:i + 500])
        marks = ", ".join("?" * len(part))
        sql = (
            "WITH pt AS (SELECT ct.content_hash, p.id AS tagged FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
            f"JOIN persons p ON p.name IS NOT NULL AND {nocase(db, 'p.name')} = {nocase(db, 't.name')} "
            "WHERE ct.content_hash IN (SELECT content_hash FROM faces WHERE person_id IN "
            f"({marks}))), one AS (SELECT content_hash, MIN(tagged) AS tagged FROM pt GROUP BY content_hash "
            "HAVING COUNT(*) = 1) "
            "SELECT f.person_id, one.tagged, COUNT(DISTINCT f.content_hash) FROM faces f "
            f"JOIN one ON one.content_hash = f.content_hash WHERE f.person_id IN ({marks}) "
            "GROUP BY f.person_id, one.tagged"
        )
        async with db.execute(sql, part + part) as cur:
            out.extend(TagVote(r[0], r[1], int(r[2])) for r in await cur.fetchall())
    return out


# -- PostgreSQL with pgvector: nearest neighbours from an HNSW index --------------------------------

def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _index_name(model: str, dim: int) -> str:
    import hashlib

    return f"faces_hnsw_{hashlib.sha256(model.encode()).hexdigest()[:12]}_{dim}"


async def embeddings_are_vectors(db: Connection) -> bool:
    """PostgreSQL whose faces.embedding is a pgvector column (else real[], or SQLite)."""
    if dialect(db) != "postgresql":
        return False
    async with db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass('faces') AND attname = 'embedding' AND NOT attisdropped"
    ) as cur:
        row = await cur.fetchone()
    return bool(row and str(row[0]).startswith("vector"))


async def embedding_dim(db: Connection, face_id: int) -> int:
    """Dimensions of one face's embedding (0: none)."""
    async with db.execute("SELECT embedding FROM faces WHERE id = ?", (face_id,)) as cur:
        row = await cur.fetchone()
    return len(row[0] or b"") // 4 if row is not None else 0


async def ensure_vector_index(db: Connection, model: str, dim: int) -> None:
    """An HNSW index (cosine) over the model's embeddings, partial on the model, made once. Not in
    a transaction (an index on many faces takes a while; other writers wait for it once)."""
    try:
        await db.execute(
            f"CREATE INDEX IF NOT EXISTS {_index_name(model, dim)} ON faces USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE model = {_literal(model)}"
        )
    except IntegrityError:
        # Another process made it at the same moment: IF NOT EXISTS does not wait for a CREATE
        # that has not committed, and the second one trips over the first's catalog row.
        pass


@dataclass(frozen=True)
class Neighbour:
    id: int
    content_hash: str
    person_id: int | None
    distance: float          # cosine distance


async def vector_neighbours(db: Connection, model: str, dim: int, face_id: int, limit: int) -> list[Neighbour]:
    """The `limit` faces of the model nearest to this face, from the HNSW index, nearest first
    (the model is written into the statement so the partial index applies). In the caller's
    transaction (the index's search list is widened for it alone)."""
    await db.execute(f"SET LOCAL hnsw.ef_search = {max(40, min(int(limit), 1000))}")
    vec = f"(f.embedding::vector({dim}))"
    query = f"(SELECT q.embedding::vector({dim}) FROM faces q WHERE q.id = ?)"
    async with db.execute(
        f"SELECT f.id, f.content_hash, f.person_id, {vec} <=> {query} FROM faces f "
        f"WHERE f.model = {_literal(model)} ORDER BY {vec} <=> {query} LIMIT ?",
        (face_id, face_id, limit),
    ) as cur:
        return [Neighbour(r[0], r[1], r[2], float(r[3])) for r in await cur.fetchall()]
