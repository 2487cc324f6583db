"""Figures: face clustering (imageapi.core.faces.cluster).

1. Nearest neighbours of one face among 100k and 1M stored 128-d embeddings (random unit vectors
   plus planted clusters of 20 faces at cosine distance ~0.03 of their centre): the latency of
   `neighbours` (one matrix product over the per-model matrix in blocks, the hits over the
   threshold, argpartition), median of --queries queries. Memory: 512 bytes a face (float32).
2. A full recluster (`cluster_all`, what `imageapi faces cluster --full` and the nightly pass run)
   of 100k faces in an SQLite index: reading the matrix, the all-pairs blocks, DBSCAN, writing the
   bindings; the wall clock, end to end.
3. Quality on the corpus portraits (../shared/corpus/faces; labels from the file names: obama*
   is Obama, biden.jpg is Biden, obama_and_biden*.jpg hold both, told apart by position), faces
   found by the embedded detector (core/faces/embedded.py): the distances of same-person and
   different-person pairs, and cluster purity and completeness at the default settings.

    .venv/bin/python -m bench.bench_cluster [--sizes 100000,1000000] [--recluster 100000] [--queries 50]
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import base_parser, print_header
from imageapi.core.faces.cluster import (
    DLIB_MAX_DISTANCE,
    FaceIndex,
    assign,
    cluster_all,
    dbscan,
    edges,
    neighbours,
)

DIM = 128
PLANTED = 20         # faces per planted cluster
SPREAD = 0.03        # their cosine distance from the centre


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def embeddings(n: int, seed: int = 1) -> np.ndarray:
    """n unit vectors: half random, half in planted clusters of PLANTED."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), dtype=np.float32)
    half = n // 2
    for start in range(0, half, 100_000):
        stop = min(half, start + 100_000)
        out[start:stop] = unit(rng.standard_normal((stop - start, DIM), dtype=np.float32))
    clusters = (n - half + PLANTED - 1) // PLANTED
    centres = unit(rng.standard_normal((clusters, DIM), dtype=np.float32))
    for start in range(half, n, 100_000):
        stop = min(n, start + 100_000)
        centre = centres[(np.arange(start, stop) - half) // PLANTED]
        noise = unit(rng.standard_normal((stop - start, DIM), dtype=np.float32))
        noise = unit(noise - (noise * centre).sum(axis=1, keepdims=True) * centre)  # orthogonal
        angle = np.arccos(1 - SPREAD)
        out[start:stop] = unit(np.cos(angle) * centre + np.sin(angle) * noise)
    return out


def nn_latency(n: int, queries: int) -> None:
    made = time.perf_counter()
    vectors = embeddings(n)
    made = time.perf_counter() - made
    rng = np.random.default_rng(7)
    picks = rng.integers(0, n, queries)
    times, hits = [], []
    for q in picks:
        started = time.perf_counter()
        found = neighbours(vectors, vectors[q:q + 1], DLIB_MAX_DISTANCE)
        times.append(time.perf_counter() - started)
        hits.append(len(found[0][0]))
    p90 = sorted(times)[int(len(times) * 0.9)]
    print(f"nearest neighbours among {n:>9,} faces: median {statistics.median(times) * 1000:7.1f} ms, "
          f"p90 {p90 * 1000:7.1f} ms per face (matrix {vectors.nbytes / 2**20:.0f} MiB, "
          f"made in {made:.1f} s; {statistics.mean(hits):.1f} hits within {DLIB_MAX_DISTANCE})", flush=True)


async def recluster(n: int) -> None:
    from imageapi.core.database import transaction
    from imageapi.core.db import connect, utcnow
    from imageapi.core.faces.settings import FaceSettings

    vectors = embeddings(n, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        db = await connect(Path(tmp) / "imageapi.db")
        try:
            now = utcnow()
            rows = [(f"c{i}", 0, 0.1, 0.1, 0.2, 0.2, 0.9, vectors[i].astype("<f4").tobytes(), "dlib-hog-resnet128", now)
                    for i in range(n)]
            async with transaction(db):
                await db.executemany("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, "
                                     "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            started = time.perf_counter()
            report = await cluster_all(db, FaceSettings(base_url="http://127.0.0.1:9"))
            took = time.perf_counter() - started
            print(f"full recluster of {n:,} faces (SQLite, end to end): {took:.1f} s; {report.bound:,} bound to "
                  f"{report.new_persons:,} new persons (planted: {(n - n // 2) // PLANTED:,} clusters)", flush=True)
            again = time.perf_counter()
            second = await cluster_all(db, FaceSettings(base_url="http://127.0.0.1:9"))
            print(f"  again (nothing to change): {time.perf_counter() - again:.1f} s, {second.bound} bound", flush=True)
        finally:
            await db.close()


def portraits(corpus: Path) -> None:
    from PIL import Image

    from imageapi.core.faces.embedded import detect_jpeg

    labels: list[str] = []
    vecs: list[list[float]] = []
    contents: list[int] = []
    for n, path in enumerate(sorted((corpus / "faces").glob("*.jpg"))):
        with Image.open(path) as im:
            pic = im.convert("RGB")
        pic.thumbnail((1600, 1600))
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=90)
        for f in detect_jpeg(buf.getvalue()).faces:
            x = f.bbox[0]
            if path.name == "biden.jpg" or (path.name == "obama_and_biden.jpg" and 0.3 < x < 0.45) or \
                    (path.name == "obama_and_biden_side_by_side.jpg" and x > 0.5):
                who = "biden"
            elif path.name == "obama_and_biden.jpg" and x > 0.7:
                who = "other"
            else:
                who = "obama"
            labels.append(who)
            vecs.append(list(f.embedding))
            contents.append(n)
    v = unit(np.asarray(vecs, dtype=np.float32))
    d = 1 - v @ v.T
    same = [d[i, j] for i in range(len(v)) for j in range(i + 1, len(v)) if labels[i] == labels[j]]
    diff = [d[i, j] for i in range(len(v)) for j in range(i + 1, len(v)) if labels[i] != labels[j]]
    print(f"corpus portraits: {len(v)} faces ({', '.join(f'{labels.count(w)} {w}' for w in sorted(set(labels)))})")
    print(f"  cosine distance, same person: max {max(same):.3f} ({len(same)} pairs); different people: "
          f"min {min(diff):.3f} ({len(diff)} pairs); threshold {DLIB_MAX_DISTANCE}: "
          f"{sum(x <= DLIB_MAX_DISTANCE for x in same)}/{len(same)} same below, "
          f"{sum(x > DLIB_MAX_DISTANCE for x in diff)}/{len(diff)} different above")
    index = FaceIndex("dlib", np.arange(1, len(v) + 1), np.asarray(contents), np.zeros(len(v), dtype=np.int64),
                      np.zeros(len(v), dtype=bool), v)
    i, j, s = edges(index, DLIB_MAX_DISTANCE)
    found, degree = dbscan(len(v), i, j, s, 3)
    want = assign(index, found, degree, set(), set())
    clusters = {int(p) for p in want if p}
    purity = sum(max(sum(1 for k in range(len(v)) if want[k] == c and labels[k] == w) for w in set(labels))
                 for c in clusters) / max(1, sum(1 for p in want if p))
    completeness = {w: max([sum(1 for k in range(len(v)) if want[k] == c and labels[k] == w) for c in clusters] + [0])
                    / labels.count(w) for w in sorted(set(labels))}
    print(f"  clusters: {len(clusters)}; purity {purity:.2f} (of {sum(1 for p in want if p)} clustered faces); "
          f"completeness " + ", ".join(f"{w} {c:.2f}" for w, c in completeness.items())
          + f"; unclustered: {[labels[k] for k in range(len(v)) if not want[k]]}")


def main() -> None:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--sizes", default="100000,1000000", help="stored faces for the NN latency")
    parser.add_argument("--recluster", type=int, default=100_000, help="faces of the full recluster (0: skip)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus")
    args = parser.parse_args()
    print_header("face clustering", args)
    for n in (int(x) for x in args.sizes.split(",") if x):
        nn_latency(n, args.queries)
    if args.recluster:
        asyncio.run(recluster(args.recluster))
    if (args.corpus / "faces").is_dir():
        portraits(args.corpus)


if __name__ == "__main__":
    main()
