"""Figures 3 and 4: re-scanning an unchanged library, and the peak memory of a full scan.

    python -m bench.bench_rescan [--files 100000] [--dirs 1000] [--workers N] [--rounds 3]
                                 [--work-dir DIR] [--keep]

A tree of tiny valid JPEGs (16x16, distinct bytes) is generated, then indexed once by
`python -m imageapi scan --full` in a subprocess (timed and printed, not a target) while the memory
of that process and its workers is sampled. Then, alternately for a few rounds: the reference, a
plain os.scandir + stat walk of the same tree, a `full` re-scan and a `quick` re-scan (in this
process, through the scan API). Last, the memory of an unchanged `--full` re-scan in a subprocess.

Targets: full re-scan <= 3x the walk, quick re-scan <= 0.25x the walk (medians of the per-round
ratios); peak RSS of the scan's processes (main + workers, summed, sampled every 50 ms) <= 300 MB,
for the first import and for the re-scan.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import synth
from bench.common import (
    CpuMeter,
    MemoryPeak,
    TreeMemorySampler,
    Verdicts,
    base_parser,
    median,
    print_header,
    python,
    python_env,
    spread,
    usable_cores,
    wait_for_quiet,
    work_dir,
)
from imageapi.core.config import load_config
from imageapi.core.db import connect
from imageapi.core.libraries import get_library
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanReport, ScanTarget, run_scan
from imageapi.core.walk import RACY_SECONDS

FULL_TARGET = 3.0
QUICK_TARGET = 0.25
MEMORY_TARGET_MB = 300.0
CLI_TIMEOUT = 4 * 3600.0  # the first import of 100,000 files takes minutes; never wait forever


def walk_tree(root: str) -> int:
    """The reference: list every folder, stat every entry (what any full re-scan must at least do)."""
    files = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                entry.stat(follow_symlinks=False)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    files += 1
    return files


@dataclass
class CliRun:
    seconds: float
    memory: MemoryPeak
    summary: dict[str, Any]


def cli_scan(root: Path, data: Path, workers: int) -> CliRun:
    """`python -m imageapi ... scan --full ROOT --json` with its process tree's memory sampled."""
    cmd = [python(), "-m", "imageapi", "--database", str(data / "imageapi.db"), "--thumbnails",
           str(data / "thumbnails"), "scan", "--full", str(root), "--workers", str(workers), "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=data,
                            env=python_env(data))
    with TreeMemorySampler(proc.pid) as sampler:
        try:
            out, err = proc.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    return CliRun(seconds, sampler.peak, json.loads(out))


async def rescan(data: Path, workers: int, mode: str) -> tuple[float, ScanReport]:
    cfg = load_config(environ={}, cwd=data, workers=workers, database_path=data / "imageapi.db",
                      thumbnails=data / "thumbnails")
    db = await connect(cfg.database_path)
    pool = WorkerPool(workers)  # started only if there is a file to read: none here
    try:
        lib = await get_library(db, "main")
        start = time.perf_counter()
        [report] = await run_scan(db, cfg, [ScanTarget(lib)], mode, pool)
        seconds = time.perf_counter() - start
    finally:
        pool.close()
        await db.close()
    return seconds, report


def unchanged_problem(report: ScanReport, files: int) -> str | None:
    c = report.counts
    if c.added or c.changed or c.removed or c.moved or c.errors or (report.mode == "full" and c.scanned != files):
        return (f"the {report.mode} re-scan of an unchanged library found work: {c.scanned} scanned, "
                f"{c.added} added, {c.changed} changed, {c.removed} removed, {c.moved} moved, {c.errors} errors")
    return None


