"""Tags. They belong to content (the blake3 hash), not to paths: a moved or renamed file keeps its
tags, and identical copies share them.

One tag, however it is typed: names that differ only in case (any script's: "ÉTÉ" and "été",
"Straße" and "STRASSE"), in Unicode normalization (a precomposed "é" and "e" + combining accent,
as macOS and Windows keyboards send them) or in spacing are the same tag. `tag_key` is that rule
(canonical caseless matching: NFD, full case folding, NFC), stored in tags.key with a unique
index. A tag keeps the spelling it was first created with, as it was typed (person tags match
person names by that spelling).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from imageapi.core.database import transaction
from imageapi.core.db import Connection, SqliteConnection, utcnow
from imageapi.core.errors import MediaError, UsageError
from imageapi.core.files import get_file_row
from imageapi.core.libraries import Library, resolve_in_library
from imageapi.core.pool import WorkerPool
from imageapi.core.repositories import files as files_repo
from imageapi.core.repositories import tags as repo
from imageapi.core.worker import hash_batch

MAX_TAG_CHARS = 100


def clean_tag(name: object) -> str:
    """The spelling a tag is stored with: trimmed, inner whitespace collapsed."""
    if not isinstance(name, str):
        raise UsageError("a tag must be a string")
    tag = " ".join(name.split())
    if not tag:
        raise UsageError("a tag must not be empty")
    if len(tag) > MAX_TAG_CHARS:
        raise UsageError(f"a tag must be at most {MAX_TAG_CHARS} characters")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in tag):
        raise UsageError("a tag must not contain control characters or lone surrogates")
    return tag


def tag_key(name: str) -> str:
    """What two spellings of one tag have in common: equal keys, same tag."""
    folded = unicodedata.normalize("NFD", " ".join(name.split())).casefold()
    return unicodedata.normalize("NFC", folded)



def merge_equal_tags(conn: SqliteConnection) -> None:
    """Migration 11: give every tag its key and merge tags whose keys are equal into the one made
    first (it keeps its spelling), moving every file's link over; then the key is unique. Runs
    inside the migration's transaction."""
    first: dict[str, int] = {}
    keep: list[tuple[str, int]] = []
    for tag_id, name in conn.execute("SELECT id, name FROM tags ORDER BY id").fetchall():
        key = tag_key(name)
        into = first.setdefault(key, tag_id)
        if into == tag_id:
            keep.append((key, tag_id))
            continue
        conn.execute(
            "INSERT OR IGNORE INTO content_tags (content_hash, tag_id, created_at) "
            "SELECT content_hash, ?, created_at FROM content_tags WHERE tag_id = ?", (into, tag_id))
        conn.execute("DELETE FROM content_tags WHERE tag_id = ?", (tag_id,))
        conn.execute("DELETE FROM tags WHERE id = ?", (tag_id,))
    conn.executemany("UPDATE tags SET key = ? WHERE id = ?", keep)
    conn.execute("CREATE UNIQUE INDEX tags_by_key ON tags(key)")


async def list_tags(db: Connection) -> list[dict[str, object]]:
    """Every tag with the number of indexed files carrying it, by name."""
    return [{"name": t.name, "count": t.count} for t in await repo.counts(db)]

async def tags_for_hashes(db: Connection, hashes: Iterable[str]) -> dict[str, list[str]]:
    wanted = sorted(set(hashes))
    out: dict[str, list[str]] = {h: [] for h in wanted}
    for i in range(0, len(wanted), repo.IN_CHUNK):
        for h, name in await repo.names_of(db, wanted[i:i + repo.IN_CHUNK]):
            out[h].append(name)
    return out


async def add_tags(db: Connection, hashes: Iterable[str], names: Iterable[str]) -> int:
    """Tag every content with every name, in one transaction; returns how many pairs were new."""
    tags = [clean_tag(n) for n in names]
    hash_list = sorted(set(hashes))
    now = utcnow()
    added = 0
    async with transaction(db):
        for tag in tags:
            key = tag_key(tag)
            tag_id = await repo.by_key(db, key, tag)
            if tag_id is None:
                tag_id = await repo.insert_tag(db, tag, key, now)
            for h in hash_list:
                added += await repo.link(db, h, tag_id, now)
    return added


async def remove_tags(db: Connection, hashes: Iterable[str], names: Iterable[str]) -> int:
    """Untag; a tag left on no content is deleted. Returns how many pairs were removed."""
    tags = [clean_tag(n) for n in names]
    hash_list = sorted(set(hashes))
    removed = 0
    async with transaction(db):
        for tag in tags:
            tag_id = await repo.by_key(db, tag_key(tag), tag)
            if tag_id is None:
                continue
            for h in hash_list:
                removed += await repo.unlink(db, h, tag_id)
            await repo.delete_if_unused(db, tag_id)
    return removed


@dataclass(frozen=True)
class TagChange:
    changed: int                   # pairs added or removed
    tags: dict[str, list[str]]     # each path's tags after the change


async def content_hashes(db: Connection, pool: WorkerPool, lib: Library,
                         paths: list[str]) -> dict[str, str]:
    """path -> content hash. Tags belong to content, so a file not hashed yet is hashed now (in the
    pool) and its hash recorded, as the hash backlog would; a file that cannot be hashed is a
    MediaError and nothing is recorded. NotFoundError for a path not in the index."""
    out: dict[str, str] = {}
    missing: list[tuple[int, str]] = []
    rel_of: dict[int, str] = {}
    for rel in paths:
        row = await get_file_row(db, lib, rel)
        if row["content_hash"]:
            out[rel] = row["content_hash"]
        else:
            missing.append((row["id"], str(resolve_in_library(lib, rel))))
            rel_of[row["id"]] = rel
    if missing:
        made: list[tuple[str, int]] = []
        for row_id, digest, error in await pool.run(hash_batch, missing):
            if digest is None:
                raise MediaError(f"cannot hash {rel_of[row_id]!r}: {error}")
            out[rel_of[row_id]] = digest
            made.append((digest, row_id))
        async with transaction(db):
            await files_repo.set_missing_hashes(db, made)
    return out


async def change_tags(db: Connection, pool: WorkerPool, lib: Library, paths: list[str],
                      names: list[str], *, add: bool) -> TagChange:
    """Tag (or untag) the files at `paths` of one library with every name, hashing the files that
    have no content hash yet."""
    paths = list(dict.fromkeys(paths))
    clean = [clean_tag(n) for n in names]
    hashes = await content_hashes(db, pool, lib, paths)
    if add:
        changed = await add_tags(db, hashes.values(), clean)
    else:
        changed = await remove_tags(db, hashes.values(), clean)
    now = await tags_for_hashes(db, hashes.values())
    return TagChange(changed, {p: now[hashes[p]] for p in paths})
