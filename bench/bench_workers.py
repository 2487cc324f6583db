"""Figure: draining one backlog with 1, 2 and 4 `imageapi worker` processes sharing one database.

For each scenario and each number of workers: a fresh database (a throwaway PostgreSQL database,
or an SQLite file with --database sqlite), the workers started first and left idle (so their start
is not timed), then the backlog's rows inserted at once; the rate is taken from when a tenth of the
backlog is done (by then every worker has claimed) to when all of it is, from the database's counts
sampled every 20 ms. The workers are then stopped with SIGTERM.

Scenarios:
- faces, the stand-in Apollo (tests/apollo_standin.py, its own process) waiting 50 ms per photo:
  the drain is bound by the service's latency, so N workers should drain about N times as fast
  (target: 4 workers >= 3.5x one);
- faces, the stand-in answering at once: bound by this machine's cores (render, HTTP, database);
- thumbnails of 12 MP JPEGs: bound by decoding and resizing.

Each worker runs `--concurrency 1` (one pool process) and FACE_DETECT_CONCURRENCY=1, so "N workers"
is N hosts' worth of the smallest worker.

    .venv/bin/python -m bench.bench_workers [--database postgresql|sqlite] [--photos 400] [--thumbs 200]
        [--rounds 3] [--scenarios slow,fast,thumbs]     (about 6 minutes)

Rounds run 1, 2 and 4 workers in turn, and the median rate of each is reported (a shared machine).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

from bench.common import (
    REPO,
    Verdicts,
    base_parser,
    median,
    print_header,
    python,
    python_env,
    throwaway_postgres,
    work_dir,
)

TARGET_SCALING_4 = 3.5


def make_jpegs(root: Path, count: int, size: tuple[int, int], seed: int) -> list[Path]:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    base = Image.new("RGB", size, (90, 120, 150))
    for _ in range(24):
        x, y = rnd.randrange(size[0]), rnd.randrange(size[1])
        w, h = rnd.randrange(size[0] // 3 + 1), rnd.randrange(size[1] // 3 + 1)
        base.paste((rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)),
                   (x, y, min(size[0], x + w), min(size[1], y + h)))
    buf = io.BytesIO()
    base.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    out = []
    for i in range(count):
        p = root / f"IMG_{i:05d}.jpg"
        # Each file its own content (a JPEG comment after SOI): distinct hashes, the same decode.
        comment = b"bench %d" % i
        p.write_bytes(data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:])
        out.append(p)
    return out


class Db:
    """The shared database of one run."""

    def __init__(self, kind: str, path: Path, server: str | None) -> None:
        self.kind, self.path, self.server = kind, path, server
        self.url: str | None = None
        self.name: str | None = None

    def create(self) -> None:
        if self.kind == "postgresql":
            from tests import pg

            assert self.server is not None
            self.name = asyncio.run(pg.create_database(self.server))
            self.url = pg.with_database(self.server, self.name)

    def drop(self) -> None:
        if self.name is not None:
            from tests import pg

            assert self.server is not None
            asyncio.run(pg.drop_database(self.server, self.name))
            self.name = self.url = None
        elif self.path.exists():
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "DATABASE_URL": self.url or str(self.path)}

    async def _conn(self):  # type: ignore[no-untyped-def]
        from imageapi.core.db import connect
        from imageapi.core.postgres.url import parse_postgres_url

        return await connect(parse_postgres_url(self.url) if self.url else self.path)

    def migrate(self) -> None:
        async def go() -> None:
            db = await self._conn()
            await db.close()
        asyncio.run(go())

    def insert(self, root: Path, files: list[Path], *, hashed: bool) -> None:
        from imageapi.core.database import transaction
        from imageapi.core.db import utcnow
        from imageapi.core.hashing import hash_file

        rows = []
        now = utcnow()
        for p in files:
            st = p.stat()
            rows.append((p.name, st.st_size, st.st_mtime_ns, hash_file(p) if hashed else None, now, now))

        async def go() -> None:
            db = await self._conn()
            try:
                async with transaction(db):
                    async with db.execute("INSERT INTO libraries (name, root, created_at) VALUES ('main', ?, ?) "
                                          "RETURNING id", (str(root), now)) as cur:
                        row = await cur.fetchone()
                    await db.executemany(
                        "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, "
                        f"first_seen, last_seen) VALUES ({int(row[0])}, ?, '', 'image', ?, ?, ?, ?, ?)", rows)
            finally:
                await db.close()
        asyncio.run(go())

    def count(self, sql: str) -> int:
        async def go() -> int:
            if self.url:
                import asyncpg

                conn = await asyncpg.connect(self.url)
                try:
                    return int(await conn.fetchval(sql))
                finally:
                    await conn.close()
            import sqlite3

            c = sqlite3.connect(self.path, timeout=30)
            try:
                return int(c.execute(sql).fetchone()[0])
            finally:
                c.close()
        return asyncio.run(go())


def start_standin(env: dict[str, str], delay: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([python(), "-m", "tests.apollo_standin", "--delay", str(delay)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["url"]


def drain_rate(db: Db, env: dict[str, str], workers: int, kinds: str, root: Path, files: list[Path],
               done_sql: str) -> tuple[float, float]:
    """(items/s from a tenth done to all done, seconds from the insert to all done)."""
    db.create()
    db.migrate()
    env = db.env(env)
    procs = [subprocess.Popen([python(), "-m", "imageapi", "worker", "--kinds", kinds, "--concurrency", "1",
                               "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    try:
        time.sleep(3.0)  # every worker started and idle
        n = len(files)
        db.insert(root, files, hashed=True)
        t0 = time.perf_counter()
        t_tenth = None
        done_at_tenth = 0
        while True:
            done = db.count(done_sql)
            now = time.perf_counter()
            if t_tenth is None and done >= n / 10:
                t_tenth, done_at_tenth = now, done
            if done >= n:
                break
            if now - t0 > 600:
                raise RuntimeError(f"not drained after 600 s ({done} of {n})")
            time.sleep(0.02)
        assert t_tenth is not None
        return (n - done_at_tenth) / max(now - t_tenth, 1e-6), now - t0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.communicate(timeout=60)
        db.drop()


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--photos", type=int, default=400, help="photos in the face scenarios")
    parser.add_argument("--thumbs", type=int, default=200, help="12 MP photos in the thumbnail scenario")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--scenarios", default="slow,fast,thumbs",
                        help="slow: Apollo 50 ms per photo; fast: Apollo at once; thumbs: 12 MP thumbnails")
    args = parser.parse_args()
    print_header("imageapi worker: drain rate with 1, 2 and 4 workers", args)
    counts = [int(x) for x in args.workers.split(",")]
    verdicts = Verdicts()
    cluster = None
    with work_dir(args, "workers") as work:
        server = None
        if args.database == "postgresql":
            started = throwaway_postgres(database=False)
            if started is None:
                return 2
            cluster, server = started
        try:
            db = Db(args.database, work / "data" / "imageapi.db", server)
            base_env = python_env(work / "data")
            base_env.update({"FACE_DETECT_CONCURRENCY": "1", "WORKER_LEASE_SECONDS": "30"})
            small = make_jpegs(work / "small", args.photos, (320, 240), 1)
            large = make_jpegs(work / "large", args.thumbs, (4000, 3000), 2)
            rounds: dict[str, dict[int, list[float]]] = {}
            scenarios = args.scenarios.split(",")
            for key, name, delay in (("slow", "faces, Apollo 50 ms per photo", 0.05),
                                     ("fast", "faces, Apollo at once", 0.0)):
                if key not in scenarios:
                    continue
                standin, url = start_standin(base_env, delay)
                try:
                    env = {**base_env, "APOLLO_FACE_API_BASE_URL": url}
                    for r in range(args.rounds):
                        for k in counts:
                            rate, wall = drain_rate(db, env, k, "faces", work / "small", small,
                                                    "SELECT COUNT(*) FROM face_scans")
                            rounds.setdefault(name, {}).setdefault(k, []).append(rate)
                            print(f"round {r + 1}: {name}: {k} worker(s): {rate:.1f} photos/s "
                                  f"({wall:.1f} s for {len(small)})", flush=True)
                finally:
                    standin.terminate()
                    standin.wait(10)
            name = "thumbnails of 12 MP JPEGs"
            for r in range(args.rounds if "thumbs" in scenarios else 0):
                for k in counts:
                    rate, wall = drain_rate(db, base_env, k, "thumbs", work / "large", large,
                                            "SELECT COUNT(*) FROM files WHERE thumb_state = 'done'")
                    rounds.setdefault(name, {}).setdefault(k, []).append(rate)
                    print(f"round {r + 1}: {name}: {k} worker(s): {rate:.1f} photos/s "
                          f"({wall:.1f} s for {len(large)})", flush=True)
            results = {name: {k: median(v) for k, v in by_k.items()} for name, by_k in rounds.items()}
            print("\nmedians of the rounds:")
            for name, by_k in results.items():
                curve = ", ".join(f"{k}: {r:.1f}/s ({r / by_k[counts[0]]:.2f}x)" for k, r in by_k.items())
                print(f"{name}: {curve}")
            slow = results.get("faces, Apollo 50 ms per photo", {})
            if 1 in slow and 4 in slow:
                ratio = slow[4] / slow[1]
                verdicts.check("4 workers vs 1, Apollo 50 ms per photo", f"{ratio:.2f}x",
                               f">= {TARGET_SCALING_4}x", ratio >= TARGET_SCALING_4)
        finally:
            if cluster is not None:
                cluster.stop()
    return verdicts.summary()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
