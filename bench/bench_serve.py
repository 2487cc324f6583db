"""Thumbnail serving: imageapi against nginx, same files, same run, 127.0.0.1 only.

64 concurrent keep-alive clients (wrk, 2 threads) cycle through 500 different thumbnails (~12 KB),
each request authenticated with a Bearer JWT; nginx serves the same files from the same folder
(no auth). Measured idle, then while the server's watcher runs a full scan of a second library of
new photos (every file read, hashed, EXIF, thumbnailed in the worker pool), with nginx measured
during the same scan. Prints req/s, p50/p99 latency and the ratio to nginx.

    python bench/bench_serve.py [--seconds 10] [--rounds 3] [--processes 1,2] [--scan-files 12000]
                                [--no-scan] [--wait-quiet 120] [--work-dir DIR]

The machine is shared, so nginx and each imageapi configuration are measured alternately, --rounds
times, and the medians are reported (each ratio is taken within its round); next to every run is
the CPU the rest of the machine used meanwhile. Targets (the issue's): at least 0.5 of nginx's rate
and p99 under 50 ms, idle; exit 1 when one is missed, 2 when it cannot measure.

Needs Debian's nginx and wrk: `apt-get update && apt-get install -y nginx wrk` (the script says so
and stops when they are missing). Everything is bounded: wrk runs for --seconds, every process has
a timeout, and everything started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import (  # noqa: E402  (after the path set-up, for `python bench/bench_serve.py`)
    CpuMeter,
    Verdicts,
    base_parser,
    median,
    print_header,
    process_cpu_seconds,
    process_tree,
    wait_for_quiet,
    work_dir,
)

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
THUMBS = 500
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        print(f"{tool} is missing: apt-get update && apt-get install -y nginx wrk", file=sys.stderr)
        sys.exit(2)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_photo(path: Path, seed: int) -> None:
    """A 1600x1200 JPEG whose 400 px thumbnail is ~12 KB (like a real photo's)."""
    from PIL import Image, ImageDraw, ImageFilter

    rnd = random.Random(seed)
    small = Image.effect_noise((32, 24), 15).convert("RGB")
    im = small.resize((1600, 1200), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    for _ in range(15):
        x, y = rnd.randrange(1600), rnd.randrange(1200)
        draw.ellipse([x, y, x + rnd.randrange(50, 500), y + rnd.randrange(50, 400)],
                     fill=(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)))
    im = im.filter(ImageFilter.GaussianBlur(2))
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"
    exif.get_ifd(0x8769)[0x9003] = f"20{10 + seed % 14:02d}:0{1 + seed % 9}:1{seed % 9} 12:00:00"
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, "JPEG", quality=88, exif=exif.tobytes())


