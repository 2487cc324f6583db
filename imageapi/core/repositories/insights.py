"""SQL of insights, their conversation threads, daily summaries and the geocode cache (tables of
migration 5), for imageapi.core.insights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from imageapi.core.database import insert
from imageapi.core.db import Connection


@dataclass(frozen=True)
class InsightRow:
    id: int
    content_hash: str
    thread_id: int | None
    amended_from: int | None
    title: str
    body: str
    tools: str          # JSON
    backend: str
    server: str
    model: str
    failovers: str      # JSON
    timings: str        # JSON
    created_at: str


_INSIGHT_COLUMNS = ("id, content_hash, thread_id, amended_from, title, body, tools, backend, server, model, "
                    "failovers, timings, created_at")


@dataclass(frozen=True)
class NewInsight:
    content_hash: str
    thread_id: int | None
    amended_from: int | None
    title: str
    body: str
    tools: str
    backend: str
    server: str
    model: str
    failovers: str
    timings: str
    created_at: str


@dataclass(frozen=True)
class MessageRow:
    """One message of a thread; also what is written."""
    seq: int
    role: str
    content: str
    tool_calls: str | None      # JSON
    tool_call_id: str | None
    tool_name: str | None
    backend: str | None
    server: str | None
    model: str | None
    created_at: str


async def insert_insight(db: Connection, new: NewInsight) -> int:
    """In the caller's transaction."""
    return await insert(
        db,
        "INSERT INTO insights (content_hash, thread_id, amended_from, title, body, tools, backend, server, "
        "model, failovers, timings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (new.content_hash, new.thread_id, new.amended_from, new.title, new.body, new.tools, new.backend,
         new.server, new.model, new.failovers, new.timings, new.created_at),
    )


async def set_thread(db: Connection, insight_id: int, thread_id: int) -> None:
    """In the caller's transaction."""
    await db.execute("UPDATE insights SET thread_id = ? WHERE id = ?", (thread_id, insight_id))


async def insight(db: Connection, insight_id: int) -> InsightRow | None:
    async with db.execute(f"SELECT {_INSIGHT_COLUMNS} FROM insights WHERE id = ?", (insight_id,)) as cur:
        row = await cur.fetchone()
    return InsightRow(*row) if row is not None else None


async def insights_of(db: Connection, content_hash: str, limit: int) -> list[InsightRow]:
    """Newest first."""
    async with db.execute(f"SELECT {_INSIGHT_COLUMNS} FROM insights WHERE content_hash = ? ORDER BY id DESC LIMIT ?",
                          (content_hash, limit)) as cur:
        return [InsightRow(*r) for r in await cur.fetchall()]


async def messages(db: Connection, thread_id: int) -> list[MessageRow]:
    """In order."""
    async with db.execute(
        "SELECT seq, role, content, tool_calls, tool_call_id, tool_name, backend, server, model, created_at "
        "FROM insight_messages WHERE thread_id = ? ORDER BY seq", (thread_id,),
    ) as cur:
        return [MessageRow(*r) for r in await cur.fetchall()]


async def insert_messages(db: Connection, thread_id: int, rows: Sequence[MessageRow]) -> None:
    """One batch. In the caller's transaction."""
    if not rows:
        return
    await db.executemany(
        "INSERT INTO insight_messages (thread_id, seq, role, content, tool_calls, tool_call_id, tool_name, "
        "backend, server, model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(thread_id, m.seq, m.role, m.content, m.tool_calls, m.tool_call_id, m.tool_name, m.backend, m.server,
          m.model, m.created_at) for m in rows],
    )


async def last_seq(db: Connection, thread_id: int) -> int:
    """The thread's last message (-1 for none)."""
    async with db.execute("SELECT COALESCE(MAX(seq), -1) FROM insight_messages WHERE thread_id = ?",
                          (thread_id,)) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row is not None else -1


async def cut_thread(db: Connection, thread_id: int, from_seq: int) -> None:
    """Delete the messages from `from_seq` on. In the caller's transaction."""
    await db.execute("DELETE FROM insight_messages WHERE thread_id = ? AND seq >= ?", (thread_id, from_seq))


# ------------------------------------------------------------------------------------- summaries

async def summary_exists(db: Connection, day: str, contact: str) -> bool:
    async with db.execute("SELECT 1 FROM conversation_summaries WHERE day = ? AND contact = ?",
                          (day, contact)) as cur:
        return await cur.fetchone() is not None


