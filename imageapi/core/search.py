"""Search (`GET /search`, `imageapi search`): free text over what a file is found by, with filters,
newest first or by relevance, in cursor pages.

Text is folded here, in Python, for both engines alike: NFKD, combining marks dropped, casefold
("São" is "sao", "Straße" is "strasse"), then cut into tokens of letters and digits. Each file has
one document (repositories/search.py) of the tokens of its place, camera, lens, path (file and
folder names), tags, named persons and insight titles, and of its facets (library, kind, GPS,
persons, tags, camera words) that the filters match. Every query word is a prefix ("lisb" finds
Lisboa), but a one-letter word, which must be whole.

The database's triggers (migration 20) mark a file in search_dirty in the very transaction that
changes what it is found by, whoever writes it (scans, tags, faces, persons, insights, places);
`refresh` turns marks into documents, and runs before every search and on the watcher's tick, so a
search never answers from an index older than the last commit. `rebuild` makes every document again.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from imageapi.core.config import Config
from imageapi.core.database import transaction
from imageapi.core.db import Connection
from imageapi.core.errors import UsageError
from imageapi.core.libraries import list_libraries
from imageapi.core.listing import file_record
from imageapi.core.repositories import search as repo
from imageapi.core.tags import tag_key

MAX_QUERY = 500         # characters of free text
MAX_WORDS = 16
MAX_TOKEN = 64          # characters kept of one token (longer ones are cut, in documents and queries)
MAX_FILTER_VALUES = 20  # persons, tags, kinds, libraries
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
REFRESH_BATCH = 1000
ANALYZE_AFTER = 50_000  # documents made by one refresh after which PostgreSQL's statistics are renewed
SORTS = ("newest", "oldest", "relevance")
KINDS = {"photo": ("image", "heic"), "video": ("video",), "raw": ("raw",), "other": ("other",)}
_KIND_FACET = {"image": "photo", "heic": "photo", "video": "video", "raw": "raw", "other": "other"}

_TOKEN = re.compile(r"[^\W_]+")
_EPOCH = datetime(1, 1, 1)
_ID_BITS = 24
_ID_MASK = (1 << _ID_BITS) - 1
MAX_DOCID = 2**63 - 1


# ------------------------------------------------------------------------------------------ text

def fold(text: str) -> str:
    """Case and accents folded: casefold, NFKD, combining marks dropped."""
    if text.isascii():
        return text.lower()  # the same, faster: most names are ASCII
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M"))


def tokens(text: str) -> list[str]:
    """The folded words of `text` (letters and digits; everything else separates)."""
    return list(_tokens(text))


@functools.lru_cache(maxsize=65536)
def _tokens(text: str) -> tuple[str, ...]:
    # Cached: places, cameras, lenses, folders, tags and names repeat across a library's files.
    return tuple(t[:MAX_TOKEN] for t in _TOKEN.findall(fold(text)))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ------------------------------------------------------------------------------------------ docids

def _seconds(taken_at: str | None) -> int:
    """Seconds from year 1 to the wall-clock time (0 for none or unreadable: undated sorts last)."""
    if not taken_at:
        return 0
    try:
        when = datetime.fromisoformat(taken_at[:19])
    except ValueError:
        return 0
    return int((when.replace(tzinfo=None) - _EPOCH).total_seconds()) + 1


def docid_for(taken_at: str | None, file_id: int) -> int:
    """A document's id: ordered by taken_at, then (mostly) by file id."""
    return (_seconds(taken_at) << _ID_BITS) | (file_id & _ID_MASK)


# -------------------------------------------------------------------------------------- documents

