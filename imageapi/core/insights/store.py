"""Insights, conversation threads, daily summaries and the geocode cache (tables of migration 5).

Writes go through `InsightStore` (its SQL is in imageapi.core.repositories.insights), in the
connection's transactions (`imageapi.core.database`,
which serialises them). Everything a model produced is written in one transaction after the model
finished, so a failure or a cancelled request leaves nothing half-written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.errors import LockedError, NotFoundError, UsageError
from imageapi.core.insights.providers import Failover, Message, ToolCall
from imageapi.core.repositories import insights as repo
from imageapi.core.repositories.insights import InsightRow, MessageRow, NewInsight

MAX_RESULT_CHARS = 20_000  # one tool result as stored and shown (the model saw the same)


class ThreadChanged(LockedError):
    """Another request changed the conversation while this one was waiting for the model."""

    code = "thread_changed"


@dataclass
class ToolRecord:
    """One tool call as the model made it and what it got back."""

    id: str
    name: str
    arguments: dict[str, Any]
    result: Any
    error: str | None = None
    ms: float = 0.0

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "arguments": self.arguments, "result": self.result}
        if self.error:
            out["error"] = self.error
        return out


@dataclass
class InsightDraft:
    """A finished insight before it is stored."""

    title: str
    body: str
    tools: list[ToolRecord]
    backend: str
    server: str
    model: str
    failovers: list[Failover]
    timings: dict[str, Any]


@dataclass
class StoredMessage:
    seq: int
    message: Message
    backend: str | None = None
    server: str | None = None
    model: str | None = None
    created_at: str = ""


@dataclass
class NewMessage:
    """A message to append to a thread, with who answered (assistant messages)."""

    message: Message
    backend: str | None = None
    server: str | None = None
    model: str | None = None


@dataclass
class Rendered:
    """A message as the transcript shows it: user and assistant turns only, each assistant turn
    with the tool calls made before it. `start_seq` is where a rewind to it cuts."""

    index: int
    role: str
    content: str
    start_seq: int
    tools: list[dict[str, Any]] = field(default_factory=list)
    backend: str | None = None
    model: str | None = None
    created_at: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "role": self.role, "content": self.content,
                               "created_at": self.created_at}
        if self.role == "assistant":
            out.update(tools=self.tools, backend=self.backend, model=self.model)
        return out


def insight_json(row: InsightRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "content_hash": row.content_hash,
        "thread_id": row.thread_id,
        "amended_from": row.amended_from,
        "title": row.title,
        "text": row.body,
        "tools": json.loads(row.tools),
        "backend": row.backend,
        "server": row.server,
        "model": row.model,
        "failovers": json.loads(row.failovers),
        "timings": json.loads(row.timings),
        "created_at": row.created_at,
    }

def result_text(result: Any) -> str:
    """A tool result as the model sees it (JSON), bounded."""
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "...(cut)"


def _result_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


class InsightStore:
    def __init__(self, db: Connection) -> None:
        self.db = db

    # ------------------------------------------------------------------------------- insights

    async def add_insight(self, content_hash: str, draft: InsightDraft, *, transcript: Sequence[NewMessage] = (),
                          thread_id: int | None = None, amended_from: int | None = None) -> dict[str, Any]:
        """Store an insight; a new thread (with `transcript`) unless `thread_id` is given."""
        now = utcnow()
        async with transaction(self.db):
            new_id = await repo.insert_insight(self.db, NewInsight(
                content_hash, thread_id, amended_from, draft.title, draft.body,
                json.dumps([t.public() for t in draft.tools], ensure_ascii=False, default=str),
                draft.backend, draft.server, draft.model,
                json.dumps([f.to_json() for f in draft.failovers]), json.dumps(draft.timings), now))
            if thread_id is None:
                await repo.set_thread(self.db, new_id, new_id)
                await self._insert_messages(new_id, 0, transcript, now)
        found = await self.get_insight(new_id)
        assert found is not None
        return found

    async def get_insight(self, insight_id: int) -> dict[str, Any] | None:
        row = await repo.insight(self.db, insight_id)
        return insight_json(row) if row is not None else None

    async def list_insights(self, content_hash: str, limit: int = 100) -> list[dict[str, Any]]:
        return [insight_json(r) for r in await repo.insights_of(self.db, content_hash, limit)]

    async def latest_insight(self, content_hash: str) -> dict[str, Any] | None:
        found = await self.list_insights(content_hash, 1)
        return found[0] if found else None

    async def latest_or_404(self, content_hash: str, rel: str) -> dict[str, Any]:
        found = await self.latest_insight(content_hash)
        if found is None:
            raise NotFoundError(f"{rel!r} has no insight yet: generate one first (POST /insights/generate)")
        return found

    # -------------------------------------------------------------------------------- threads

    async def thread(self, thread_id: int) -> list[StoredMessage]:
        out = []
        for r in await repo.messages(self.db, thread_id):
            calls = [ToolCall.from_json(c) for c in json.loads(r.tool_calls)] if r.tool_calls else []
            msg = Message(r.role, r.content, tool_calls=calls, tool_call_id=r.tool_call_id, name=r.tool_name)
            out.append(StoredMessage(r.seq, msg, r.backend, r.server, r.model, r.created_at))
        return out

    async def _insert_messages(self, thread_id: int, first_seq: int, messages: Iterable[NewMessage], now: str) -> None:
        rows = []
        for i, m in enumerate(messages):
            msg = m.message
            calls = json.dumps([c.to_json() for c in msg.tool_calls], ensure_ascii=False) if msg.tool_calls else None
            rows.append(MessageRow(first_seq + i, msg.role, msg.content, calls, msg.tool_call_id, msg.name,
                                   m.backend, m.server, m.model, now))
        await repo.insert_messages(self.db, thread_id, rows)

    async def append(self, thread_id: int, after_seq: int, messages: Sequence[NewMessage]) -> None:
        """Append a turn. ThreadChanged when the thread no longer ends at `after_seq` (another turn or
        a rewind got in while the model was answering)."""
        now = utcnow()
        async with transaction(self.db):
            if await repo.last_seq(self.db, thread_id) != after_seq:
                raise ThreadChanged("the conversation changed while the model was answering: reload it and "
                                    "send the message again")
            await self._insert_messages(thread_id, after_seq + 1, messages, now)

    async def rewind(self, thread_id: int, index: int) -> list[Rendered]:
        """Drop rendered message `index`, the tool scaffolding before it and everything after it.
        The initial user message (index 0) stays."""
        rendered = render(await self.thread(thread_id))
        if index < 1:
            raise UsageError("the initial message cannot be removed (index must be 1 or more)")
        if index >= len(rendered):
            raise UsageError(f"no message at index {index} (the conversation has {len(rendered)})")
        cut = rendered[index].start_seq
        async with transaction(self.db):
            await repo.cut_thread(self.db, thread_id, cut)
        return rendered[:index]

    # ------------------------------------------------------------------------------ summaries

    async def summary_done(self, day: str, contact: str) -> bool:
        return await repo.summary_exists(self.db, day, contact)

    async def days_done(self, contact: str, first: str, last: str) -> set[str]:
        return await repo.summary_days(self.db, contact, first, last)

    async def add_summary(self, *, day: str, contact: str, summary: str, message_count: int, model: str,
                          server: str, embedding: bytes, embedding_model: str) -> bool:
        """Store a summary; False when that day and contact was already done (by another run)."""
        async with transaction(self.db):
            return await repo.insert_summary(self.db, day=day, contact=contact, summary=summary,
                                             message_count=message_count, model=model, server=server,
                                             embedding=embedding, embedding_model=embedding_model, now=utcnow())

    # ------------------------------------------------------------------------------- geocode

    async def cached_geocode(self, source: str, lat: float, lon: float, max_age: str) -> Any | None:
        """A cached answer fetched after `max_age` (a utcnow()-style stamp), or None."""
        found = await repo.cached_geocode(self.db, source, geo_key(lat), geo_key(lon), max_age)
        return json.loads(found) if found is not None else None

    async def cache_geocode(self, source: str, lat: float, lon: float, result: Any) -> None:
        async with transaction(self.db):
            await repo.put_geocode(self.db, source, geo_key(lat), geo_key(lon),
                                   json.dumps(result, ensure_ascii=False), utcnow())

def geo_key(degrees: float) -> int:
    return round(degrees * 10_000)


def render(messages: Sequence[StoredMessage]) -> list[Rendered]:
    """The transcript a client shows: user turns, and assistant answers carrying the tool calls
    (with arguments and results) made since the previous user turn."""
    out: list[Rendered] = []
    tools: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    scaffold_start: int | None = None
    for sm in messages:
        m = sm.message
        if m.role == "user":
            out.append(Rendered(len(out), "user", m.content, sm.seq, created_at=sm.created_at))
            tools, by_id, scaffold_start = [], {}, None
        elif m.role == "assistant" and m.tool_calls:
            scaffold_start = sm.seq if scaffold_start is None else scaffold_start
            for c in m.tool_calls:
                entry: dict[str, Any] = {"name": c.name, "arguments": c.arguments, "result": None}
                tools.append(entry)
                by_id[c.id] = entry
        elif m.role == "tool":
            scaffold_start = sm.seq if scaffold_start is None else scaffold_start
            entry = by_id.get(m.tool_call_id or "") or {"name": m.name, "arguments": {}, "result": None}
            if entry not in tools:
                tools.append(entry)
            entry["result"] = _result_value(m.content)
        elif m.role == "assistant":
            start = scaffold_start if scaffold_start is not None else sm.seq
            out.append(Rendered(len(out), "assistant", m.content, start, tools, sm.backend, sm.model, sm.created_at))
            tools, by_id, scaffold_start = [], {}, None
    return out
