"""Daily conversation summaries: the SMS API client, the job that writes one summary per day and
contact (with an embedding), and cosine search over them.

The SMS API's contract is in docs/sms-api.md. The job skips days already summarised, so running
it again (or at every `serve` start-up) only does new days. Days without messages are not stored:
messages synced late are summarised by the next run.

Search keeps the stored vectors (unit length, float32) in one numpy matrix per embedding model,
rebuilt when the table changes; past MAX_CACHED_BYTES the rows are streamed in chunks instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from imageapi.core.db import Connection
from imageapi.core.errors import ServiceError, UsageError
from imageapi.core.insights.http import get_json
from imageapi.core.insights.providers import Backends, Message, ProviderError
from imageapi.core.insights.settings import InsightSettings
from imageapi.core.insights.store import InsightStore
from imageapi.core.repositories import insights as insights_repo

log = logging.getLogger(__name__)

SMS_TIMEOUT = 30.0
SMS_CONNECT_TIMEOUT = 5.0
MAX_SMS_RESPONSE_BYTES = 16 * 1024 * 1024
MAX_MESSAGES_PER_DAY = 5000
PROMPT_CHAR_BUDGET = 24_000      # the day's messages as shown to the model
MAX_SUMMARY_CHARS = 4000
MAX_CACHED_BYTES = 256 * 1024 * 1024
CHUNK_ROWS = 2000
MAX_DAYS = 36600                 # one build covers at most a century

SUMMARY_SYSTEM = (
    "You summarise one day of text messages between the user ('me') and one contact. Write 2 to 6 plain "
    "sentences: what was discussed or planned, places, people and events mentioned, and the mood. Use only "
    "what the messages say; never invent. No preamble, no bullet points."
)

Progress = Callable[[str, int, int | None], None]


class SmsApiError(ServiceError):
    """The SMS API failed or answered something that is not its contract."""


@dataclass(frozen=True)
class SmsMessage:
    time: str          # as the API sent it (ISO 8601)
    from_me: bool
    sender: str
    text: str


class SmsClient:
    """GET /api/contacts and GET /api/messages?contact=&date= (docs/sms-api.md)."""

    def __init__(self, base_url: str, token: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers, transport=transport,
                                         timeout=httpx.Timeout(SMS_TIMEOUT, connect=SMS_CONNECT_TIMEOUT),
                                         follow_redirects=False)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        status, doc, body = await get_json(self._client, path, params, what=f"the SMS API at {self.base_url}",
                                           timeout=SMS_TIMEOUT + SMS_CONNECT_TIMEOUT,
                                           max_bytes=MAX_SMS_RESPONSE_BYTES, error=SmsApiError)
        if status == 404:
            return None
        if status >= 400:
            detail = body[:200].decode("utf-8", "replace").strip()
            raise SmsApiError(f"the SMS API answered HTTP {status} for {path}" + (f": {detail}" if detail else ""))
        return doc

    async def contacts(self) -> list[str]:
        doc = await self._get("/api/contacts", {})
        items = doc.get("contacts") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise SmsApiError("GET /api/contacts: expected {\"contacts\": [...]}")
        names = []
        for item in items:
            name = item.get("name") if isinstance(item, dict) else item
            if isinstance(name, str) and name.strip():
                names.append(name.strip())
        return list(dict.fromkeys(names))

    async def messages(self, contact: str, day: date) -> list[SmsMessage]:
        """The day's messages with one contact, oldest first (an unknown contact has none)."""
        doc = await self._get("/api/messages", {"contact": contact, "date": day.isoformat()})
        if doc is None:
            return []
        items = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise SmsApiError("GET /api/messages: expected {\"messages\": [...]}")
        out = []
        for item in items[:MAX_MESSAGES_PER_DAY]:
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                continue  # a picture-only message, or junk: nothing to summarise
            from_me = item.get("from_me") is True
            sender = item.get("sender") if isinstance(item.get("sender"), str) else ("me" if from_me else contact)
            raw_stamp = item.get("timestamp")
            stamp = raw_stamp if isinstance(raw_stamp, str) else ""
            out.append(SmsMessage(stamp, from_me, "me" if from_me else str(sender), item["text"]))
        out.sort(key=lambda m: m.time)
        return out


def conversation_text(messages: Sequence[SmsMessage], budget: int = PROMPT_CHAR_BUDGET) -> str:
    """The messages as 'HH:MM sender: text' lines, cut to the budget (the middle goes first: the
    start and the end of a day say most about it)."""
    lines = []
    for m in messages:
        clock = m.time[11:16] if len(m.time) >= 16 else ""
        text = " ".join(m.text.split())
        lines.append(f"{clock} {m.sender}: {text}".strip())
    full = "\n".join(lines)
    if len(full) <= budget:
        return full
    half = budget // 2
    return full[:half] + "\n[... messages left out ...]\n" + full[-half:]


