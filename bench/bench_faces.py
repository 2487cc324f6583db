"""Figure: imageapi's own overhead per photo when draining the face backlog.

10,000 distinct photos (generated: a few base JPEGs, each file with its own JPEG comment, so every
hash differs) are indexed by inserting their rows straight into the database (kind, size, mtime
and the real blake3 hash, as a scan would; no thumbnails: they play no part in the drain), then
`imageapi faces drain` runs as a subprocess against a stand-in Apollo (tests/apollo_standin.py, in
its own process) that answers at once with 0-2 faces of 512-dimension embeddings. What is measured
is imageapi's side: reading and checking each file, rendering the upright JPEG in the worker pool,
the multipart request, parsing the answer and storing faces + scan mark in one transaction.

Printed: photos/s (wall clock of the drain, process start included), CPU seconds per photo of the
drain's process tree (the stand-in excluded), and the drain's RSS sampled along the way, to show
that memory stays flat however long the backlog.

    .venv/bin/python -m bench.bench_faces [--photos 10000] [--size 640x480] [--concurrency 8]
"""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import (
    REPO,
    Verdicts,
    base_parser,
    print_header,
    process_tree,
    python,
    python_env,
    system_busy_seconds,
    work_dir,
)

TARGET_PHOTOS_PER_S = 100.0   # well above what one GPU Apollo detects per second
TARGET_RSS_GROWTH_MIB = 30.0  # main process RSS, last tenth vs second tenth of the run


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def make_photos(root: Path, count: int, size: tuple[int, int]) -> list[Path]:
    from bench.synth import photo, with_comment

    bases = [photo(size[0], size[1], seed, quality=85) for seed in range(4)]
    out = []
    for i in range(count):
        dest = root / f"{i // 1000:02d}" / f"IMG_{i:06d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(with_comment(bases[i % len(bases)], b"imageapi faces bench %06d" % i))
        out.append(dest)
    return out