def env_for(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO", "WATCH_"))}
    env.update({
        "IMAGEAPI_DATA_DIR": str(work / "data"), "SECRET_KEY": SECRET, "LOG_LEVEL": "warn",
        "DATABASE_URL": str(work / "data" / "imageapi.db"), "THUMBNAILS": str(work / "data" / "thumbnails"),
        "WORKERS": "2", **extra,
    })
    env.pop("BASE_PATH", None)
    return env


def cli(args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 600) -> str:
    res = subprocess.run([sys.executable, "-m", "imageapi", *args], env=env, input=stdin, capture_output=True,
                         text=True, timeout=timeout, cwd=REPO)
    if res.returncode != 0:
        sys.exit(f"imageapi {' '.join(args)} failed: {res.stderr}")
    return res.stdout


def prepare(work: Path, scan_files: int) -> tuple[list[str], str]:
    """500 photos indexed (thumbnails made by a real scan), a second library of new photos for
    the scan phase, a user and a token. Returns the thumbnail paths and the token."""
    env = env_for(work)
    photos = work / "photos"
    rels = [f"{i // 100:02d}/IMG_{i:04d}.jpg" for i in range(THUMBS)]
    if not (work / "data" / "imageapi.db").exists():
        print(f"making {THUMBS} photos and indexing them ...", flush=True)
        for i, rel in enumerate(rels):
            make_photo(photos / rel, i)
        cli(["library", "add", "photos", str(photos)], env)
        cli(["scan", "--full", "--library", "photos"], env)
        cli(["user", "add", "bench", "--password-stdin"], env, "bench password\n")
    newlib = work / "incoming"
    if newlib.exists():
        shutil.rmtree(newlib)
    if scan_files:
        print(f"making a library of {scan_files} new photos for the scan phase ...", flush=True)
    sources = [(photos / rel).read_bytes() for rel in rels]
    for i in range(scan_files):
        # Distinct content (a trailer after the JPEG's end) so every file is hashed and thumbnailed.
        dest = newlib / f"{i // 200:03d}" / f"N_{i:05d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(sources[i % len(sources)] + f"bench-{i}".encode())
    token = json.loads(cli(["token", "--user", "bench", "--ttl", "1d", "--json"], env))["token"]
    return rels, token


def wrk_script(work: Path, name: str, urls: list[str], token: str | None) -> Path:
    lines = ["local paths = {"]
    lines += [f'  "{u}",' for u in urls]
    lines += ["}", "local i = 0"]
    headers = f'{{["Authorization"] = "Bearer {token}"}}' if token else "{}"
    lines += [
        "request = function()",
        "  i = i + 1",
        "  return wrk.format('GET', paths[(i % #paths) + 1], " + headers + ")",
        "end",
        "done = function(summary, latency, requests)",
        "  io.write(string.format('JSON {\"requests\": %d, \"non2xx\": %d, \"errors\": %d}\\n',",
        "    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read"
        " + summary.errors.write + summary.errors.timeout))",
        "end",
    ]
    path = work / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_wrk(wrk: str, base: str, script: Path, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [wrk, "-t2", "-c64", f"-d{seconds:.0f}s", "--latency", "--timeout", "5s", "-s", str(script), base],
        capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    extra = json.loads(out.split("JSON ", 1)[1].splitlines()[0])
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), **extra}


def start_nginx(work: Path, port: int) -> subprocess.Popen[bytes]:
    nginx = need("nginx")
    conf = work / "nginx.conf"
    tmp = work / "nginx_tmp"
    tmp.mkdir(exist_ok=True)
    # Run as root, nginx's workers switch to an unprivileged user that cannot read a work folder made
    # by mkdtemp (0700), or one under /root: they stay root then (a local, loopback-only benchmark).
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
daemon off;
{user}
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx_error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location /thumbs/ {{ alias {work}/data/thumbnails/; etag on; }}
    }}
}}
""")
    return subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def start_server(work: Path, port: int, mode: str, processes: int) -> subprocess.Popen[bytes]:
    env = env_for(work, WATCH_QUICK_INTERVAL_SECONDS="3600", WATCH_FULL_INTERVAL_SECONDS="3600",
                  BENCH_PROCESSES=str(processes))
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", mode, "--port", str(port)],
                            env=env, cwd=REPO)


def wait_http(url: str, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    answer = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError as exc:  # up, but not serving the file
            answer = f"HTTP {exc.code}"
        except OSError:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log and log.exists() else []
    sys.exit(f"{url} did not come up ({answer})" + "".join(f"\n  {line}" for line in tail))


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def scan_progress(work: Path) -> int:
    import sqlite3

    with sqlite3.connect(work / "data" / "imageapi.db", timeout=30) as conn:
        row = conn.execute("SELECT COUNT(*) FROM files f JOIN libraries l ON l.id = f.library_id "
                           "WHERE l.name = 'incoming'").fetchone()
    return int(row[0])


def child(mode: str, port: int) -> None:
    """The server under test: create_app served the way `imageapi serve` serves it."""
    from imageapi.core.config import load_config
    from imageapi.core.faces.settings import face_settings
    from imageapi.core.watch import Watcher
    from imageapi.server import runner
    from imageapi.server.app import create_app

    config = load_config()

    class FullScans(Watcher):
        """The watcher, made to run back-to-back full scans (the phase under test)."""

        async def run(self, stop: asyncio.Event) -> None:
            while not stop.is_set():
                await self.scan_tick("full")

    factory = (lambda cfg, db, pool: FullScans(db, cfg, pool, face_settings(cfg))) if mode == "scan" else None
    runner.serve(lambda watch: create_app(config, watch=watch, watcher_factory=factory), "127.0.0.1", port, config,
                 processes=int(os.environ.get("BENCH_PROCESSES", "1")), watch=mode == "scan")


Result = dict[str, float]


def tree_cpu(pid: int) -> float:
    return sum(process_cpu_seconds(p) for p in process_tree(pid))


def softirq_threads() -> list[int]:
    """The kernel's ksoftirqd threads: under this much loopback traffic they carry part of the
    benchmark's own network work, which is not the machine's other users."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("ksoftirqd"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


