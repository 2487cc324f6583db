"""The timeline's two requests over a generated library, plain, with stacks and collapsed.

A library of --files rows (default 1,000,000, one library, as most installs have) is written
straight into a new SQLite index: ten years of dated files in id order, 2% of them byte-for-byte
copies of an earlier file (the same content hash: exact duplicates, so stacks). Then, in process
(what GET /timeline/buckets and GET /timeline/items run), --queries times each:

- the buckets (counts per day), plain and collapsed (?collapse=true: the copies under a stack's
  top left out), the collapsed one first with its stacking worked out, then from its cache;
- a page of 5,000 items of a month (the web client's page), plain, with each item's stack
  (?stack=true) and collapsed;
- the collapsed buckets once the stacking's cache must look at the files again (every 5 s).

The plain requests are the reference: the figures are the ratios to them in the same run.

    python -m bench.bench_timeline [--files 1000000] [--queries 20] [--work-dir DIR] [--keep]
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import base_parser, print_header, work_dir  # noqa: E402
from imageapi.core import duplicates, timeline  # noqa: E402
from imageapi.core.config import load_config  # noqa: E402
from imageapi.core.db import connect, connect_sync  # noqa: E402
from imageapi.core.libraries import list_libraries  # noqa: E402

COPIES = 0.02   # share of files that are a copy of an earlier one
PAGE = 5000


def generate(db_path: Path, files: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    conn = connect_sync(db_path)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO libraries (id, name, root, created_at) VALUES (1, 'main', '/photos', 'x')")
    rows: list[tuple[Any, ...]] = []
    for i in range(1, files + 1):
        day = (i * 3650) // files
        taken = f"{2015 + day // 365:04d}-{1 + (day % 365) // 31:02d}-{1 + (day % 31) % 28:02d}T" \
                f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00"
        content = f"h{rng.randrange(1, i):08x}" if i > 1 and rng.random() < COPIES else f"h{i:08x}"
        rows.append((i, f"{taken[:7]}/IMG_{i:07d}.JPG", taken[:7], taken, content, 1000 + i % 5, i))
        if len(rows) == 50_000:
            _insert(conn, rows)
            rows = []
    _insert(conn, rows)
    conn.execute("COMMIT")
    conn.close()


def _insert(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO files (id, library_id, rel_path, dir, kind, size, mtime_ns, taken_at, content_hash, width, "
        "height, thumb_state, first_seen, last_seen) VALUES (?, 1, ?, ?, 'image', 1000, ?, ?, ?, ?, 3000, 'done', "
        "'x', 'x')", [(i, rel, d, i, taken, content, w) for i, rel, d, taken, content, w, _ in rows])


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(round(0.95 * (len(out) - 1))))]


async def rechecked(request: Awaitable[Any]) -> Any:
    """The request as it runs once the stacking's 5 s without a look are over: the files and the
    perceptual hashes are counted again to see whether it still holds."""
    kept = duplicates.COLLAPSE_FRESH_SEC
    duplicates.COLLAPSE_FRESH_SEC = 0.0
    try:
        return await request
    finally:
        duplicates.COLLAPSE_FRESH_SEC = kept


async def measure(db_path: Path, queries: int) -> None:
    db = await connect(db_path)
    try:
        libs = await list_libraries(db)
        months = await timeline.buckets(db, libs)
        month = max(months, key=lambda m: m["count"])["month"]
        t = time.perf_counter()
        left_out = await duplicates.collapsed(db, [lib.id for lib in libs])
        print(f"stacking worked out in {1000 * (time.perf_counter() - t):.0f} ms: "
              f"{len(left_out.hidden)} copies left out", flush=True)
        print(f"{'request':42} {'p50 ms':>8} {'p95 ms':>8} {'ratio':>6}")
        ref: dict[str, float] = {}
        for name, fn in (
            ("buckets", lambda: timeline.buckets(db, libs)),
            ("buckets, collapsed", lambda: timeline.buckets(db, libs, True)),
            (f"items of {month} ({PAGE})", lambda: timeline.month_items(db, libs, month, 0, PAGE)),
            ("items with stacks", lambda: timeline.month_items(db, libs, month, 0, PAGE, True)),
            ("items, collapsed", lambda: timeline.month_items(db, libs, month, 0, PAGE, True, True)),
            ("buckets, collapsed, files looked at again", lambda: rechecked(timeline.buckets(db, libs, True))),
        ):
            p50, p95 = await timed(fn, queries)
            base = ref.setdefault(name.split(",")[0].split(" ")[0], p50)
            print(f"{name:42} {p50:8.1f} {p95:8.1f} {p50 / base:6.2f}", flush=True)
    finally:
        await db.close()


def main() -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=20, help="runs of each request")
    args = ap.parse_args()
    print_header("timeline requests", args)
    with work_dir(args, "timeline") as work:
        cfg = load_config(environ={"IMAGEAPI_DATA_DIR": str(work / "data"), "BASE_PATH": str(work)}, cwd=work)
        if not cfg.database_path.exists():
            t0 = time.perf_counter()
            generate(cfg.database_path, args.files)
            print(f"generated {args.files} files in {time.perf_counter() - t0:.1f} s", flush=True)
        asyncio.run(measure(cfg.database_path, args.queries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