def make_doc(row: dict[str, Any], tags: Sequence[tuple[int, str]], persons: Sequence[tuple[int, str]],
             titles: Sequence[str]) -> tuple[str, str]:
    """(body, facets) of a file's document."""
    words: list[str] = []
    for col in ("place_city", "place_region", "place_country", "place_cc", "make", "model", "lens"):
        if row.get(col):
            words += tokens(str(row[col]))
    folder, _, name = row["rel_path"].rpartition("/")
    for part in folder.split("/") if folder else ():
        words += _tokens(part)
    words += tokens(name)
    for _, name in tags:
        words += tokens(name)
    for _, name in persons:
        words += tokens(name)
    for title in titles:
        words += tokens(title)
    facets = [f"_l{row['library_id']}", f"_k{_KIND_FACET.get(row['kind'], 'other')}"]
    if row.get("gps_lat") is not None and row.get("gps_lon") is not None:
        facets.append("_g")
    facets += [f"_p{pid}" for pid, _ in persons]
    facets += [f"_t{tid}" for tid, _ in tags]
    for col in ("make", "model"):
        if row.get(col):
            facets += ["_c" + t for t in tokens(str(row[col]))]
    return " ".join(_unique(words)), " ".join(_unique(facets))


async def refresh(db: Connection, batch: int = REFRESH_BATCH) -> int:
    """Make the documents of every file marked dirty; how many marks were taken. Each batch is a
    transaction of its own: reading the sources, writing the documents and clearing the marks."""
    done = 0
    while True:
        if not await repo.any_dirty(db):  # the usual case: no write transaction at all
            if done >= ANALYZE_AFTER:
                await repo.analyze(db)
            return done
        async with transaction(db):
            await repo.lock(db)
            marks = await repo.dirty_batch(db, batch)
            if not marks:
                return done
            await _refresh_files(db, [m[0] for m in marks])
            await repo.clear_dirty(db, marks)
        done += len(marks)


async def _refresh_files(db: Connection, ids: list[int]) -> None:
    rows = await repo.file_sources(db, ids)
    hashes = _unique(r["content_hash"] for r in rows if r["content_hash"])
    tags: dict[str, list[tuple[int, str]]] = {}
    persons: dict[str, list[tuple[int, str]]] = {}
    titles: dict[str, list[str]] = {}
    if hashes:
        for h, tid, name in await repo.tags_of(db, hashes):
            tags.setdefault(h, []).append((tid, name))
        for h, pid, name in await repo.persons_of(db, hashes):
            persons.setdefault(h, []).append((pid, name))
        for h, title in await repo.insight_titles(db, hashes):
            titles.setdefault(h, []).append(title)
    old = {d.file_id: d for d in await repo.docs_of(db, ids)}
    wanted: list[repo.Doc] = []
    for r in rows:
        h = r["content_hash"]
        body, facets = make_doc(r, sorted(tags.get(h, [])), sorted(persons.get(h, [])), titles.get(h, []))
        docid = docid_for(r["taken_at"], r["id"])
        prev = old.get(r["id"])
        same_second = prev is not None and prev.docid >> _ID_BITS == docid >> _ID_BITS
        if prev is not None and same_second and prev.body == body and prev.facets == facets:
            del old[r["id"]]  # unchanged: left as it is
            continue
        wanted.append(repo.Doc(docid, r["id"], body, facets))
    await repo.delete_docs(db, list(old.values()))  # changed ones and those of files gone
    if wanted:
        taken = await repo.taken_docids(db, [d.docid for d in wanted])
        placed: list[repo.Doc] = []
        for d in wanted:
            docid = d.docid
            while docid in taken:  # another file of that second has the same low bits: the next free id
                docid += 1
                if docid not in taken:
                    taken |= await repo.taken_docids(db, [docid])
            taken.add(docid)
            placed.append(repo.Doc(docid, d.file_id, d.body, d.facets))
        await repo.insert_docs(db, placed)
        await repo.add_terms(db, sorted({t for d in placed for t in d.body.split()}))


async def rebuild(db: Connection, progress: Callable[[int], None] | None = None) -> int:
    """Throw the index away and make every file's document again; the documents made."""
    async with transaction(db):
        await repo.lock(db)
        await repo.delete_all(db)
        await repo.mark_all(db)
    total = 0
    while True:
        n = await refresh(db)
        if progress is not None and n:
            progress(n)
        total += n
        if n == 0:
            return total


@dataclass(frozen=True)
class IndexStatus:
    documents: int
    dirty: int


