"""Figure 2, hashing throughput: hash_file() against a plain read of the same file from page cache.

    python -m bench.bench_hash [--size-mib 1024] [--rounds 3] [--work-dir DIR] [--keep]

Target: hash_file reaches at least 25% of the plain read's speed. hashlib.sha256 over the same
bytes is printed for the record (the hash the project did not choose).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from bench.common import (
    MIB,
    Verdicts,
    base_parser,
    median,
    print_header,
    read_all,
    spread,
    timed,
    wait_for_quiet,
    work_dir,
)
from imageapi.core.hashing import hash_file

TARGET_RATIO = 0.25


def make_file(path: Path, size: int) -> None:
    """Random-ish bytes (incompressible: no filesystem or cache can shortcut them)."""
    if path.is_file() and path.stat().st_size == size:
        return
    block = os.urandom(16 * MIB)
    with open(path, "wb") as f:
        written = 0
        while written < size:
            # A fresh counter in every MiB keeps blocks distinct without paying for urandom each time.
            chunk = bytearray(block[: min(len(block), size - written)])
            for off in range(0, len(chunk), MIB):
                chunk[off:off + 8] = (written + off).to_bytes(8, "little")
            f.write(chunk)
            written += len(chunk)


def plain_read(path: Path) -> None:
    read_all([path])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    buf = bytearray(MIB)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the file hashed (MiB)")
    args = parser.parse_args(argv)
    print_header("hashing throughput (bench_hash)", args)
    size = args.size_mib * MIB
    with work_dir(args, "hash") as work:
        path = work / f"hash-{args.size_mib}mib.bin"
        print(f"generating {args.size_mib} MiB in {path} (not timed)...", flush=True)
        make_file(path, size)
        read_all([path])  # into the page cache for every contender

        reads: list[float] = []
        hashes: list[float] = []
        shas: list[float] = []
        for r in range(args.rounds):
            wait_for_quiet(args.wait_quiet)
            reads.append(timed(lambda: plain_read(path)))
            hashes.append(timed(lambda: hash_file(path)))
            shas.append(timed(lambda: sha256_file(path)))
            print(f"  round {r + 1}: read {reads[-1]:.3f} s, hash_file {hashes[-1]:.3f} s, "
                  f"sha256 {shas[-1]:.3f} s", flush=True)

    def rate(seconds: list[float]) -> float:
        return size / MIB / median(seconds)

    read_rate, hash_rate, sha_rate = rate(reads), rate(hashes), rate(shas)
    # Per round, hash throughput / read throughput = read time / hash time; the median of those.
    ratios = [r / h for r, h in zip(reads, hashes, strict=True)]
    ratio = median(ratios)
    print()
    print(f"plain read (readinto 1 MiB): {read_rate:8.0f} MiB/s   {spread(reads)}")
    print(f"hash_file (blake3):          {hash_rate:8.0f} MiB/s   {spread(hashes)}")
    print(f"hashlib.sha256 (record):     {sha_rate:8.0f} MiB/s   {spread(shas)}")
    print(f"blake3 / sha256:             {hash_rate / sha_rate:8.2f}x")
    print()
    verdicts = Verdicts()
    per_round = ", ".join(f"{x:.1%}" for x in ratios)
    verdicts.check("hash_file throughput vs plain read", f"{ratio:.1%} (per round: {per_round})",
                   f">= {TARGET_RATIO:.0%}", ratio >= TARGET_RATIO)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