async def summary_days(db: Connection, contact: str, first: str, last: str) -> set[str]:
    async with db.execute(
        "SELECT day FROM conversation_summaries WHERE contact = ? AND day BETWEEN ? AND ?", (contact, first, last),
    ) as cur:
        return {r[0] for r in await cur.fetchall()}


async def insert_summary(db: Connection, *, day: str, contact: str, summary: str, message_count: int, model: str,
                         server: str, embedding: bytes, embedding_model: str, now: str) -> bool:
    """False when that day and contact has one already. In the caller's transaction."""
    cur = await db.execute(
        "INSERT INTO conversation_summaries (day, contact, summary, message_count, model, server, "
        "embedding, embedding_model, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (day, contact, summary, message_count, model, server, embedding, embedding_model, now),
    )
    return bool(cur.rowcount > 0)


async def summaries_signature(db: Connection) -> tuple[int, int]:
    """(rows, highest id): changes whenever a summary is added or deleted."""
    async with db.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM conversation_summaries") as cur:
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def summary_embeddings(db: Connection, model: str, after_id: int, limit: int,
                             days: tuple[str, str] | None = None) -> list[tuple[int, str, bytes]]:
    """(id, day, embedding) of the model's summaries after `after_id`, by id, at most `limit`; only
    days within `days` (first, last) when given."""
    sql = "SELECT id, day, embedding FROM conversation_summaries WHERE embedding_model = ? AND id > ?"
    params: list[object] = [model, after_id]
    if days is not None:
        sql += " AND day BETWEEN ? AND ?"
        params += list(days)
    sql += f" ORDER BY id LIMIT {int(limit)}"
    async with db.execute(sql, params) as cur:
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


async def summaries_by_id(db: Connection, ids: Sequence[int]) -> dict[int, tuple[str, str, str]]:
    """id -> (day, contact, summary)."""
    if not ids:
        return {}
    sql = f"SELECT id, day, contact, summary FROM conversation_summaries WHERE id IN ({','.join('?' * len(ids))})"
    async with db.execute(sql, list(ids)) as cur:
        return {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}


# --------------------------------------------------------------------------------------- geocode

async def cached_geocode(db: Connection, source: str, lat_key: int, lon_key: int, max_age: str) -> str | None:
    """The cached answer (JSON) fetched at or after `max_age`."""
    async with db.execute(
        "SELECT result FROM geocode_cache WHERE source = ? AND lat_key = ? AND lon_key = ? AND fetched_at >= ?",
        (source, lat_key, lon_key, max_age),
    ) as cur:
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def put_geocode(db: Connection, source: str, lat_key: int, lon_key: int, result: str, now: str) -> None:
    """In the caller's transaction."""
    await db.execute(
        "INSERT INTO geocode_cache (source, lat_key, lon_key, result, fetched_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (source, lat_key, lon_key) DO UPDATE SET result = excluded.result, "
        "fetched_at = excluded.fetched_at",
        (source, lat_key, lon_key, result, now),
    )


# ----------------------------------------------------------------------------- the model's tools

async def face_names(db: Connection, content_hash: str) -> list[str | None]:
    """One entry per face of the content: its person's name, None when unbound."""
    async with db.execute(
        "SELECT p.name FROM faces f LEFT JOIN persons p ON p.id = f.person_id WHERE f.content_hash = ?",
        (content_hash,),
    ) as cur:
        return [r[0] for r in await cur.fetchall()]


@dataclass(frozen=True)
class DayFile:
    rel_path: str
    kind: str
    taken_at: str | None
    taken_at_offset: int | None
    gps_lat: float | None
    gps_lon: float | None
    content_hash: str | None


async def files_taken_between(db: Connection, library_id: int, first: str, before: str, except_id: int,
                              limit: int) -> list[DayFile]:
    """Readable files of the library taken in [first, before), but `except_id`, by time."""
    async with db.execute(
        "SELECT rel_path, kind, taken_at, taken_at_offset, gps_lat, gps_lon, content_hash FROM files "
        "WHERE library_id = ? AND taken_at >= ? AND taken_at < ? AND id != ? AND error IS NULL "
        "ORDER BY taken_at, id LIMIT ?",
        (library_id, first, before, except_id, limit),
    ) as cur:
        return [DayFile(*r) for r in await cur.fetchall()]
