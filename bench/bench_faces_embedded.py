"""Figures of the embedded face detector (dlib HOG + 5-point landmarks + 128-d ResNet embedding).

1. Photos and faces per second on one core for 12 MP camera JPEGs: each is a 4000x3000 synthetic
   camera frame (bench/synth.py) with corpus portraits pasted in, run through exactly what a worker
   process does (imageapi.core.faces.detectors.detect_batch: read, hash check, render the upright
   <=1600 px JPEG, HOG at that size, landmarks, embeddings), with the time split into render and
   detection.
2. What upsampling costs, and what it finds: the 1600 px picture of a 12 MP frame holding portraits
   of several sizes (the corpus's obama_small.jpg pasted at full and reduced size, so its face is
   about 43 px and 26 px at 1600 px) at FACE_UPSAMPLE 0, 1 and 2, with the faces found at the
   default FACE_MIN_SIZE_PX and with no minimum.
3. RSS of a worker process (the pool's own kind of process) before and after the models are loaded
   and one picture detected.

    PYTHONPATH=. python bench/bench_faces_embedded.py [--photos 6] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import io
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from bench.common import base_parser, print_header


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def frame_with_portraits(seed: int, portraits: list[tuple[Path, float]]) -> bytes:
    """A 12 MP camera-like JPEG with the portraits (path, scale) pasted at random places."""
    from bench.synth import photo

    rnd = random.Random(seed)
    frame = Image.open(io.BytesIO(photo(4000, 3000, seed, quality=90))).convert("RGB")
    x = 100
    for path, scale in portraits:
        with Image.open(path) as src:
            im = src.convert("RGB")
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.Resampling.LANCZOS)
        y = rnd.randrange(100, max(101, 3000 - im.height - 100))
        frame.paste(im, (x, y))
        x += im.width + 150
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=90)
    return out.getvalue()


def worker_rss(_: object) -> tuple[float, float, float]:
    """In a pool worker: RSS before loading the models, after, and after one detection."""
    from imageapi.core.faces import embedded

    before = _rss_mib()
    embedded._load()
    loaded = _rss_mib()
    im = Image.new("RGB", (1600, 1200), (120, 110, 100))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    embedded.detect_jpeg(buf.getvalue())
    return before, loaded, _rss_mib()


def main() -> None:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=6)
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("IMAGEAPI_CORPUS", "../shared/corpus")))
    args = ap.parse_args()
    print_header("embedded face detector", args)
    import dlib

    from imageapi.core.faces.backlog import prepare_for_detection
    from imageapi.core.faces.detectors import detect_batch
    from imageapi.core.faces.embedded import MODEL, detect_jpeg
    from imageapi.core.faces.settings import DEFAULT_MIN_SIZE_PX, DEFAULT_UPSAMPLE
    from imageapi.core.hashing import hash_file
    from imageapi.core.pool import WorkerPool

    print(f"   model {MODEL}, dlib {dlib.__version__}, "
          f"dlib AVX: {getattr(dlib, 'USE_AVX_INSTRUCTIONS', '?')}, default upsample {DEFAULT_UPSAMPLE}, "
          f"min face {DEFAULT_MIN_SIZE_PX} px\n", flush=True)
    faces_dir = args.corpus / "faces"
    singles = [faces_dir / n for n in ("obama.jpg", "obama2.jpg", "biden.jpg", "obama_1080p.jpg")]
    with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
        # 1. throughput on 12 MP frames, one process (= one core)
        paths = []
        for i in range(args.photos):
            chosen = [(singles[(i + k) % len(singles)], 1.5) for k in range(2)]
            p = Path(tmp) / f"frame{i}.jpg"
            p.write_bytes(frame_with_portraits(i, chosen))
            paths.append(p)
        items = [(str(p), "image", hash_file(str(p))) for p in paths]
        detect_batch(items[:1], upsample=DEFAULT_UPSAMPLE, min_size_px=DEFAULT_MIN_SIZE_PX, min_score=0.0)  # load
        for upsample in (0, 1):
            render_s, detect_s, faces = [], [], 0
            for item in items:
                t0 = time.perf_counter()
                prep = prepare_for_detection(*item)
                t1 = time.perf_counter()
                assert prep.jpeg is not None, prep.error
                det = detect_jpeg(prep.jpeg, upsample=upsample)
                t2 = time.perf_counter()
                render_s.append(t1 - t0)
                detect_s.append(t2 - t1)
                faces += len(det.faces)
            total = sum(render_s) + sum(detect_s)
            print(f"12 MP JPEG, upsample {upsample}: {len(items) / total:.2f} photos/s/core, "
                  f"{faces / total:.2f} faces/s/core ({faces} faces in {len(items)} photos); per photo: render "
                  f"{statistics.median(render_s) * 1000:.0f} ms, "
                  f"detect+embed {statistics.median(detect_s) * 1000:.0f} ms (median)", flush=True)

        # 2. upsampling: cost and small faces
        small = faces_dir / "obama_small.jpg"
        frame = Path(tmp) / "small_faces.jpg"
        frame.write_bytes(frame_with_portraits(99, [(faces_dir / "obama.jpg", 1.0), (small, 1.0), (small, 0.6)]))
        prep = prepare_for_detection(str(frame), "image", hash_file(str(frame)))
        assert prep.jpeg is not None
        print(f"\nsmall faces: a 4000x3000 frame with obama.jpg, obama_small.jpg at 1.0 and 0.6 "
              f"(rendered {prep.width}x{prep.height})")
        for upsample in (0, 1, 2):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                det = detect_jpeg(prep.jpeg, upsample=upsample, min_face_px=1)
                times.append(time.perf_counter() - t0)
            widths = sorted(round(f.bbox[2] * prep.width) for f in det.faces)
            kept = sum(1 for w in widths if w >= DEFAULT_MIN_SIZE_PX)
            print(f"  upsample {upsample}: {statistics.median(times) * 1000:.0f} ms, faces found {len(widths)} "
                  f"(widths px {widths}), {kept} at FACE_MIN_SIZE_PX={DEFAULT_MIN_SIZE_PX}", flush=True)

    # 3. RSS of a worker process
    pool = WorkerPool(1)
    try:
        import asyncio

        before, loaded, after = asyncio.run(pool.run(worker_rss, None))
    finally:
        pool.close()
    print(f"\nworker process RSS: {before:.0f} MiB before the models, {loaded:.0f} MiB loaded, "
          f"{after:.0f} MiB after one 1600x1200 detection")


if __name__ == "__main__":
    main()
