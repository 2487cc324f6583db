"""Figure: `imageapi faces serve` against in-process detection.

The corpus portraits (../shared/corpus/faces, or --faces DIR) are made into exactly the pictures
imageapi sends (upright, long edge at most 1600 px: core.faces.backlog.prepare_for_detection), and
cycled to --photos pictures. Three subjects, run alternately for --rounds rounds:

- in-process: `detect_jpeg` on each picture, one after the other, in this process (one core);
- serve (1 worker) and serve (2 workers): `imageapi faces serve --workers N` as a subprocess on a
  free port, fed by imageapi's own ApolloClient over real HTTP on 127.0.0.1 with --concurrency
  requests in flight (default: as many as the server has workers, so a request's latency is its
  service time, not time spent waiting in the server's queue; the throughput is the same with more).

Printed: photos/s (median over rounds), p50 and p95 latency of one request (one detect_jpeg call
in-process), and the verdicts: one worker keeps at least 85% of the in-process rate (the cost of
HTTP, multipart and JSON per photo), and two workers beat one by 1.3x (only meaningful when the
machine's two cores are not taken by others: see the load average printed first).

    .venv/bin/python -m bench.bench_faceserve [--photos 40] [--concurrency 4] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import REPO, Verdicts, base_parser, print_header, python_env, wait_for_quiet, work_dir


def pictures(faces_dir: Path, count: int) -> list[bytes]:
    from imageapi.core.faces.backlog import prepare_for_detection
    from imageapi.core.hashing import hash_file

    made = []
    for path in sorted(faces_dir.glob("*.jpg")):
        prepared = prepare_for_detection(str(path), "image", hash_file(str(path)))
        if prepared.jpeg is not None:
            made.append(prepared.jpeg)
    if not made:
        raise SystemExit(f"no JPEG portraits in {faces_dir}")
    return [made[i % len(made)] for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def in_process(photos: list[bytes]) -> tuple[float, list[float]]:
    from imageapi.core.faces.embedded import detect_jpeg

    latencies = []
    start = time.perf_counter()
    for data in photos:
        t = time.perf_counter()
        detect_jpeg(data)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - start, latencies


class Served:
    def __init__(self, workers: int, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "imageapi", "faces", "serve", "--bind", f"127.0.0.1:{self.port}",
             "--workers", str(workers)], env=python_env(data_dir), cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"imageapi faces serve did not start: {self.proc.stderr.read().decode()[-500:]}"
                                 if self.proc.stderr else "imageapi faces serve did not start")
            try:
                if httpx.get(self.url + "/api/health", timeout=5).json().get("ready") == workers:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("imageapi faces serve did not get ready within 120 s")
            time.sleep(0.2)

    def run(self, photos: list[bytes], concurrency: int) -> tuple[float, list[float]]:
        from imageapi.core.faces.apollo import ApolloClient

        async def go() -> tuple[float, list[float]]:
            latencies: list[float] = []
            queue = list(enumerate(photos))

            async with ApolloClient(self.url, timeout=300, concurrency=concurrency) as client:
                async def sender() -> None:
                    while queue:
                        i, data = queue.pop()
                        t = time.perf_counter()
                        await client.detect(data, f"{i:064x}")
                        latencies.append(time.perf_counter() - t)

                start = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(concurrency)))
                return time.perf_counter() - start, latencies

        return asyncio.run(go())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=0, help="requests in flight (0: one per worker)")
    parser.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "corpus" / "faces")
    args = parser.parse_args()
    try:
        import dlib  # noqa: F401
    except ImportError:
        print("needs the [faces] extra: pip install 'imageapi[faces]'")
        return 2
    print_header("imageapi faces serve vs in-process detection", args)
    photos = pictures(args.faces, args.photos)
    print(f"{len(photos)} pictures from {args.faces} "
          f"(mean {statistics.mean(len(p) for p in photos) / 1024:.0f} KiB, as imageapi sends them)\n", flush=True)
    in_process(photos[:2])  # load the models here first, as the servers' workers do before they answer
    results: dict[str, list[tuple[float, list[float]]]] = {"in-process": [], "serve 1 worker": [],
                                                           "serve 2 workers": []}
    with work_dir(args, "faceserve") as work:
        servers = {1: Served(1, work / "1"), 2: Served(2, work / "2")}
        try:
            for r in range(args.rounds):
                for name in results:
                    if args.wait_quiet:
                        wait_for_quiet(args.wait_quiet)
                    if name == "in-process":
                        out = in_process(photos)
                    else:
                        workers = int(name.split()[1])
                        out = servers[workers].run(photos, args.concurrency or workers)
                    results[name].append(out)
                    load = os.getloadavg()[0]
                    print(f"round {r + 1} {name:16} {len(photos) / out[0]:6.2f} photos/s  "
                          f"p50 {percentile(out[1], 0.5) * 1000:6.0f} ms  p95 {percentile(out[1], 0.95) * 1000:6.0f} ms"
                          f"  (load {load:.2f})", flush=True)
        finally:
            for s in servers.values():
                s.stop()
    print("\n== figures (median over rounds)")
    rates = {}
    for name, runs in results.items():
        rates[name] = statistics.median(len(photos) / wall for wall, _ in runs)
        lat = [x for _, lats in runs for x in lats]
        print(f"   {name:16} {rates[name]:6.2f} photos/s  p50 {percentile(lat, 0.5) * 1000:6.0f} ms  "
              f"p95 {percentile(lat, 0.95) * 1000:6.0f} ms")
    verdicts = Verdicts()
    one = rates["serve 1 worker"] / rates["in-process"]
    verdicts.check("serve with 1 worker / in-process", f"{one:.2f}x", ">= 0.85x", one >= 0.85)
    two = rates["serve 2 workers"] / rates["serve 1 worker"]
    verdicts.check("serve with 2 workers / 1 worker", f"{two:.2f}x", ">= 1.3x (2 free cores)", two >= 1.3)
    return verdicts.summary()


if __name__ == "__main__":
    sys.exit(main())