async def status(db: Connection) -> IndexStatus:
    return IndexStatus(await repo.count_docs(db), await repo.count_dirty(db))


# ----------------------------------------------------------------------------------------- queries

@dataclass
class SearchQuery:
    text: str = ""
    date_from: str | None = None      # YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], on taken_at (inclusive)
    date_to: str | None = None        # same; a bare date takes the whole day
    kinds: list[str] = field(default_factory=list)        # photo, video, raw, other: any of them
    libraries: list[str] = field(default_factory=list)    # names: any of them
    persons: list[str] = field(default_factory=list)      # ids or names: all of them
    tags: list[str] = field(default_factory=list)         # names: all of them
    camera: str | None = None         # words of the make and model: all of them
    has_gps: bool | None = None
    bbox: str | None = None           # "south,west,north,east"
    sort: str = "newest"
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


@dataclass
class SearchPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _clean(text: str, what: str, limit: int) -> str:
    if "\x00" in text:
        raise UsageError(f"{what} must not contain NUL characters")
    if len(text) > limit:
        raise UsageError(f"{what} is too long (at most {limit} characters)")
    return text


def parse_words(text: str) -> tuple[tuple[str, bool], ...]:
    """The query's words as (token, prefix). Anything typed is plain text: quotes, stars,
    parentheses, AND/OR/NOT/NEAR are separators or words like any other."""
    words = _unique(tokens(_clean(text, "q", MAX_QUERY)))
    if len(words) > MAX_WORDS:
        raise UsageError(f"q has too many words (at most {MAX_WORDS})")
    return tuple((w, len(w) > 1) for w in words)


def _when(value: str, name: str, end: bool) -> datetime:
    _clean(value, name, 40)
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d")
            return day + timedelta(days=1, seconds=-1) if end else day
        return datetime.fromisoformat(value).replace(tzinfo=None, microsecond=0)
    except ValueError:
        raise UsageError(f"{name} must be a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM:SS)") from None


def docid_range(date_from: str | None, date_to: str | None) -> tuple[int, int]:
    lo, hi = 0, MAX_DOCID
    start = _when(date_from, "from", False) if date_from else None
    stop = _when(date_to, "to", True) if date_to else None
    if start is not None and stop is not None and start > stop:
        raise UsageError("from is after to")
    if start is not None:
        lo = (int((start - _EPOCH).total_seconds()) + 1) << _ID_BITS
    if stop is not None:
        hi = ((int((stop - _EPOCH).total_seconds()) + 1) << _ID_BITS) | _ID_MASK
    return lo, hi


def parse_bbox(value: str) -> tuple[float, float, float, float]:
    """"south,west,north,east" in degrees; west > east crosses the antimeridian."""
    parts = _clean(value, "bbox", 200).split(",")
    try:
        if len(parts) != 4:
            raise ValueError
        s, w, n, e = (float(p) for p in parts)
    except ValueError:
        raise UsageError("bbox must be four numbers: south,west,north,east") from None
    if not all(math.isfinite(v) for v in (s, w, n, e)):
        raise UsageError("bbox must be four finite numbers")
    if not (-90 <= s <= 90 and -90 <= n <= 90):
        raise UsageError("bbox latitudes must be between -90 and 90")
    if not (-180 <= w <= 180 and -180 <= e <= 180):
        raise UsageError("bbox longitudes must be between -180 and 180")
    if s > n:
        raise UsageError("bbox south is north of its north")
    return s, w, n, e


def encode_cursor(sort: str, docid: int, score: float | None) -> str:
    raw = json.dumps([sort, docid, score], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_BAD_CURSOR = "bad cursor: pass back the next_cursor of the previous page unchanged"


def decode_cursor(cursor: str, sort: str) -> tuple[int, float | None]:
    try:
        raw = base64.urlsafe_b64decode(_clean(cursor, "cursor", 400) + "=" * (-len(cursor) % 4))
        got_sort, docid, score = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise UsageError(_BAD_CURSOR) from None
    if got_sort != sort:
        raise UsageError("bad cursor: it was made for another sort order")
    if not isinstance(docid, int) or isinstance(docid, bool) or not 0 <= docid <= MAX_DOCID:
        raise UsageError(_BAD_CURSOR)
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)
                              or not math.isfinite(score)):
        raise UsageError(_BAD_CURSOR)
    return docid, float(score) if score is not None else None


