"""What every benchmark shares: the machine description, verdict lines, work folders, timing,
and a sampler of the resident memory of a process tree.

Kept free of heavy imports: the scan's worker processes import the running benchmark's main module
(multiprocessing's forkserver does), and with it this one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# imageapi's settings: not passed on to a child run from the environment of whoever runs the bench.
SETTINGS = ("DATABASE_URL", "THUMBNAILS", "BASE_PATH", "IGNORE_PATTERNS", "EXCLUDED_DIRS", "THUMBNAIL_SIZE",
            "WORKERS", "IMAGEAPI_DATA_DIR", "XDG_DATA_HOME")
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def total_ram_mib() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def ffmpeg_origin() -> str:
    """Which ffmpeg the scan would run (IMAGEAPI_FFMPEG, PATH or imageio-ffmpeg's) and its version."""
    from imageapi.core import ffmpeg, ffmpeg_caps

    try:
        path = ffmpeg.ffmpeg_path()
        return f"{path} (version {ffmpeg_caps.version(path)})"
    except Exception as exc:
        return f"none ({exc})"


def machine_info() -> dict[str, str]:
    from PIL import __version__ as pillow_version
    from PIL import features

    ram = total_ram_mib()
    turbo = features.version("libjpeg_turbo") if features.check_feature("libjpeg_turbo") else None
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cores": f"{usable_cores()} usable ({os.cpu_count()} online)",
        "ram": f"{ram / 1024:.1f} GiB" if ram else "unknown",
        "load average": " ".join(f"{x:.2f}" for x in load) if load else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pillow": pillow_version,
        "libjpeg-turbo": turbo or f"no (libjpeg {features.version('jpg')})",
        "ffmpeg": ffmpeg_origin(),
    }


def print_header(title: str, args: argparse.Namespace) -> None:
    print(f"== {title}")
    for key, value in machine_info().items():
        print(f"   {key + ':':15} {value}")
    settings = ", ".join(f"{k}={v}" for k, v in vars(args).items())
    print(f"   {'settings:':15} {settings}")
    print(flush=True)


# --------------------------------------------------------------------------------------------
# Figures and verdicts