# ----------------------------------------------------------------------------------- vectors


def to_unit_blob(vector: Sequence[float]) -> bytes:
    v = np.asarray(vector, dtype=np.float32)
    n = float(np.linalg.norm(v))
    if n > 0:
        v = v / n
    return v.astype("<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob[: len(blob) - len(blob) % 4], dtype="<f4")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if va.shape != vb.shape or va.size == 0:
        return 0.0
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    return float(va @ vb / (na * nb)) if na and nb else 0.0


@dataclass
class Hit:
    id: int
    day: str
    contact: str
    summary: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "day": self.day, "contact": self.contact, "summary": self.summary,
                "score": round(self.score, 4)}


@dataclass
class _Matrix:
    signature: tuple[int, int]
    ids: np.ndarray
    days: np.ndarray        # proleptic ordinals
    vectors: np.ndarray     # n x d, unit rows


class SummaryIndex:
    """Cosine search over the stored summaries of one embedding model."""

    def __init__(self, db: Connection, max_cached_bytes: int = MAX_CACHED_BYTES) -> None:
        self.db = db
        self.max_cached_bytes = max_cached_bytes
        self._cache: dict[str, _Matrix] = {}
        self._lock = asyncio.Lock()

    async def _signature(self) -> tuple[int, int]:
        return await insights_repo.summaries_signature(self.db)

    async def _chunks(self, model: str, dim: int, first: date | None, last: date | None
                      ) -> AsyncIterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, day ordinals, unit vectors) of the model's rows of length `dim`, CHUNK_ROWS at a time."""
        window = (first.isoformat(), last.isoformat()) if first is not None and last is not None else None
        after = 0
        while True:
            rows = await insights_repo.summary_embeddings(self.db, model, after, CHUNK_ROWS, window)
            if not rows:
                return
            after = rows[-1][0]
            keep = [r for r in rows if len(r[2]) == dim * 4]
            if keep:
                ids = np.fromiter((r[0] for r in keep), dtype=np.int64, count=len(keep))
                days = np.fromiter((date.fromisoformat(r[1]).toordinal() for r in keep), dtype=np.int64,
                                   count=len(keep))
                vectors = np.frombuffer(b"".join(r[2] for r in keep), dtype="<f4").reshape(len(keep), dim)
                yield ids, days, vectors
            if len(rows) < CHUNK_ROWS:
                return

    async def _matrix(self, model: str, dim: int) -> _Matrix | None:
        """The whole model's matrix, cached; None when it would be larger than allowed."""
        async with self._lock:
            sig = await self._signature()
            hit = self._cache.get(model)
            if hit is not None and hit.signature == sig and hit.vectors.shape[1] == dim:
                return hit
            if sig[0] * dim * 4 > self.max_cached_bytes:
                return None
            parts = [c async for c in self._chunks(model, dim, None, None)]
            if parts:
                m = _Matrix(sig, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                            np.ascontiguousarray(np.concatenate([p[2] for p in parts])))
            else:
                m = _Matrix(sig, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
            self._cache = {model: m}  # one model at a time: the query's
            return m

    async def search(self, vector: Sequence[float], model: str, *, around: date | None = None,
                     days: int | None = None, limit: int = 5) -> list[Hit]:
        """The `limit` summaries closest to `vector`, optionally within `days` of `around`."""
        q = np.asarray(vector, dtype=np.float32)
        n = float(np.linalg.norm(q))
        if q.ndim != 1 or q.size == 0 or n == 0:
            return []
        q = q / n
        first = last = None
        if around is not None and days is not None:
            first, last = around - timedelta(days=days), around + timedelta(days=days)
        best_ids: list[np.ndarray] = []
        best_scores: list[np.ndarray] = []
        matrix = await self._matrix(model, q.size)
        chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
        if matrix is not None:
            chunks = [(matrix.ids, matrix.days, matrix.vectors)]
        else:
            chunks = [c async for c in self._chunks(model, q.size, first, last)]
        for ids, day_ords, vectors in chunks:
            if first is not None and last is not None:
                mask = (day_ords >= first.toordinal()) & (day_ords <= last.toordinal())
                ids, vectors = ids[mask], vectors[mask]
            if ids.size == 0:
                continue
            scores = vectors @ q
            k = min(limit, scores.size)
            top = np.argpartition(-scores, k - 1)[:k]
            best_ids.append(ids[top])
            best_scores.append(scores[top])
        if not best_ids:
            return []
        all_ids, all_scores = np.concatenate(best_ids), np.concatenate(best_scores)
        order = np.argsort(-all_scores, kind="stable")[:limit]
        chosen = [(int(all_ids[i]), float(all_scores[i])) for i in order]
        rows = await insights_repo.summaries_by_id(self.db, [c[0] for c in chosen])
        return [Hit(i, rows[i][0], rows[i][1], rows[i][2], s) for i, s in chosen if i in rows]


async def search_summaries(index: SummaryIndex, backends: Backends, query: str, *, around: date | None = None,
                           days: int | None = None, limit: int = 5) -> list[Hit]:
    """Embed the query (the stored model) and search."""
    query = query.strip()
    if not query:
        raise UsageError("the search query is empty")
    emb = await backends.embed([query])
    return await index.search(emb.vectors[0], emb.model, around=around, days=days, limit=limit)


# --------------------------------------------------------------------------------------- job


@dataclass
class SummaryReport:
    written: int = 0
    skipped: int = 0           # already done
    empty: int = 0             # no messages that day
    failed: int = 0
    stopped: str | None = None  # why the job stopped early (a service down)
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # day, contact, why
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"written": self.written, "skipped": self.skipped, "empty": self.empty, "failed": self.failed,
                "stopped": self.stopped, "errors": [{"day": d, "contact": c, "error": e} for d, c, e in self.errors],
                "seconds": round(self.seconds, 3)}