def memory_line(label: str, run: CliRun) -> str:
    m = run.memory
    return (f"{label}: peak RSS {m.rss_sum_mib:.0f} MiB summed over up to {m.processes} processes "
            f"(main alone {m.main_rss_mib:.0f} MiB; PSS sum {m.pss_sum_mib:.0f} MiB; {m.samples} samples)")


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--files", type=int, default=100_000, help="tiny JPEGs in the library")
    parser.add_argument("--dirs", type=int, default=1000, help="leaf folders they are spread over")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="worker processes (default: cores)")
    args = parser.parse_args(argv)
    print_header("re-scan of an unchanged library, and peak memory (bench_rescan)", args)
    verdicts = Verdicts()
    problems: list[str] = []

    with work_dir(args, "rescan") as work:
        root, data = work / "library", work / "data"
        started = time.perf_counter()
        files = synth.tiny_tree(root, args.files, args.dirs)
        made = time.perf_counter() - started
        print(f"library: {len(files)} tiny JPEGs in {args.dirs} folders, ready in {made:.1f} s", flush=True)
        del files
        # Folders changed within RACY_SECONDS are not trusted by the next quick scan: let them age.
        time.sleep(RACY_SECONDS + 0.5)
        walk_tree(str(root))  # inodes and folders into the cache
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        print("first import (python -m imageapi scan --full, subprocess, not a target)...", flush=True)
        first = cli_scan(root, data, args.workers)
        s = first.summary
        print(f"  first import: {first.seconds:.1f} s wall ({s['seconds']:.1f} s in the scan), "
              f"{s['added']} added, {s['thumbs_made']} thumbnails, {s['errors']} errors, "
              f"{s['added'] / max(s['seconds'], 1e-9):.0f} files/s", flush=True)
        if s["added"] != args.files or s["errors"]:
            problems.append(f"the first import added {s['added']} of {args.files} files with {s['errors']} errors")

        walks: list[float] = []
        fulls: list[float] = []
        quicks: list[float] = []
        full_ratios: list[float] = []
        quick_ratios: list[float] = []
        for r in range(args.rounds):
            wait_for_quiet(args.wait_quiet)
            meter = CpuMeter().start()  # what the machine's other users took during the round
            start = time.perf_counter()
            seen = walk_tree(str(root))
            walks.append(time.perf_counter() - start)
            full_s, full_report = asyncio.run(rescan(data, args.workers, "full"))
            quick_s, quick_report = asyncio.run(rescan(data, args.workers, "quick"))
            meter.stop()
            fulls.append(full_s)
            quicks.append(quick_s)
            full_ratios.append(full_s / walks[-1])
            quick_ratios.append(quick_s / walks[-1])
            for rep in (full_report, quick_report):
                problem = unchanged_problem(rep, seen)
                if problem and problem not in problems:
                    problems.append(problem)
            print(f"  round {r + 1}: walk {walks[-1]:.3f} s ({seen} files), full {full_s:.3f} s "
                  f"({full_ratios[-1]:.2f}x), quick {quick_s:.3f} s ({quick_ratios[-1]:.3f}x); "
                  f"others used {meter.others_cores:.2f} cores meanwhile", flush=True)

        print("unchanged re-scan memory (python -m imageapi scan --full, subprocess)...", flush=True)
        again = cli_scan(root, data, args.workers)
        if again.summary["added"] or again.summary["changed"] or again.summary["removed"]:
            problems.append(f"the re-scan subprocess found work: {again.summary}")

    print()
    print(f"reference walk (scandir + stat): {spread(walks)}")
    print(f"full re-scan:                    {spread(fulls)}")
    print(f"quick re-scan:                   {spread(quicks)}")
    print(f"first import: {first.seconds:.1f} s for {args.files} files")
    print(memory_line("first import", first))
    print(memory_line("unchanged re-scan", again))
    for p in problems:
        print(f"PROBLEM: {p}")
    print()
    ok = not problems
    full_ratio, quick_ratio = median(full_ratios), median(quick_ratios)
    verdicts.check("full re-scan vs walk", f"{full_ratio:.2f}x ({', '.join(f'{x:.2f}' for x in full_ratios)})",
                   f"<= {FULL_TARGET}x", ok and full_ratio <= FULL_TARGET)
    verdicts.check("quick re-scan vs walk", f"{quick_ratio:.3f}x ({', '.join(f'{x:.3f}' for x in quick_ratios)})",
                   f"<= {QUICK_TARGET}x", ok and quick_ratio <= QUICK_TARGET)
    for label, run in (("peak memory, first import", first), ("peak memory, unchanged re-scan", again)):
        mb = run.memory.rss_sum_mib * 1024 * 1024 / 1e6
        verdicts.check(label, f"{mb:.0f} MB RSS summed ({run.memory.rss_sum_mib:.0f} MiB)",
                       f"<= {MEMORY_TARGET_MB:.0f} MB", ok and mb <= MEMORY_TARGET_MB)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