@dataclass
class Verdicts:
    """The PASS/FAIL lines of one run; the exit code is 1 when any target is missed."""

    lines: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def check(self, name: str, measured: str, target: str, passed: bool) -> None:
        self.lines.append((name, measured, target, passed))
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {measured} (target {target})", flush=True)

    def summary(self) -> int:
        failed = [name for name, _, _, ok in self.lines if not ok]
        print()
        print("== summary")
        for name, measured, target, ok in self.lines:
            print(f"   {'PASS' if ok else 'FAIL'}  {name}: {measured}  (target {target})")
        return 1 if failed else 0


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """'median (min..max, n rounds)' in seconds, for the record of how noisy the run was."""
    return f"{median(values):.3f} s (min {min(values):.3f}, max {max(values):.3f}, {len(values)} rounds)"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_all(paths: list[Path]) -> int:
    """Read every file once so that both the reference and the subject find them in the page cache."""
    total = 0
    buf = bytearray(MIB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


# --------------------------------------------------------------------------------------------
# Arguments and work folders


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the generated data goes (default: a new temporary folder; "
                             "bench/_work is git-ignored)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated data (a given --work-dir is always kept)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="reference/subject rounds, run alternately; the median is reported")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="before each round, wait up to this long for the machine's other users to "
                             "go quiet (a shared machine); 0: do not wait")
    return parser


@contextmanager
def work_dir(args: argparse.Namespace, prefix: str) -> Iterator[Path]:
    """The folder for generated data: the user's (kept) or a temporary one (removed unless --keep)."""
    if args.work_dir is not None:
        path = args.work_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix=f"imageapi-{prefix}-"))
    try:
        yield path
    finally:
        if args.keep:
            print(f"(data kept in {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Memory of a process tree


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            out.extend(int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def _children_by_scan(pid: int) -> list[int]:
    # Kernels without CONFIG_PROC_CHILDREN: find children by their parent id.
    out: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            out.append(int(name))
    return out


_HAS_CHILDREN_FILE = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the forkserver, the workers, their ffmpeg children)."""
    find = _children if _HAS_CHILDREN_FILE else _children_by_scan
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(find(p))
    return tree


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class MemoryPeak:
    rss_sum_mib: float = 0.0    # the largest sum over the tree of RSS at one sample
    pss_sum_mib: float = 0.0    # the same with PSS (shared pages split between their users)
    main_rss_mib: float = 0.0   # the main process's own RSS at its largest
    processes: int = 0          # the most processes seen in the tree at once
    samples: int = 0


class TreeMemorySampler:
    """Samples the summed RSS of a process and its descendants from /proc every `interval` s.

    RSS counts a page shared by several processes (the forkserver's preloaded modules) once per
    process, so the sum overstates the real use a little; the PSS sum splits shared pages and is
    printed next to it.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        tree = process_tree(self.pid)
        rss = [_status_kib(p, "VmRSS:") for p in tree]
        if not any(rss):
            return
        pss = sum(_pss_kib(p) for p in tree)
        peak = self.peak
        peak.samples += 1
        peak.rss_sum_mib = max(peak.rss_sum_mib, sum(rss) / 1024)
        peak.pss_sum_mib = max(peak.pss_sum_mib, pss / 1024)
        peak.main_rss_mib = max(peak.main_rss_mib, rss[0] / 1024)
        peak.processes = max(peak.processes, sum(1 for r in rss if r))


# --------------------------------------------------------------------------------------------
# CPU time: ours, and what the rest of the machine used meanwhile


CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def system_busy_seconds() -> float:
    """CPU seconds the whole machine (every container on this kernel) spent busy since boot,
    counting time stolen by the hypervisor for other guests."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    except (OSError, ValueError):
        return 0.0
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, ValueError, IndexError):
        return 0.0


class CpuMeter:
    """CPU used by this process and its descendants between start() and stop(), and by everything
    else on the machine meanwhile (other engineers' jobs: the figure is noisy when that is high).
    Call stop() while the workers are still alive: a process that has exited cannot be read."""

    def __init__(self) -> None:
        self.ours = 0.0
        self.others = 0.0
        self.elapsed = 0.0
        self._start: dict[int, float] = {}
        self._busy = 0.0
        self._t = 0.0

    def start(self) -> CpuMeter:
        self._start = {p: process_cpu_seconds(p) for p in process_tree(os.getpid())}
        self._busy = system_busy_seconds()
        self._t = time.perf_counter()
        return self

    def stop(self) -> CpuMeter:
        self.elapsed = time.perf_counter() - self._t
        busy = system_busy_seconds() - self._busy
        end = {p: process_cpu_seconds(p) for p in process_tree(os.getpid())}
        self.ours = sum(max(0.0, cpu - self._start.get(p, 0.0)) for p, cpu in end.items())
        self.others = max(0.0, busy - self.ours)
        return self

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU the rest of the machine used, on average, while measuring."""
        return self.others / self.elapsed if self.elapsed > 0 else 0.0


def others_busy_cores(window: float = 1.0) -> float:
    """Cores' worth of CPU the rest of the machine uses, over `window` seconds of our own idling."""
    meter = CpuMeter().start()
    time.sleep(window)
    return meter.stop().others_cores


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> None:
    """Wait (up to max_wait seconds) until the machine's other users take under `threshold` cores,
    so that a round's reference and subject both run on a quiet machine. Says so when it gave up."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    while True:
        busy = others_busy_cores()
        if busy < threshold:
            return
        if time.monotonic() >= deadline:
            print(f"  (the machine stayed busy: others use {busy:.2f} cores; measuring anyway)", flush=True)
            return


def python_env(data_dir: Path) -> dict[str, str]:
    """The environment for a child `python -m imageapi`: this checkout importable, its data folder
    under the benchmark's work folder, and no settings inherited that would change what is scanned."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["IMAGEAPI_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def python() -> str:
    return sys.executable


def throwaway_postgres(database: bool = True) -> tuple[Any, str] | None:
    """A throwaway PostgreSQL cluster (tests/pg.py) and the URL of a fresh database in it (of the
    server, with `database=False`); None, after printing how to install PostgreSQL, when there is
    none. The caller stops the cluster."""
    import asyncio

    from tests import pg

    bindir = pg.find_bin()
    if bindir is None:
        print(pg.INSTALL_HINT)
        return None
    cluster = pg.Cluster(bindir)
    server = cluster.start()
    if not database:
        return cluster, server
    return cluster, pg.with_database(server, asyncio.run(pg.create_database(server)))
