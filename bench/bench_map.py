"""GET /map over 1,000,000 files with GPS: p50 and p95 at world, country and city zoom.

    python -m bench.bench_map [--files 1000000] [--requests 200] [--rounds 3] [--postgres]
                              [--work-dir DIR] [--keep]

The index is synthetic rows (no media: /map reads only positions and, for what it names, paths),
written straight into a database made by `imageapi library add`: photos around 300 places (a
normal spread of a few km to tens of km; a fifth of them spread over a country), as a real
library's are. `imageapi serve --no-watch` (one process) answers sequential requests from this
client for a 1600x1000 view at a random place each time (in a dense area for country and city):
the first request, which reads the positions into memory, is reported on its own. With
--postgres the index is copied (`imageapi db copy`) into a throwaway cluster of Debian's PostgreSQL
(tests/pg.py) and measured the same way, the two servers alternately, --rounds times.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_backends import pct, stop  # noqa: E402
from bench.bench_web import PASSWORD, USER, cli, env_for, serve  # noqa: E402
from bench.common import base_parser, median, print_header, throwaway_postgres, work_dir  # noqa: E402

LIB = "geo"
PLACES = 300
VIEW = (1600, 1000)  # pixels
VIEWS = {"world": 2, "country": 7, "city": 13}
TARGET_MS = 100.0


def places(rng: random.Random) -> list[tuple[float, float, float]]:
    """(lat, lon, weight) of the places photos were taken: a few heavy ones (home), many light."""
    return [(rng.uniform(-50, 65), rng.uniform(-180, 180), rng.paretovariate(1.2)) for _ in range(PLACES)]


def build(work: Path, files: int) -> list[tuple[float, float]]:
    """The index (reused when already made with the same size). Returns the places, heaviest first."""
    env = env_for(work)
    rng = random.Random(7)
    spots = places(rng)
    marker = work / f"built-map-{files}"
    if not marker.exists():
        print(f"building an index of {files} files with GPS ...", flush=True)
        (work / "library").mkdir(exist_ok=True)
        cli(["library", "add", LIB, str(work / "library")], env)
        cli(["user", "add", USER, "--password-stdin"], env, PASSWORD + "\n")
        weights = [w for _, _, w in spots]
        chosen = rng.choices(range(PLACES), weights=weights, k=files)
        rows = []
        for i, k in enumerate(chosen):
            lat, lon, _ = spots[k]
            spread = 2.0 if i % 5 == 0 else 0.05  # a trip across the country, or around the town
            la = max(-85.0, min(85.0, rng.gauss(lat, spread)))
            lo = (rng.gauss(lon, spread) + 180.0) % 360.0 - 180.0
            rel = f"{k:03d}/{i // 1000:04d}/IMG_{i:07d}.jpg"
            rows.append((rel, rel.rpartition("/")[0], i, la, lo))
        with sqlite3.connect(work / "data" / "imageapi.db") as db:
            lib_id = db.execute("SELECT id FROM libraries WHERE name = ?", (LIB,)).fetchone()[0]
            db.executemany(
                "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, gps_lat, gps_lon, width, height, "
                f"thumb_state, first_seen, last_seen) VALUES ({lib_id}, ?, ?, 'image', 3000000, ?, ?, ?, 4000, 3000, "
                "'done', 'now', 'now')", rows)
        marker.touch()
    return [(la, lo) for la, lo, _ in sorted(spots, key=lambda s: -s[2])]


def view(lat: float, lon: float, zoom: int) -> str:
    """The bbox of a VIEW-sized map centred on (lat, lon) at `zoom` (Web Mercator)."""
    world = 256 * 2 ** zoom
    x = (lon + 180) / 360 * world
    rad = math.radians(lat)
    y = (1 - math.log(math.tan(rad) + 1 / math.cos(rad)) / math.pi) / 2 * world

    def lat_of(py: float) -> float:
        py = min(max(py, 0), world)
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * py / world))))

    half_w, half_h = VIEW[0] / 2, VIEW[1] / 2
    if 2 * half_w >= world:
        west, east = -180.0, 180.0
    else:
        west = ((x - half_w) / world * 360) % 360 - 180
        east = ((x + half_w) / world * 360) % 360 - 180
    return f"{lat_of(y + half_h):.6f},{west:.6f},{lat_of(y - half_h):.6f},{east:.6f}"


async def measure(base: str, token: str, spots: list[tuple[float, float]], requests: int) -> dict[str, float]:
    import aiohttp

    rng = random.Random(11)
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def get(bbox: str, zoom: int) -> tuple[float, Any]:
            t0 = time.perf_counter()
            async with session.get(f"{base}/map", params={"bbox": bbox, "zoom": str(zoom)}) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET /map: HTTP {resp.status}: {body[:200]!r}")
            return time.perf_counter() - t0, json.loads(body)

        took, body = await get(view(20, 0, VIEWS["world"]), VIEWS["world"])
        out["first_request_s"] = took
        out["files_in_world_view"] = body["total"]
        for name, zoom in VIEWS.items():
            times: list[float] = []
            shown: list[int] = []
            for _ in range(requests):
                if name == "world":
                    lat, lon = rng.uniform(-40, 60), rng.uniform(-180, 180)
                else:  # somewhere busy: near one of the 20 heaviest places
                    lat, lon = rng.choice(spots[:20])
                    jitter = 1.0 if name == "country" else 0.02
                    lat, lon = lat + rng.uniform(-jitter, jitter), lon + rng.uniform(-jitter, jitter)
                took, body = await get(view(lat, lon, zoom), zoom)
                times.append(took)
                shown.append(len(body["clusters"]) + len(body["photos"]))
            out[f"{name}_p50_ms"] = 1000 * median(times)
            out[f"{name}_p95_ms"] = 1000 * pct(times, 0.95)
            out[f"{name}_markers"] = median([float(s) for s in shown])
    return out


def main() -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=200, help="sequential /map requests per view and round")
    ap.add_argument("--postgres", action="store_true", help="measure PostgreSQL too (a throwaway cluster)")
    args = ap.parse_args()
    print_header("GET /map at 1,000,000 files with GPS", args)
    with work_dir(args, "map") as work:
        spots = build(work, args.files)
        env = env_for(work)
        token = json.loads(cli(["token", "--user", USER, "--ttl", "1d", "--json"], env))["token"]
        backends: list[tuple[str, dict[str, str] | None]] = [("sqlite", None)]
        cluster = None
        try:
            if args.postgres:
                started = throwaway_postgres()
                if started is None:
                    return 2
                cluster, url = started
                t0 = time.perf_counter()
                cli(["db", "copy", "--to", url, "--force"], env)
                print(f"copied to PostgreSQL in {time.perf_counter() - t0:.1f} s", flush=True)
                backends.append(("postgresql", {"DATABASE_URL": url}))
            rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in backends}
            for r in range(args.rounds):
                for name, extra in backends:
                    proc, base = serve(work, extra)
                    try:
                        got = asyncio.run(measure(base, token, spots, args.requests))
                    finally:
                        stop(proc)
                    rounds[name].append(got)
                    print(f"round {r + 1} {name:10s} " + "  ".join(f"{k}={v:.1f}" for k, v in got.items()), flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
        print()
        worst = 0.0
        for name, got in rounds.items():
            print(f"{name}: medians of {len(got)} rounds")
            for key in got[0]:
                value = median([g[key] for g in got])
                if key.endswith("_p95_ms"):
                    worst = max(worst, value)
                print(f"   {key:22s} {value:10.1f}")
        verdict = "PASS" if worst <= TARGET_MS else "FAIL"
        print(f"[{verdict}] worst p95 {worst:.1f} ms (target {TARGET_MS:.0f} ms)")
        return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
