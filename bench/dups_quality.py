"""Near-duplicate detection quality: precision and recall on a set generated from the test corpus.

    python -m bench.dups_quality [--work-dir DIR] [--keep] [--corpus DIR]

The set: every corpus photo (JPEG, HEIC, TIFF, the face photos) and five copies of each, made as
copies are made in real life: resized to half, recompressed at quality 60, cropped by 5% (2.5% off
each side), converted to PNG and back, brightness +10%. Then things that must not be grouped:
distinct photos that look alike (the corpus's several portraits of one man, its landscape and
portrait shots of one scene) and burst-like frames of the corpus clip taken 0.04 to 0.5 s apart.
The corpus's orient_* files are one picture stored with each EXIF orientation: upright they are
the same picture, so each set of them counts as one photo (its copies).

Each picture goes through the same steps as in a scan: an upright 400 px thumbnail
(core/thumbs.render), its perceptual hashes (core/phash), then the grouping (core/duplicates,
multi-index hashing and union-find). A pair counts as found when both are in one group; precision
and recall are over pairs. Also printed: recall per kind of copy and the burst pairs grouped.

Targets: precision >= 0.95 and recall >= 0.80 over all copies (crops included).
"""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from bench.common import REPO, Verdicts, base_parser, print_header, work_dir
from imageapi.core.duplicates import NEAR_FINE, NEAR_FINE_INNER, NEAR_PHASH, near_groups_of
from imageapi.core.phash import Hashes, distance, hashes_of_file

TARGET_PRECISION = 0.95
TARGET_RECALL = 0.80
COPIES = ("resized", "q60", "crop5", "png", "bright")
BURST_TIMES = ("1.00", "1.04", "1.10", "1.20", "1.50", "2.00", "3.00", "3.04", "3.10", "4.50")


def family(name: str) -> str:
    """Which photo a corpus file is: orient_landscape_* are one, orient_portrait_* another."""
    for prefix in ("orient_landscape_", "orient_portrait_"):
        if name.startswith(prefix):
            return prefix
    return name


def thumb_hashes(path: Path, work: Path, kind: str = "image") -> Hashes:
    """What a scan stores for the file: the hashes of its thumbnail, read back from JPEG."""
    from imageapi.core.thumbs import render

    rendered = render(path, kind, 400)
    thumb = work / "thumb.jpg"
    thumb.write_bytes(rendered.jpeg)
    try:
        return hashes_of_file(str(thumb))
    finally:
        thumb.unlink()


