"""SQL of the search index (migration 20): the dirty marks, the documents and the queries.

SQLite holds the documents in search_docs and the full-text index in search_fts (FTS5, external
content: each document's old text must be given back to FTS5 to remove it). PostgreSQL holds the
same documents with a GIN index over their tokens (postgres/migrations.py SEARCH_TSV). Queries come
here as tokens the service made (imageapi.core.search): the MATCH and tsquery texts are built from
them here, each token quoted, never from what a user typed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from imageapi.core.db import Connection, dialect
from imageapi.core.repositories import as_dicts
from imageapi.core.repositories.files import DIR_SEEN_SQL

FileDict = dict[str, Any]
SEARCH_LOCK = 0x1A9E_0020  # PostgreSQL advisory lock: one refresh writes documents at a time
_PG_TSV = "array_to_tsvector(string_to_array(trim(d.body || ' ' || d.facets), ' '))"  # the GIN's expression


def _marks(n: int) -> str:
    return ",".join("?" * n)


# ------------------------------------------------------------------------------------ dirty marks

async def dirty_batch(db: Connection, limit: int) -> list[tuple[int, int]]:
    """(file id, generation) of up to `limit` files whose document is due."""
    async with db.execute("SELECT file_id, gen FROM search_dirty ORDER BY file_id LIMIT ?", (limit,)) as cur:
        return [(int(r[0]), int(r[1])) for r in await cur.fetchall()]


async def any_dirty(db: Connection) -> bool:
    # By the key's index: after a big refresh PostgreSQL's table is full of dead rows until vacuumed,
    # which a plain scan would read through on every search.
    async with db.execute("SELECT file_id FROM search_dirty ORDER BY file_id LIMIT 1") as cur:
        return await cur.fetchone() is not None


async def count_dirty(db: Connection) -> int:
    async with db.execute("SELECT COUNT(*) FROM search_dirty") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def count_docs(db: Connection) -> int:
    async with db.execute("SELECT COUNT(*) FROM search_docs") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def clear_dirty(db: Connection, marks: Sequence[tuple[int, int]]) -> None:
    """Remove the marks read, unless a change marked the file again since (its gen moved)."""
    await db.executemany("DELETE FROM search_dirty WHERE file_id = ? AND gen = ?", list(marks))


async def mark_all(db: Connection) -> None:
    await db.execute("INSERT INTO search_dirty (file_id, gen) SELECT id, 1 FROM files WHERE id IS NOT NULL "
                     "ON CONFLICT (file_id) DO UPDATE SET gen = search_dirty.gen + 1")


async def analyze(db: Connection) -> None:
    """PostgreSQL: fresh statistics of the documents (the GIN expression's tokens among them), so
    the planner weighs a word or a person by how many files have it after a large refresh, before
    autovacuum gets to it. Not in a transaction."""
    if dialect(db) == "postgresql":
        await db.execute("ANALYZE search_docs")


async def lock(db: Connection) -> None:
    """In the caller's transaction: PostgreSQL lets two refreshes run at once, SQLite's write lock
    already keeps them apart."""
    if dialect(db) == "postgresql":
        await db.execute("SELECT pg_advisory_xact_lock(?)", (SEARCH_LOCK,))


# ---------------------------------------------------------------------------- documents' sources

async def file_sources(db: Connection, ids: Sequence[int]) -> list[FileDict]:
    """What a document is made of, of the files (of these ids) that still exist."""
    sql = ("SELECT id, library_id, rel_path, kind, taken_at, make, model, lens, gps_lat, gps_lon, content_hash, "
           f"place_city, place_region, place_country, place_cc FROM files WHERE id IN ({_marks(len(ids))})")
    async with db.execute(sql, list(ids)) as cur:
        return as_dicts(await cur.fetchall())


async def tags_of(db: Connection, hashes: Sequence[str]) -> list[tuple[str, int, str]]:
    """(content hash, tag id, tag name) of these contents."""
    sql = ("SELECT ct.content_hash, t.id, t.name FROM content_tags ct JOIN tags t ON t.id = ct.tag_id "
           f"WHERE ct.content_hash IN ({_marks(len(hashes))})")
    async with db.execute(sql, list(hashes)) as cur:
        return [(r[0], int(r[1]), r[2]) for r in await cur.fetchall()]


async def persons_of(db: Connection, hashes: Sequence[str]) -> list[tuple[str, int, str]]:
    """(content hash, person id, name) of the named persons whose faces are in these contents."""
    sql = ("SELECT DISTINCT fc.content_hash, p.id, p.name FROM faces fc JOIN persons p ON p.id = fc.person_id "
           f"WHERE fc.content_hash IN ({_marks(len(hashes))}) AND p.name IS NOT NULL")
    async with db.execute(sql, list(hashes)) as cur:
        return [(r[0], int(r[1]), r[2]) for r in await cur.fetchall()]


async def insight_titles(db: Connection, hashes: Sequence[str]) -> list[tuple[str, str]]:
    sql = f"SELECT content_hash, title FROM insights WHERE content_hash IN ({_marks(len(hashes))})"
    async with db.execute(sql, list(hashes)) as cur:
        return [(r[0], r[1]) for r in await cur.fetchall()]


async def persons(db: Connection) -> list[tuple[int, str]]:
    """(id, name) of the named persons."""
    async with db.execute("SELECT id, name FROM persons WHERE name IS NOT NULL") as cur:
        return [(int(r[0]), r[1]) for r in await cur.fetchall()]


async def tag_ids(db: Connection, key: str) -> list[int]:
    async with db.execute("SELECT id FROM tags WHERE key = ?", (key,)) as cur:
        return [int(r[0]) for r in await cur.fetchall()]


# -------------------------------------------------------------------------------------- documents

@dataclass(frozen=True)
class Doc:
    docid: int
    file_id: int
    body: str
    facets: str


async def docs_of(db: Connection, ids: Sequence[int]) -> list[Doc]:
    sql = f"SELECT docid, file_id, body, facets FROM search_docs WHERE file_id IN ({_marks(len(ids))})"
    async with db.execute(sql, list(ids)) as cur:
        return [Doc(int(r[0]), int(r[1]), r[2], r[3]) for r in await cur.fetchall()]


async def taken_docids(db: Connection, docids: Sequence[int]) -> set[int]:
    sql = f"SELECT docid FROM search_docs WHERE docid IN ({_marks(len(docids))})"
    async with db.execute(sql, list(docids)) as cur:
        return {int(r[0]) for r in await cur.fetchall()}


async def delete_docs(db: Connection, docs: Sequence[Doc]) -> None:
    """In the caller's transaction."""
    if not docs:
        return
    if dialect(db) == "sqlite":
        await db.executemany(
            "INSERT INTO search_fts (search_fts, rowid, body, facets) VALUES ('delete', ?, ?, ?)",
            [(d.docid, d.body, d.facets) for d in docs])
    await db.executemany("DELETE FROM search_docs WHERE docid = ?", [(d.docid,) for d in docs])


async def insert_docs(db: Connection, docs: Sequence[Doc]) -> None:
    """In the caller's transaction."""
    if not docs:
        return
    rows = [(d.docid, d.file_id, d.body, d.facets) for d in docs]
    await db.executemany("INSERT INTO search_docs (docid, file_id, body, facets) VALUES (?, ?, ?, ?)", rows)
    if dialect(db) == "sqlite":
        await db.executemany("INSERT INTO search_fts (rowid, body, facets) VALUES (?, ?, ?)",
                             [(d.docid, d.body, d.facets) for d in docs])


async def add_terms(db: Connection, terms: Sequence[str]) -> None:
    """Record tokens now indexed (known ones are left). In the caller's transaction."""
    await db.executemany("INSERT INTO search_terms (term) VALUES (?) ON CONFLICT (term) DO NOTHING",
                         [(t,) for t in terms])


async def terms_with_prefix(db: Connection, prefix: str, limit: int) -> list[str]:
    async with db.execute("SELECT term FROM search_terms WHERE term >= ? AND term < ? ORDER BY term LIMIT ?",
                          (prefix, prefix + "\U0010ffff", limit)) as cur:
        return [r[0] for r in await cur.fetchall()]


async def delete_all(db: Connection) -> None:
    """Every document and the whole index (rebuild). In the caller's transaction."""
    if dialect(db) == "sqlite":
        await db.execute("INSERT INTO search_fts (search_fts) VALUES ('delete-all')")
    await db.execute("DELETE FROM search_docs WHERE docid IS NOT NULL")
    await db.execute("DELETE FROM search_terms WHERE term IS NOT NULL")


# ----------------------------------------------------------------------------------------- queries

@dataclass(frozen=True)
class Terms:
    """What a search asks of the index: every one of `words` (prefixes when `prefix`), every one
    of `facets`, and one of each group of `any_of`."""
    words: tuple[tuple[str, bool], ...]          # (token, prefix)
    facets: tuple[str, ...] = ()
    any_of: tuple[tuple[str, ...], ...] = ()

    def empty(self) -> bool:
        return not (self.words or self.facets or self.any_of)


def fts_match(t: Terms) -> str:
    """The FTS5 query: each token a quoted string (tokens hold letters and digits only, and a
    quote would be doubled anyway), so no user text is ever FTS5 syntax."""
    def q(tok: str) -> str:
        return '"' + tok.replace('"', '""') + '"'
    parts = [q(w) + ("*" if p else "") for w, p in t.words]
    parts += [q(f) for f in t.facets]
    parts += ["(" + " OR ".join(q(f) for f in g) + ")" for g in t.any_of]
    return " AND ".join(parts)


def pg_tsquery(t: Terms) -> str:
    """The same as a tsquery text: quoted lexemes, `:*` for prefixes."""
    def q(tok: str) -> str:
        return "'" + tok.replace("\\", "\\\\").replace("'", "''") + "'"
    parts = [q(w) + (":*" if p else "") for w, p in t.words]
    parts += [q(f) for f in t.facets]
    parts += ["(" + " | ".join(q(f) for f in g) + ")" for g in t.any_of]
    return " & ".join(parts)


@dataclass(frozen=True)
class Find:
    terms: Terms
    docids: tuple[int, int]                       # inclusive range (the date filter)
    order: str                                    # newest, oldest, relevance
    limit: int
    after_docid: int | None = None
    after_score: float | None = None              # relevance pages
    bbox: tuple[float, float, float, float] | None = None   # south, west, north, east
    no_gps: bool = False


def _file_filters(q: Find) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if q.bbox is not None:
        s, w, n, e = q.bbox
        where.append("f.gps_lat BETWEEN ? AND ?")
        params += [s, n]
        if w <= e:
            where.append("f.gps_lon BETWEEN ? AND ?")
            params += [w, e]
        else:  # across the antimeridian
            where.append("(f.gps_lon >= ? OR f.gps_lon <= ?)")
            params += [w, e]
    if q.no_gps:
        where.append("(f.gps_lat IS NULL OR f.gps_lon IS NULL)")
    return where, params


EXPAND_MAX = 32      # whole terms a word may stand for in SQLite before it is asked as a prefix
PREFIX_INDEXED = 3   # the longest prefix index of search_fts


async def _expanded(db: Connection, terms: Terms) -> Terms:
    """SQLite: each prefix word longer than the prefix indexes as the whole terms it begins (one
    group of alternatives), when there are few; see migration 20."""
    words: list[tuple[str, bool]] = []
    groups: list[tuple[str, ...]] = []
    for w, prefix in terms.words:
        if not prefix or len(w) <= PREFIX_INDEXED:
            words.append((w, prefix))
            continue
        found = await terms_with_prefix(db, w, EXPAND_MAX + 1)
        if len(found) > EXPAND_MAX:
            words.append((w, prefix))
        else:
            groups.append(tuple(found) or (w,))  # no such term: the word itself, which finds nothing
    return Terms(tuple(words), terms.facets, (*terms.any_of, *groups))


async def find(db: Connection, q: Find) -> list[FileDict]:
    """Files found, in the order asked, at most `limit`; each row is the files table's columns and
    `dir_seen_at`, `docid` and (relevance) `score`: lower is better."""
    sqlite = dialect(db) == "sqlite"
    relevance = q.order == "relevance" and bool(q.terms.words)
    if sqlite and q.terms.words:
        q = replace(q, terms=await _expanded(db, q.terms))
    where, params = _file_filters(q)
    on_files = bool(where)   # filters on the files' own columns (GPS)
    desc = q.order != "oldest"
    if q.terms.empty():
        src, docid = "search_docs d", "d.docid"
        score = "0.0"
    elif sqlite:
        src, docid = "search_fts JOIN search_docs d ON d.docid = search_fts.rowid", "search_fts.rowid"
        where.insert(0, "search_fts MATCH ?")
        params.insert(0, fts_match(q.terms))
        score = "search_fts.rank"
    else:
        src, docid = "search_docs d", "d.docid"
        where.insert(0, f"{_PG_TSV} @@ CAST(? AS tsquery)")
        params.insert(0, pg_tsquery(q.terms))
        score = f"CAST(-ts_rank({_PG_TSV}, CAST(? AS tsquery)) AS DOUBLE PRECISION)"
    where.append(f"{docid} BETWEEN ? AND ?")
    params += list(q.docids)
    op = "<" if desc else ">"
    if q.after_docid is not None and relevance and q.after_score is not None:
        where.append(f"({score} > ? OR ({score} = ? AND {docid} < ?))")
        extra: list[object] = [q.after_score, q.after_score, q.after_docid]
        if not sqlite:  # the score's own tsquery parameter, before each use of it
            tsq = pg_tsquery(q.terms)
            extra = [tsq, q.after_score, tsq, q.after_score, q.after_docid]
        params += extra
    elif q.after_docid is not None:
        where.append(f"{docid} {op} ?")
        params.append(q.after_docid)
    order = f"{score}, {docid} DESC" if relevance else f"{docid} {'DESC' if desc else 'ASC'}"
    select_params: list[object] = []
    if relevance and not sqlite:
        select_params.append(pg_tsquery(q.terms))
        order = f"score, {docid} DESC"
    elif relevance:
        order = f"score, {docid} DESC"
    if relevance and not sqlite:
        # Rank in search_docs alone and read the files rows of one page only: the rank is taken
        # of every match (a common word is 7% of the library), and with f.* and the folder's
        # seen time carried through that sort, a page cost seconds at 1M files.
        join = " JOIN files f ON f.id = d.file_id" if on_files else ""
        sql = (f"SELECT f.*, {DIR_SEEN_SQL}, top.docid AS docid, top.score AS score FROM "
               f"(SELECT d.docid AS docid, d.file_id AS file_id, {score} AS score FROM {src}{join} "
               f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?) top "
               f"JOIN files f ON f.id = top.file_id ORDER BY top.score, top.docid DESC")
        async with db.execute(sql, [*select_params, *params, q.limit]) as cur:
            return as_dicts(await cur.fetchall())
    sql = (f"SELECT f.*, {DIR_SEEN_SQL}, {docid} AS docid, {score if relevance else '0.0'} AS score "
           f"FROM {src} JOIN files f ON f.id = d.file_id WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?")
    async with db.execute(sql, [*select_params, *params, q.limit]) as cur:
        return as_dicts(await cur.fetchall())