SOFTIRQ = softirq_threads() if sys.platform == "linux" else []


def measure(wrk: str, base: str, script: Path, seconds: float, server: int) -> Result:
    """One wrk run, with the server's CPU per request (its process tree: for imageapi during the
    scan phase that includes the scan's workers) and the cores' worth of CPU the rest of the
    machine used meanwhile (the shared machine's noise; the kernel's softirq threads are ours)."""
    meter = CpuMeter().start()
    cpu = tree_cpu(server)
    softirq = sum(process_cpu_seconds(p) for p in SOFTIRQ)
    reaped = _reaped_cpu()
    result = run_wrk(wrk, base, script, seconds)
    result["cpu_us"] = (tree_cpu(server) - cpu) / max(1.0, result["requests"]) * 1e6
    meter.stop()
    softirq = sum(process_cpu_seconds(p) for p in SOFTIRQ) - softirq
    wrk_cpu = _reaped_cpu() - reaped  # wrk has exited by now: the meter could not see it
    result["wrk_cores"] = wrk_cpu / meter.elapsed
    result["others"] = max(0.0, meter.others - softirq - wrk_cpu) / meter.elapsed
    return result


def _reaped_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    t = os.times()
    return t.children_user + t.children_system


def show(name: str, r: Result) -> None:
    print(f"  {name:30}{r['rps']:>10,.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['non2xx']:>9.0f}{r['errors']:>8.0f}"
          f"{r['cpu_us']:>9.1f}{r['others']:>9.2f}", flush=True)


def med(runs: list[Result], key: str) -> float:
    return median([r[key] for r in runs])


