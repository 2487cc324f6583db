"""`imageapi serve` on PostgreSQL against the same on SQLite: the same index of 100,000 files.

Figures (issue 11; measured, not asserted by the test suite), per backend:
- GET /photos?library=big&recursive=true&limit=200: the first page, and pages deep in the
  library (following next_cursor 25 pages in): p50 and p95 over sequential requests;
- GET /image (thumbnails, 500 different ones) from 16 concurrent keep-alive clients: requests
  per second and p95;
and the ratio PostgreSQL / SQLite of each, taken within each round (the machine is shared): the
two servers are measured alternately, --rounds times, and the medians printed.

    python -m bench.bench_backends [--files 100000] [--rounds 3] [--requests 200] [--seconds 5]
                                   [--postgres-url postgresql://...] [--work-dir DIR] [--keep]

The index is bench_web's (synthetic rows, real thumbnails hard-linked; built in seconds), copied to
PostgreSQL with `imageapi db copy`. Without --postgres-url a throwaway cluster of Debian's
PostgreSQL (tests/pg.py: `apt-get install postgresql`) is started on 127.0.0.1 and removed at the
end. Both servers run with one process, on the same machine as this client.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_web import USER, build, cli, env_for, serve  # noqa: E402
from bench.common import base_parser, median, print_header, throwaway_postgres, work_dir  # noqa: E402

LIB = "big"
PAGE = 200
DEEP_PAGES = 25
CONCURRENCY = 16


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


async def measure(base: str, token: str, thumbs: list[str], requests: int, seconds: float) -> dict[str, float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        async def get(path: str) -> tuple[float, Any]:
            t0 = time.perf_counter()
            async with session.get(base + path) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {path}: HTTP {resp.status}: {body[:200]!r}")
            return time.perf_counter() - t0, body

        first_path = f"/photos?library={LIB}&recursive=true&limit={PAGE}"
        await get(first_path)  # warm
        first = [(await get(first_path))[0] for _ in range(requests)]
        # A cursor DEEP_PAGES pages in, then the pages after it.
        cursor = None
        for _ in range(DEEP_PAGES):
            _, body = await get(first_path + (f"&cursor={cursor}" if cursor else ""))
            cursor = json.loads(body)["next_cursor"]
        deep: list[float] = []
        for _ in range(requests):
            took, body = await get(first_path + f"&cursor={cursor}")
            deep.append(took)
            cursor = json.loads(body)["next_cursor"] or cursor
        # Thumbnails: CONCURRENCY clients for `seconds`.
        latencies: list[float] = []
        end = time.perf_counter() + seconds

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < end:
                latencies.append((await get(thumbs[i % len(thumbs)]))[0])
                i += CONCURRENCY

        t0 = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(CONCURRENCY)))
        wall = time.perf_counter() - t0
    return {
        "photos_first_p50_ms": 1000 * statistics.median(first), "photos_first_p95_ms": 1000 * pct(first, 0.95),
        "photos_deep_p50_ms": 1000 * statistics.median(deep), "photos_deep_p95_ms": 1000 * pct(deep, 0.95),
        "thumbs_per_s": len(latencies) / wall, "thumbs_p95_ms": 1000 * pct(latencies, 0.95),
    }


def main() -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=200, help="sequential /photos requests per measure")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each thumbnail run")
    ap.add_argument("--postgres-url", default=None, help="a database to copy into (default: a throwaway cluster)")
    args = ap.parse_args()
    print_header("imageapi serve: PostgreSQL against SQLite", args)
    with work_dir(args, "backends") as work:
        return run(args, work)


def run(args: Any, work: Path) -> int:
    thumbs = build(work, args.files)
    cluster = None
    url = args.postgres_url
    try:
        if url is None:
            started = throwaway_postgres()
            if started is None:
                return 2
            cluster, url = started
        env = env_for(work)
        print("copying the index to PostgreSQL ...", flush=True)
        t0 = time.perf_counter()
        cli(["db", "copy", "--to", url, "--force"], env)
        print(f"  {time.perf_counter() - t0:.1f} s")
        token = json.loads(cli(["token", "--user", USER, "--ttl", "1d", "--json"], env))["token"]
        rounds: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
        for r in range(args.rounds):
            for name, db_url in (("sqlite", None), ("postgresql", url)):
                proc, base = serve(work, {"DATABASE_URL": db_url} if db_url else None)
                try:
                    got = asyncio.run(measure(base, token, thumbs, args.requests, args.seconds))
                finally:
                    stop(proc)
                rounds[name].append(got)
                print(f"round {r + 1} {name:10s} " + "  ".join(f"{k}={v:.1f}" for k, v in got.items()), flush=True)
        print()
        print(f"{'figure':22s} {'SQLite':>10s} {'PostgreSQL':>11s} {'PG/SQLite':>10s}")
        for key in rounds["sqlite"][0]:
            s = median([x[key] for x in rounds["sqlite"]])
            p = median([x[key] for x in rounds["postgresql"]])
            ratio = median([b[key] / a[key] for a, b in zip(rounds["sqlite"], rounds["postgresql"], strict=True)])
            print(f"{key:22s} {s:10.1f} {p:11.1f} {ratio:10.2f}")
        return 0
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
