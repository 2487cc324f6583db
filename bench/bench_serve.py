"""Thumbnail serving: imageapi against nginx, same files, same run, 127.0.0.1 only.

64 concurrent keep-alive clients (wrk, 2 threads) cycle through 500 different thumbnails (~12 KB),
each request authenticated with a Bearer JWT; nginx serves the same files from the same folder
(no auth). Measured idle, then while the server's watcher runs a full scan of a second library of
new photos (every file read, hashed, EXIF, thumbnailed in the worker pool), with nginx measured
during the same scan. Prints req/s, p50/p99 latency and the ratio to nginx.

    python bench/bench_serve.py [--seconds 10] [--scan-files 8000] [--processes 1,2] [--keep DIR]

Needs Debian's nginx and wrk: `apt-get update && apt-get install -y nginx wrk` (the script says so
and stops when they are missing). Everything is bounded: wrk runs for --seconds, every process has
a timeout, and everything started is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECRET = "bench-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
THUMBS = 500


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        sys.exit(f"{tool} is missing: apt-get update && apt-get install -y nginx wrk")
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
    conf.write_text(f"""
daemon off;
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


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each wrk run")
    ap.add_argument("--scan-files", type=int, default=8000, help="new photos the full scan indexes")
    ap.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2],
                    help="server process counts to measure (comma-separated, default 1,2)")
    ap.add_argument("--keep", type=Path, help="work folder to keep (and reuse) instead of a temporary one")
    ap.add_argument("--child", choices=["idle", "scan"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.port)
        return
    wrk = need("wrk")
    need("nginx")
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_serve_"))
    work.mkdir(parents=True, exist_ok=True)
    rels, token = prepare(work, args.scan_files)
    sizes = [(work / "data" / "thumbnails" / "photos" / r).stat().st_size for r in rels]
    from urllib.parse import quote

    api = wrk_script(work, "api", [f"/image?library=photos&path={quote(r, safe='')}" for r in rels], token)
    static = wrk_script(work, "nginx", [f"/thumbs/photos/{r}" for r in rels], None)
    nginx_port, api_port = free_port(), free_port()
    nginx_base, api_base = f"http://127.0.0.1:{nginx_port}", f"http://127.0.0.1:{api_port}"
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    scans: dict[int, tuple[float, int]] = {}
    env = env_for(work)
    try:
        procs.append(start_nginx(work, nginx_port))
        wait_http(f"{nginx_base}/thumbs/photos/{rels[0]}")
        run_wrk(wrk, nginx_base, static, 2)  # warm-up: page cache, connections
        results["nginx idle"] = run_wrk(wrk, nginx_base, static, args.seconds)
        for count in args.processes:
            server = start_server(work, api_port, "idle", count)
            procs.append(server)
            wait_http(api_base + "/health")
            run_wrk(wrk, api_base, api, 2)  # warm-up: thumbnail cache, token cache
            results[f"imageapi idle, {count} proc"] = run_wrk(wrk, api_base, api, args.seconds)
            stop(server)
        for count in args.processes:
            # A library the index has never seen: the full scan reads, hashes and thumbnails it all.
            if any(lib["name"] == "incoming" for lib in json.loads(cli(["library", "list", "--json"], env))):
                cli(["library", "remove", "incoming"], env)
            cli(["library", "add", "incoming", str(work / "incoming")], env)
            server = start_server(work, api_port, "scan", count)
            procs.append(server)
            wait_http(api_base + "/health")
            time.sleep(2)  # the scan is under way
            before, t0 = scan_progress(work), time.monotonic()
            results[f"imageapi scan, {count} proc"] = run_wrk(wrk, api_base, api, args.seconds)
            results[f"nginx scan ({count} proc run)"] = run_wrk(wrk, nginx_base, static, args.seconds)
            done = scan_progress(work)
            scans[count] = ((done - before) / (time.monotonic() - t0), done)
            stop(server)
    finally:
        for p in procs:
            stop(p, signal.SIGQUIT if p.args and "nginx" in str(p.args[0]) else signal.SIGTERM)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"{THUMBS} thumbnails, mean {sum(sizes) / len(sizes) / 1024:.1f} KB; wrk -t2 -c64 -d{args.seconds:.0f}s, "
          "Bearer JWT on every imageapi request")
    print(f"{'':28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:28}{r['rps']:>10,.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['non2xx']:>9.0f}{r['errors']:>8.0f}")
    for count in args.processes:
        idle = results[f"imageapi idle, {count} proc"]["rps"] / results["nginx idle"]["rps"]
        busy = results[f"imageapi scan, {count} proc"]["rps"] / results[f"nginx scan ({count} proc run)"]["rps"]
        rate, done = scans[count]
        print(f"{count} process{'es' if count > 1 else ''}: ratio to nginx idle {idle:.2f}, during the full scan "
              f"{busy:.2f}; the scan indexed {rate:.0f} files/s meanwhile ({done}/{args.scan_files} "
              f"indexed when measuring stopped)")


if __name__ == "__main__":
    main()