def make_copies(src: Path, dest: Path) -> dict[str, Path]:
    from PIL import Image, ImageEnhance, ImageOps
    from pillow_heif import register_heif_opener

    register_heif_opener()
    with Image.open(src) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    w, h = img.size
    out: dict[str, Path] = {}
    for copy in COPIES:
        p = dest / f"{src.stem}.{copy}.jpg"
        out[copy] = p
        if p.exists():
            continue
        if copy == "resized":
            img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS).save(p, quality=90)
        elif copy == "q60":
            img.save(p, quality=60)
        elif copy == "crop5":
            dx, dy = round(w * 0.025), round(h * 0.025)
            img.crop((dx, dy, w - dx, h - dy)).save(p, quality=90)
        elif copy == "png":
            buf = io.BytesIO()
            img.save(buf, "PNG")
            Image.open(io.BytesIO(buf.getvalue())).convert("RGB").save(p, quality=90)
        else:
            ImageEnhance.Brightness(img).enhance(1.1).save(p, quality=90)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = parser.parse_args(argv)
    print_header("near-duplicate quality (dups_quality)", args)
    corpus = args.corpus
    sources = sorted([*(corpus / "jpeg").glob("*.jpg"), *(corpus / "faces").glob("*.jpg"),
                      *(corpus / "tiff").glob("*.tif*"), *(corpus / "heic").glob("*.HEIC"),
                      *(corpus / "heic").glob("*.heif")])
    if not sources or not (corpus / "video" / "clip_6s.mp4").is_file():
        print(f"corpus not found at {corpus}", file=sys.stderr)
        return 2
    with work_dir(args, "dups") as work:
        items: list[tuple[str, str, str, str]] = []   # (id, photo, what, how), hashes below
        hashes: dict[str, Hashes] = {}
        for src in sources:
            kind = "heic" if src.suffix.lower() in (".heic", ".heif") else "image"
            name = f"{src.parent.name}/{src.name}"
            hashes[name] = thumb_hashes(src, work, kind)
            items.append((name, family(src.name), "original", "original"))
            for copy, p in make_copies(src, work).items():
                hashes[f"{name}:{copy}"] = thumb_hashes(p, work)
                items.append((f"{name}:{copy}", family(src.name), "copy", copy))
        for t in BURST_TIMES:
            p = work / f"burst_{t}.jpg"
            if not p.exists():
                subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", t, "-i", str(corpus / "video" / "clip_6s.mp4"),
                                "-frames:v", "1", "-q:v", "2", str(p)], check=True, timeout=60)
            hashes[f"burst {t}"] = thumb_hashes(p, work)
            items.append((f"burst {t}", f"burst {t}", "burst", "burst"))

    print(f"{len(sources)} photos, {len(sources) * len(COPIES)} copies, {len(BURST_TIMES)} burst frames; "
          f"thresholds: phash <= {NEAR_PHASH}/64 bits, fine <= {NEAR_FINE}/256 bits "
          f"(centre against whole: {NEAR_FINE_INNER}/256)\n")
    groups = near_groups_of([(i, *hashes[i]) for i, *_ in items])
    group_of = {m: n for n, g in enumerate(groups) for m in g}
    photo = {i: ph for i, ph, *_ in items}
    how = {i: h for i, _ph, _w, h in items}

    tp = fp = fn = 0
    recall_by: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    burst_grouped: list[tuple[str, str]] = []
    alike_grouped: list[tuple[str, str]] = []
    for (a, *_), (b, *_) in itertools.combinations(items, 2):
        same = photo[a] == photo[b]
        found = a in group_of and group_of.get(a) == group_of.get(b)
        if same:
            kind = "/".join(sorted({how[a], how[b]} - {"original"})) or "original"
            recall_by[kind][1] += 1
            if found:
                tp += 1
                recall_by[kind][0] += 1
            else:
                fn += 1
        elif found:
            fp += 1
            (burst_grouped if how[a] == how[b] == "burst" else alike_grouped).append((a, b))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    print("recall by the copies in the pair (pairs found / pairs):")
    for kind, (found, total) in sorted(recall_by.items()):
        print(f"   {kind:16} {found:4} / {total:4}  {found / total:.1%}")
    bursts = [(a, b) for (a, *_), (b, *_) in itertools.combinations(items, 2) if how[a] == how[b] == "burst"]
    closest = sorted(bursts, key=lambda ab: distance(hashes[ab[0]][0], hashes[ab[1]][0]))[:5]
    print("\nclosest burst frames (phash bits, fine bits): " + ", ".join(
        f"{a[6:]}-{b[6:]} ({distance(hashes[a][0], hashes[b][0])}, {distance(hashes[a][1], hashes[b][1])})"
        for a, b in closest))
    print(f"burst pairs grouped: {len(burst_grouped)} of {len(bursts)}; other distinct pairs grouped: "
          f"{len(alike_grouped)} {alike_grouped[:5]}")
    print(f"\npairs: {tp} found, {fp} wrongly grouped, {fn} missed")
    print(f"precision {precision:.3f}, recall {recall:.3f}\n")
    verdicts = Verdicts()
    verdicts.check("precision", f"{precision:.3f}", f">= {TARGET_PRECISION}", precision >= TARGET_PRECISION)
    verdicts.check("recall", f"{recall:.3f}", f">= {TARGET_RECALL}", recall >= TARGET_RECALL)
    verdicts.check("burst frames grouped", str(len(burst_grouped)), "0", not burst_grouped)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