def main() -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    ap.add_argument("--scan-files", type=int, default=12000,
                    help="new photos the full scan indexes (enough to keep it busy through the scan phase)")
    ap.add_argument("--no-scan", action="store_true", help="the idle phase only")
    ap.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                    help="server process counts to measure (comma-separated, default 1,2)")
    ap.add_argument("--child", choices=["idle", "scan"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.port)
        return 0
    wrk = need("wrk")
    need("nginx")
    print_header("bench_serve: thumbnails per second, imageapi against nginx", args)
    with work_dir(args, "serve") as work:
        return run(args, wrk, work)


def run(args: argparse.Namespace, wrk: str, work: Path) -> int:
    counts: list[int] = args.processes
    rels, token = prepare(work, 0 if args.no_scan else args.scan_files)
    sizes = [(work / "data" / "thumbnails" / "photos" / r).stat().st_size for r in rels]
    from urllib.parse import quote

    api = wrk_script(work, "api", [f"/image?library=photos&path={quote(r, safe='')}" for r in rels], token)
    static = wrk_script(work, "nginx", [f"/thumbs/photos/{r}" for r in rels], None)
    nginx_port = free_port()
    nginx_base = f"http://127.0.0.1:{nginx_port}"
    procs: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[Result]] = {}
    ratios: dict[str, list[float]] = {}
    scans: dict[int, tuple[float, int]] = {}
    env = env_for(work)
    print(f"  {'':30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}{'cpu us':>9}{'others':>9}")
    try:
        nginx = start_nginx(work, nginx_port)
        procs.append(nginx)
        wait_http(f"{nginx_base}/thumbs/photos/{rels[0]}", log=work / "nginx_error.log")
        run_wrk(wrk, nginx_base, static, 2)  # warm-up: page cache, connections
        # Idle: one server per process count, all up at once (idle, they cost nothing), measured
        # in turn with nginx, in alternating order round after round.
        bases: dict[int, str] = {}
        servers: dict[int, subprocess.Popen[bytes]] = {}
        for count in counts:
            port = free_port()
            bases[count] = f"http://127.0.0.1:{port}"
            servers[count] = start_server(work, port, "idle", count)
            procs.append(servers[count])
        for count in counts:
            wait_http(bases[count] + "/health")
            run_wrk(wrk, bases[count], api, 2)  # warm-up: thumbnail cache, token cache
        for rnd in range(args.rounds):
            wait_for_quiet(args.wait_quiet)
            print(f"  round {rnd + 1} (idle)", flush=True)
            order: list[int | None] = [None, *counts]
            this: dict[str, Result] = {}
            for count in order if rnd % 2 == 0 else order[::-1]:
                name = "nginx idle" if count is None else f"imageapi idle, {count} proc"
                this[name] = measure(wrk, nginx_base if count is None else bases[count],
                                     static if count is None else api, args.seconds,
                                     nginx.pid if count is None else servers[count].pid)
                runs.setdefault(name, []).append(this[name])
                show(name, this[name])
            for count in counts:
                ratios.setdefault(f"idle {count}", []).append(
                    this[f"imageapi idle, {count} proc"]["rps"] / this["nginx idle"]["rps"])
        for idle in servers.values():
            stop(idle)
        for count in ([] if args.no_scan else counts):
            # A library the index has never seen: the full scan reads, hashes and thumbnails it all.
            if any(lib["name"] == "incoming" for lib in json.loads(cli(["library", "list", "--json"], env))):
                cli(["library", "remove", "incoming"], env)
            cli(["library", "add", "incoming", str(work / "incoming")], env)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = start_server(work, port, "scan", count)
            procs.append(server)
            wait_http(base + "/health")
            time.sleep(2)  # the scan is under way
            before, t0 = scan_progress(work), time.monotonic()
            for rnd in range(args.rounds):
                print(f"  round {rnd + 1} (full scan running, {count} proc)", flush=True)
                this = {}
                names = [f"imageapi scan, {count} proc", f"nginx scan ({count} proc run)"]
                for name in names if rnd % 2 == 0 else names[::-1]:
                    is_nginx = name.startswith("nginx")
                    this[name] = measure(wrk, nginx_base if is_nginx else base, static if is_nginx else api,
                                         args.seconds, nginx.pid if is_nginx else server.pid)
                    runs.setdefault(name, []).append(this[name])
                    show(name, this[name])
                ratios.setdefault(f"scan {count}", []).append(this[names[0]]["rps"] / this[names[1]]["rps"])
            done = scan_progress(work)
            scans[count] = ((done - before) / (time.monotonic() - t0), done)
            stop(server)
    finally:
        for p in procs:
            stop(p, signal.SIGQUIT if p.args and "nginx" in str(p.args[0]) else signal.SIGTERM)

    print()
    print(f"{THUMBS} thumbnails, mean {sum(sizes) / len(sizes) / 1024:.1f} KB; wrk -t2 -c64 -d{args.seconds:.0f}s, "
          f"Bearer JWT on every imageapi request; medians of {args.rounds} rounds ('others': cores the rest of "
          "the machine used during the run)")
    print(f"{'':30}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us':>9}{'others':>9}   ('cpu us': the server's CPU "
          "per request)")
    for name, rs in runs.items():
        print(f"{name:30}{med(rs, 'rps'):>10,.0f}{med(rs, 'p50'):>9.2f}{med(rs, 'p99'):>9.2f}{med(rs, 'cpu_us'):>9.1f}"
              f"{med(rs, 'others'):>9.2f}")
    verdicts = Verdicts()
    for count in counts:
        label = f"{count} process{'es' if count > 1 else ''}"
        each = ", ".join(f"{r:.2f}" for r in ratios[f"idle {count}"])
        line = f"{label}: ratio to nginx idle {median(ratios[f'idle {count}']):.2f} (rounds: {each})"
        if count in scans:
            rate, done = scans[count]
            line += (f"; during the full scan {median(ratios[f'scan {count}']):.2f}, and the scan indexed {rate:.0f} "
                     f"files/s meanwhile ({done}/{args.scan_files} indexed when measuring stopped)")
        print(line)
    print()
    for count in counts:
        label = f"{count} process{'es' if count > 1 else ''}"
        verdicts.check(f"{label}, idle: ratio to nginx", f"{median(ratios[f'idle {count}']):.2f}",
                       f">= {TARGET_RATIO}", median(ratios[f"idle {count}"]) >= TARGET_RATIO)
        p99 = med(runs[f"imageapi idle, {count} proc"], "p99")
        verdicts.check(f"{label}, idle: p99 latency", f"{p99:.1f} ms", f"< {TARGET_P99_MS:.0f} ms",
                       p99 < TARGET_P99_MS)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
