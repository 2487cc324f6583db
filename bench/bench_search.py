"""Search latency over a generated library: p50/p95 of `imageapi.core.search.search` per query.

A library of --files rows (default 1,000,000) is written straight into a new SQLite index with
realistic text: dated folders named after trips, camera file names (IMG_, DSC_, PXL_), five
cameras and their lenses, places (city, region, country; accents included) on 70% of the files
with GPS, tags on 10% of the contents, named persons' faces on 15%, insight titles on 1%. The
search index is then built by the real refresh (its time is reported), and each query runs
--queries times in process (page of 100 items, as the web grid asks): common word, rare word,
prefix, common word in one year (the target: p95 <= 50 ms), relevance order, a person filter, two
persons, a bounding box. With --postgres-url (`auto`: a throwaway cluster, tests/pg.py) the index
is copied there (`imageapi db copy`, whose triggers mark every file for the search index), the
index refreshed and the same queries run.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Verdicts, base_parser, print_header, throwaway_postgres, work_dir  # noqa: E402
from bench.synth import CAMERAS  # noqa: E402
from imageapi.core import search as core  # noqa: E402
from imageapi.core.config import load_config  # noqa: E402
from imageapi.core.db import connect, connect_sync  # noqa: E402

LENSES = ("EF24-105mm f/4L IS USM", "AF-S NIKKOR 24-70mm f/2.8G ED", "FE 28-70mm F3.5-5.6 OSS",
          "XF18-55mmF2.8-4 R LM OIS", "iPhone 13 back dual wide camera 5.1mm f/1.6")
PLACES = [("Lisboa", "Lisboa", "Portugal", "PT"), ("Porto", "Porto", "Portugal", "PT"),
          ("São Paulo", "São Paulo", "Brazil", "BR"), ("Zürich", "Zurich", "Switzerland", "CH"),
          ("München", "Bavaria", "Germany", "DE"), ("Kraków", "Lesser Poland", "Poland", "PL"),
          ("Sevilla", "Andalucía", "Spain", "ES"), ("Paris", "Île-de-France", "France", "FR"),
          ("Reykjavík", "Capital Region", "Iceland", "IS"), ("Tromsø", "Troms", "Norway", "NO"),
          ("New York City", "New York", "United States", "US"), ("Kyoto", "Kyoto", "Japan", "JP"),
          ("Cape Town", "Western Cape", "South Africa", "ZA"), ("Ushuaia", "Tierra del Fuego", "Argentina", "AR")]
TRIPS = ("holiday", "weekend", "birthday", "hike", "wedding", "concert", "beach", "christmas", "garden", "school")
TAGS = ("family", "favourites", "sunset", "food", "architecture", "dog", "snow", "portrait", "kids", "travel")
PEOPLE = ("Anna", "Bruno", "Carla", "Diogo", "Eva", "Filipa", "Gonçalo", "Helena", "Inês", "João")
PAGE = 100


def generate(db_path: Path, files: int, seed: int = 7) -> None:
    """Rows straight into the index: files, tags, persons, faces and insights."""
    rng = random.Random(seed)
    conn = connect_sync(db_path)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO libraries (id, name, root, created_at) VALUES (1, 'main', '/photos', 'x')")
    rows = []
    for i in range(1, files + 1):
        day = 1 + (i * 3650) // files                      # ten years, in id order like a real import
        taken = f"{2015 + day // 365:04d}-{1 + (day % 365) // 31:02d}-{1 + (day % 31) % 28:02d}T" \
                f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
        trip = TRIPS[(i // 400) % len(TRIPS)]
        place = PLACES[(i // 1200) % len(PLACES)] if rng.random() < 0.7 else None
        folder = f"{taken[:4]}/{taken[:10]} {trip}" + (f" {place[0]}" if place and rng.random() < 0.3 else "")
        cam = (i // 500) % len(CAMERAS)
        stem = ("IMG_", "DSC_", "_DSC", "DSCF", "PXL_")[cam]
        name = f"{stem}{i % 10000:04d}.JPG" if cam != 4 else f"PXL_{taken[:10].replace('-', '')}_{i:06d}.jpg"
        kind = "video" if i % 40 == 0 else "raw" if i % 17 == 0 else "image"
        rows.append((i, f"{folder}/{name}", folder, kind, taken, CAMERAS[cam][0], CAMERAS[cam][1], LENSES[cam],
                     *(place or (None,) * 4), rng.uniform(-60, 70) if place else None,
                     rng.uniform(-180, 180) if place else None, f"h{i:08x}"))
        if len(rows) == 50_000:
            _insert_files(conn, rows)
            rows = []
    _insert_files(conn, rows)
    for t, name in enumerate(TAGS, 1):
        conn.execute("INSERT INTO tags (id, name, key, created_at) VALUES (?, ?, ?, 'x')", (t, name, name))
    conn.executemany("INSERT INTO content_tags (content_hash, tag_id, created_at) VALUES (?, ?, 'x')",
                     [(f"h{i:08x}", 1 + (i // 7) % len(TAGS)) for i in range(1, files + 1) if i % 10 == 3])
    for p, name in enumerate(PEOPLE, 1):
        conn.execute("INSERT INTO persons (id, name, created_at) VALUES (?, ?, 'x')", (p, name))
    faces = []
    for i in range(1, files + 1):
        if i % 7 in (1, 2):
            who = {1 + (i // 11) % len(PEOPLE), 1 + (i // 13) % len(PEOPLE)}
            faces += [(f"h{i:08x}", k, p) for k, p in enumerate(sorted(who))]
    conn.executemany("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, "
                     "bound_by, created_at) VALUES (?, ?, 0.1, 0.1, 0.2, 0.2, 1, zeroblob(512), 'bench', ?, "
                     "'manual', 'x')", faces)
    conn.executemany("INSERT INTO insights (content_hash, title, body, tools, backend, server, model, failovers, "
                     "timings, created_at) VALUES (?, ?, '', '[]', 'local', 'x', 'm', '[]', '{}', 'x')",
                     [(f"h{i:08x}", f"A quiet morning by the {rng.choice(('river', 'harbour', 'cathedral'))}")
                      for i in range(1, files + 1, 100)])
    conn.execute("COMMIT")
    conn.close()


def _insert_files(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO files (id, library_id, rel_path, dir, kind, size, mtime_ns, taken_at, make, model, lens, "
        "place_city, place_region, place_country, place_cc, gps_lat, gps_lon, content_hash, thumb_state, "
        "first_seen, last_seen) VALUES (?, 1, ?, ?, ?, 1000, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', 'x', 'x')",
        rows)


QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("common word", {"text": "canon"}),
    ("rare word", {"text": "ushuaia"}),
    ("prefix", {"text": "lis"}),
    ("common word, one year", {"text": "canon", "date_from": "2019-01-01", "date_to": "2019-12-31"}),
    ("two words, one month", {"text": "holiday lisboa", "date_from": "2019-03-01", "date_to": "2019-03-31"}),
    ("relevance", {"text": "sevilla andalucia", "sort": "relevance"}),
    ("person filter", {"text": "holiday", "persons": ["Anna"]}),
    ("two persons, one year", {"text": "", "persons": ["Anna", "Bruno"], "date_from": "2020-01-01",
                               "date_to": "2020-12-31"}),
    ("bounding box", {"text": "kyoto", "bbox": "0,0,50,100"}),
]


async def measure(db: Any, cfg: Any, queries: int) -> dict[str, tuple[float, float, int]]:
    out: dict[str, tuple[float, float, int]] = {}
    for name, kw in QUERIES:
        times = []
        found = 0
        for _ in range(queries):
            t0 = time.perf_counter()
            page = await core.search(db, cfg, core.SearchQuery(limit=PAGE, **kw))
            times.append((time.perf_counter() - t0) * 1000)
            found = len(page.items)
        times.sort()
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        out[name] = (statistics.median(times), p95, found)
    return out


async def run_backend(label: str, target: Any, cfg: Any, queries: int) -> dict[str, tuple[float, float, int]]:
    db = await connect(target)
    try:
        t0 = time.perf_counter()
        made = await core.refresh(db, batch=5000)
        if made:
            secs = time.perf_counter() - t0
            print(f"{label}: search index of {made} files made in {secs:.1f} s ({made / secs:.0f} files/s)",
                  flush=True)
        result = await measure(db, cfg, queries)
    finally:
        await db.close()
    print(f"\n{label}: {'query':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'items':>6s}")
    for name, (p50, p95, n) in result.items():
        print(f"{label}: {name:28s} {p50:8.1f} {p95:8.1f} {n:6d}")
    print(flush=True)
    return result


def main() -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=40, help="runs of each query")
    ap.add_argument("--postgres-url", default=None,
                    help="also measure PostgreSQL: an empty database, or `auto` for a throwaway cluster")
    args = ap.parse_args()
    print_header("search latency", args)
    verdicts = Verdicts()
    with work_dir(args, "search") as work:
        (work / "photos").mkdir(exist_ok=True)
        cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(work / "data"), "BASE_PATH": str(work / "photos")},
                          cwd=work)
        db_path = cfg.database_path
        if not db_path.exists():
            t0 = time.perf_counter()
            generate(db_path, args.files)
            print(f"generated {args.files} files in {time.perf_counter() - t0:.1f} s", flush=True)
        got = asyncio.run(run_backend("sqlite", cfg.database, cfg, args.queries))
        p95 = got["common word, one year"][1]
        verdicts.check("SQLite: one word with a date filter, p95", f"{p95:.1f} ms", "<= 50 ms", p95 <= 50)
        if args.postgres_url:
            run_postgres(args.postgres_url, work, db_path, args.queries, verdicts)
    return verdicts.summary()


def run_postgres(url: str, work: Path, db_path: Path, queries: int, verdicts: Verdicts) -> None:
    from imageapi.core.postgres.copy import copy_index

    cluster = None
    try:
        if url == "auto":  # a throwaway cluster (tests/pg.py)
            started = throwaway_postgres()
            if started is None:
                return
            cluster, url = started
        t0 = time.perf_counter()
        asyncio.run(copy_index(db_path, url, force=True))
        print(f"copied to PostgreSQL in {time.perf_counter() - t0:.1f} s", flush=True)
        pg_cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(work / "data"), "BASE_PATH": str(work / "photos"),
                                      "DATABASE_URL": url}, cwd=work)
        got = asyncio.run(run_backend("postgresql", pg_cfg.database, pg_cfg, queries))
        p95 = got["common word, one year"][1]
        verdicts.check("PostgreSQL: one word with a date filter, p95", f"{p95:.1f} ms", "<= 50 ms", p95 <= 50)
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