def _values(values: Sequence[str], name: str) -> list[str]:
    if len(values) > MAX_FILTER_VALUES:
        raise UsageError(f"at most {MAX_FILTER_VALUES} values of {name}")
    return [_clean(v, name, 200) for v in values]


async def _person_ids(db: Connection, wanted: Sequence[str]) -> list[int] | None:
    """The ids of the persons asked for (an id or a name, any case and accents); None when one of
    them is nobody (nothing can match)."""
    known = await repo.persons(db)
    by_id = {pid for pid, _ in known}
    by_name = {fold(name).strip(): pid for pid, name in known}
    out: list[int] = []
    for v in wanted:
        v = v.strip()
        pid = int(v) if v.isascii() and v.isdigit() and len(v) < 19 else None
        if pid is None or pid not in by_id:
            pid = by_name.get(fold(v))
        if pid is None:
            return None
        out.append(pid)
    return out


async def search(db: Connection, config: Config, q: SearchQuery) -> SearchPage:
    if q.sort not in SORTS:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}")
    if not 1 <= q.limit <= MAX_LIMIT:
        raise UsageError(f"limit must be between 1 and {MAX_LIMIT}")
    words = parse_words(q.text)
    docids = docid_range(q.date_from, q.date_to)
    bbox = parse_bbox(q.bbox) if q.bbox else None
    after = decode_cursor(q.cursor, q.sort) if q.cursor else None
    kinds = _values(q.kinds, "kind")
    for k in kinds:
        if k not in KINDS:
            raise UsageError(f"kind must be one of {', '.join(KINDS)}")
    facets: list[str] = []
    any_of: list[tuple[str, ...]] = []
    if kinds:
        any_of.append(tuple(_unique(f"_k{k}" for k in kinds)))
    libs = {lib.id: lib for lib in await list_libraries(db)}
    lib_names = _values(q.libraries, "library")
    if lib_names:
        by_name = {lib.name: lib.id for lib in libs.values()}
        unknown = [n for n in lib_names if n not in by_name]
        if unknown:
            raise UsageError(f"no library named {unknown[0]!r} (known: {', '.join(sorted(by_name)) or 'none'})")
        any_of.append(tuple(_unique(f"_l{by_name[n]}" for n in lib_names)))
    nothing = SearchPage([], None)
    if q.persons:
        pids = await _person_ids(db, _values(q.persons, "person"))
        if pids is None:
            return nothing
        facets += [f"_p{p}" for p in pids]
    for name in _values(q.tags, "tag"):
        ids = await repo.tag_ids(db, tag_key(name))
        if not ids:
            return nothing
        facets.append(f"_t{ids[0]}")
    if q.camera is not None:
        cam = tokens(_clean(q.camera, "camera", 200))
        if not cam:
            raise UsageError("camera must hold a word of the make or model")
        facets += [f"_c{t}" for t in cam]
    if q.has_gps or bbox is not None:
        facets.append("_g")
    terms = repo.Terms(words, tuple(_unique(facets)), tuple(any_of))
    if terms.empty() and q.date_from is None and q.date_to is None and q.has_gps is None:
        raise UsageError("give words to search for (q) or a filter")
    await refresh(db)
    rows = await repo.find(db, repo.Find(
        terms=terms, docids=docids, order=q.sort, limit=q.limit + 1,
        after_docid=after[0] if after else None, after_score=after[1] if after else None,
        bbox=bbox, no_gps=q.has_gps is False))
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    items = [file_record(config, libs[r["library_id"]], r) for r in rows if r["library_id"] in libs]
    next_cursor = None
    if more:
        last = rows[-1]
        score = float(last["score"]) if q.sort == "relevance" and words else None
        next_cursor = encode_cursor(q.sort, int(last["docid"]), score)
    return SearchPage(items, next_cursor)