def days_between(start: date, end: date) -> list[date]:
    if start > end:
        raise UsageError(f"the range is empty: {start} is after {end}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise UsageError(f"the range covers {count} days (at most {MAX_DAYS})")
    return [start + timedelta(days=i) for i in range(count)]


async def build_summaries(store: InsightStore, backends: Backends, sms: SmsClient, contacts: Sequence[str],
                          start: date, end: date, *, progress: Progress | None = None,
                          stop: asyncio.Event | None = None) -> SummaryReport:
    """One summary per day and contact in start..end that is not done yet. A contact of "*" means
    every contact the SMS API lists. Stops early (report.stopped) when the SMS API or every model
    server is down: the remaining days are done by the next run."""
    started = time.monotonic()
    report = SummaryReport()
    days = days_between(start, end)
    names = list(dict.fromkeys(contacts))
    try:
        if "*" in names:
            names = [n for n in names if n != "*"] + [c for c in await sms.contacts() if c not in names]
    except SmsApiError as exc:
        report.stopped = exc.message
        report.seconds = time.monotonic() - started
        return report
    todo: list[tuple[str, date]] = []
    for name in names:
        done = await store.days_done(name, days[0].isoformat(), days[-1].isoformat())
        report.skipped += sum(1 for d in days if d.isoformat() in done)
        todo += [(name, d) for d in days if d.isoformat() not in done]
    provider = backends.summary_provider()
    total = len(todo)
    if progress:
        progress("summaries", 0, total)
    for i, (name, day) in enumerate(todo):
        if stop is not None and stop.is_set():
            report.stopped = "stopped"
            break
        try:
            messages = await sms.messages(name, day)
            if not messages:
                report.empty += 1
            else:
                await _summarise_one(store, backends, provider, name, day, messages, report)
        except SmsApiError as exc:
            report.stopped = exc.message
            break
        except ProviderError as exc:
            report.stopped = exc.message
            break
        except ServiceError as exc:  # a model server refused this one day's input
            report.failed += 1
            report.errors.append((day.isoformat(), name, exc.message))
        if progress:
            progress("summaries", i + 1, total)
    report.seconds = time.monotonic() - started
    if report.stopped:
        log.warning("summaries: stopped after %d written: %s", report.written, report.stopped)
    return report


async def _summarise_one(store: InsightStore, backends: Backends, provider: Any, contact: str, day: date,
                         messages: Sequence[SmsMessage], report: SummaryReport) -> None:
    prompt = (f"Messages between me and {contact} on {day.strftime('%A %d %B %Y')}:\n\n"
              f"{conversation_text(messages)}")
    reply = await provider.chat([Message("system", SUMMARY_SYSTEM), Message("user", prompt)], None)
    summary = " ".join(reply.content.split())[:MAX_SUMMARY_CHARS]
    if not summary:
        report.failed += 1
        report.errors.append((day.isoformat(), contact, f"{reply.model} returned an empty summary"))
        return
    emb = await backends.embed([f"Conversation with {contact} on {day.isoformat()}: {summary}"])
    written = await store.add_summary(day=day.isoformat(), contact=contact, summary=summary,
                                      message_count=len(messages), model=reply.model, server=reply.server,
                                      embedding=to_unit_blob(emb.vectors[0]), embedding_model=emb.model)
    if written:
        report.written += 1
    else:
        report.skipped += 1


def parse_day(raw: str, name: str) -> date:
    try:
        return datetime.strptime(raw.strip(), "%Y-%m-%d").date()
    except ValueError:
        raise UsageError(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from None


def settings_range(settings: InsightSettings, first: date | None, last: date | None) -> tuple[date, date]:
    """An explicit --from/--to over the settings' range (by default the last SUMMARIES_DAYS to yesterday)."""
    start, end = settings.summary_range()
    end = last or end
    start = first or (start if last is None else end - timedelta(days=settings.summaries_days - 1))
    return start, end