def index_rows(db_path: Path, root: Path, files: list[Path]) -> None:
    """Rows as a scan writes them (kind, size, mtime, blake3), without walking or thumbnailing."""
    from imageapi.core.db import connect_sync, utcnow
    from imageapi.core.hashing import hash_file

    conn = connect_sync(db_path)
    now = utcnow()
    conn.execute("BEGIN")
    cur = conn.execute("INSERT INTO libraries (name, root, created_at) VALUES ('main', ?, ?)", (str(root), now))
    lib_id = cur.lastrowid
    rows = []
    for p in files:
        st = p.stat()
        rel = p.relative_to(root).as_posix()
        rows.append((lib_id, rel, rel.rpartition("/")[0], "image", st.st_size, st.st_mtime_ns, hash_file(p), now, now))
    conn.executemany(
        "INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, content_hash, first_seen, last_seen) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()


class Sampler:
    """RSS of the drain's main process and of its whole tree, with the photos stored so far."""

    def __init__(self, pid: int, db_path: Path, interval: float = 0.5) -> None:
        self.pid, self.db_path, self.interval = pid, db_path, interval
        self.samples: list[tuple[float, int, float, float]] = []  # t, scanned, main MiB, tree MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.perf_counter()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _scanned(self) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM face_scans").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            main = _rss_kib(self.pid)
            if not main:
                continue
            tree = sum(_rss_kib(p) for p in process_tree(self.pid))
            self.samples.append((time.perf_counter() - self._t0, self._scanned(), main / 1024, tree / 1024))


def start_standin(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([python(), "-m", "tests.apollo_standin", "--dim", "512"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)["url"]


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--size", default="640x480", help="pixel size of the generated photos")
    parser.add_argument("--concurrency", type=int, default=8, help="FACE_DETECT_CONCURRENCY")
    parser.add_argument("--per-tick", type=int, default=64, help="FACE_BACKLOG_MAX_PER_TICK")
    args = parser.parse_args()
    print_header("bench_faces: draining the face backlog against a stand-in Apollo that answers at once", args)
    width, height = (int(x) for x in args.size.lower().split("x"))
    verdicts = Verdicts()
    with work_dir(args, "faces") as work:
        root, data = work / "photos", work / "data"
        t = time.perf_counter()
        files = make_photos(root, args.photos, (width, height))
        print(f"generated {len(files)} distinct {width}x{height} JPEGs in {time.perf_counter() - t:.1f} s")
        data.mkdir(parents=True, exist_ok=True)
        db_path = data / "imageapi.db"
        if db_path.exists():
            db_path.unlink()
        t = time.perf_counter()
        index_rows(db_path, root, files)
        print(f"indexed {len(files)} rows (inserted, hashed; no scan) in {time.perf_counter() - t:.1f} s")

        env = python_env(data)
        standin, url = start_standin(env)
        try:
            env.update({"APOLLO_FACE_API_BASE_URL": url, "FACE_DETECT_CONCURRENCY": str(args.concurrency),
                        "FACE_BACKLOG_MAX_PER_TICK": str(args.per_tick), "LOG_LEVEL": "warn"})
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            busy0 = system_busy_seconds()
            t = time.perf_counter()
            drain = subprocess.Popen([python(), "-m", "imageapi", "faces", "drain", "--json"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            with Sampler(drain.pid, db_path) as sampler:
                out, err = drain.communicate()
            wall = time.perf_counter() - t
            busy = system_busy_seconds() - busy0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            standin.terminate()
            standin.wait(10)
        waited = resource.getrusage(resource.RUSAGE_CHILDREN)
        standin_cpu = (waited.ru_utime - after.ru_utime) + (waited.ru_stime - after.ru_stime)
        if drain.returncode != 0:
            print(f"drain failed ({drain.returncode}): {err.strip()}")
            return 2
        summary = json.loads(out)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(f"drain: {json.dumps(summary)}")
        print()
        print("   time s   photos stored   main RSS MiB   tree RSS MiB")
        step = max(1, len(sampler.samples) // 12)
        for ts, scanned, main_mib, tree_mib in sampler.samples[::step]:
            print(f"   {ts:6.1f}   {scanned:13d}   {main_mib:12.1f}   {tree_mib:12.1f}")
        print()
        rate = summary["detected"] / wall if wall else 0.0
        print(f"photos/s: {rate:.1f} ({summary['detected']} photos in {wall:.1f} s, process start included)")
        print(f"CPU of the drain's processes: {cpu:.1f} s, {1000 * cpu / max(1, summary['detected']):.2f} ms per photo "
              f"(on {os.cpu_count()} cores; the stand-in's CPU is not counted)")
        others = max(0.0, busy - cpu - standin_cpu)
        print(f"CPU of the stand-in Apollo (on the same cores): {standin_cpu:.1f} s; the rest of the machine "
              f"used {others / wall:.2f} cores meanwhile (other people's jobs: the wall-clock rate is noisy)")
        samples = sampler.samples
        if len(samples) >= 10:
            tenth = len(samples) // 10
            early = max(s[2] for s in samples[tenth:2 * tenth])
            late = max(s[2] for s in samples[-tenth:])
            peak_tree = max(s[3] for s in samples)
            print(f"main RSS: {early:.1f} MiB in the second tenth of the run, {late:.1f} MiB in the last; "
                  f"tree peak {peak_tree:.1f} MiB")
            verdicts.check("memory flat", f"{late - early:+.1f} MiB", f"<= +{TARGET_RSS_GROWTH_MIB:.0f} MiB",
                           late - early <= TARGET_RSS_GROWTH_MIB)
        verdicts.check("all photos scanned", f"{summary['detected']}/{args.photos}", "all",
                       summary["detected"] == args.photos and summary["remaining"] == 0)
        verdicts.check("throughput", f"{rate:.1f} photos/s", f">= {TARGET_PHOTOS_PER_S:.0f}",
                       rate >= TARGET_PHOTOS_PER_S)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
