"""Quality of the embedded face detector on labeled portraits (not a timed test; anyone can run it).

    PYTHONPATH=. python bench/faces_quality.py [--corpus ../shared/corpus]

Every portrait of the corpus (corpus/faces) goes through the same path as the backlog: the upright
<=1600 px JPEG (prepare_for_detection), then imageapi.core.faces.embedded.detect_jpeg with the
default settings. Labels come from the file names: obama*.jpg is Barack Obama, biden.jpg is Joe
Biden; the faces of the two-person photos (obama_and_biden*.jpg) get the label of the nearest
single-person reference when it is nearer than 0.6, and are left out otherwise (a third person).

For every pair of labeled faces it prints the same-person and different-person distances, both as
dlib's Euclidean distance on the raw 128-d descriptors (dlib's published threshold: 0.6) and as
the cosine similarity the code uses (autobind compares a face with the mean direction of a
person's faces: FACE_AUTOBIND_MIN_COS), and the threshold chosen for each.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import sys
from pathlib import Path

from imageapi.core.faces.backlog import prepare_for_detection
from imageapi.core.faces.embedded import MODEL, detect_jpeg
from imageapi.core.faces.embeddings import cosine
from imageapi.core.faces.settings import DEFAULT_EMBEDDED_MIN_COS
from imageapi.core.hashing import hash_file

EUCLID_THRESHOLD = 0.6   # dlib's, for its raw descriptors


def euclid(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b, strict=True)))


def label_of(name: str) -> str | None:
    if name.startswith("obama_and_biden"):
        return None
    if name.startswith("obama"):
        return "obama"
    if name.startswith("biden"):
        return "biden"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.environ.get("IMAGEAPI_CORPUS", "../shared/corpus"))
    args = ap.parse_args()
    folder = Path(args.corpus) / "faces"
    print(f"# {platform.platform()}, Python {platform.python_version()}, model {MODEL}")
    faces: list[tuple[str, str, tuple[float, ...], bool]] = []   # file, label, embedding, labeled by name
    unlabeled: list[tuple[str, tuple[float, ...]]] = []
    for path in sorted(folder.glob("*.jpg")):
        prep = prepare_for_detection(str(path), "image", hash_file(str(path)))
        assert prep.jpeg is not None, prep.error
        det = detect_jpeg(prep.jpeg)
        print(f"{path.name}: {prep.width}x{prep.height}, {len(det.faces)} faces "
              + ", ".join(f"[{f.score:.2f} {f.bbox[2] * prep.width:.0f}px]" for f in det.faces))
        label = label_of(path.name)
        for f in det.faces:
            if label is not None and len(det.faces) == 1:
                faces.append((path.name, label, f.embedding, True))
            else:
                unlabeled.append((path.name, f.embedding))
    refs = list(faces)
    for name, emb in unlabeled:
        best = min(refs, key=lambda r: euclid(r[2], emb))
        if euclid(best[2], emb) >= EUCLID_THRESHOLD:
            print(f"  {name}: a face like no reference (nearest {best[0]}, {euclid(best[2], emb):.3f}): left out")
            continue
        faces.append((name, best[1], emb, False))
        print(f"  {name}: a face labeled {best[1]} by its nearest reference ({best[0]}, {euclid(best[2], emb):.3f})")
    same_e, diff_e, same_c, diff_c = [], [], [], []
    for a, b in itertools.combinations(faces, 2):
        if a[0] == b[0]:
            continue   # two faces of one photo are two people by construction
        (same_e if a[1] == b[1] else diff_e).append(euclid(a[2], b[2]))
        (same_c if a[1] == b[1] else diff_c).append(cosine(a[2], b[2]))
    by_name = [f for f in faces if f[3]]
    n_named_pairs = sum(1 for a, b in itertools.combinations(by_name, 2) if a[0] != b[0])
    named_e = [(a[1] == b[1], euclid(a[2], b[2])) for a, b in itertools.combinations(by_name, 2)]
    print(f"name-labeled pairs only: same person max {max(d for s, d in named_e if s):.3f}, "
          f"different min {min(d for s, d in named_e if not s):.3f}")
    print(f"\nfaces {len(faces)} ({len(by_name)} labeled by file name), pairs {len(same_e) + len(diff_e)} "
          f"({n_named_pairs} between name-labeled faces)")
    print(f"Euclidean (dlib, threshold {EUCLID_THRESHOLD}): same person max {max(same_e):.3f} "
          f"(mean {sum(same_e) / len(same_e):.3f}), different min {min(diff_e):.3f} "
          f"(mean {sum(diff_e) / len(diff_e):.3f}); errors at {EUCLID_THRESHOLD}: "
          f"{sum(d >= EUCLID_THRESHOLD for d in same_e)} same above, {sum(d < EUCLID_THRESHOLD for d in diff_e)} "
          f"different below")
    print(f"cosine (the code's, FACE_AUTOBIND_MIN_COS for this model {DEFAULT_EMBEDDED_MIN_COS}): same person "
          f"min {min(same_c):.3f} (mean {sum(same_c) / len(same_c):.3f}), different max {max(diff_c):.3f} "
          f"(mean {sum(diff_c) / len(diff_c):.3f}); errors at {DEFAULT_EMBEDDED_MIN_COS}: "
          f"{sum(c < DEFAULT_EMBEDDED_MIN_COS for c in same_c)} same below, "
          f"{sum(c >= DEFAULT_EMBEDDED_MIN_COS for c in diff_c)} different above")
    norms = [math.sqrt(sum(x * x for x in f[2])) for f in faces]
    print(f"descriptor norms {min(norms):.3f}..{max(norms):.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
