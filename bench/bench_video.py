"""Video figures (issue 5): HLS in copy mode against a bare `ffmpeg -c copy -f null` of the same
file, HLS in transcode mode, and preview clips made per minute.

    .venv/bin/python -m bench.bench_video                 # 10-minute 1080p H.264 source (~3-6 min)
    .venv/bin/python -m bench.bench_video --minutes 1     # a quick look

Copy mode: each round times, on a fresh cache, the playlist request through a real server
(`GET /video/stream` over HTTP, to the first playable segment) and the run to its published end;
and the reference, ffmpeg reading the same file and copying its streams to nowhere. The rounds
alternate which goes first, with the file in the page cache; the median ratio of total times is
checked against the target (<= 1.3x). Transcode mode: one run on an MPEG-4 part 2 1080p source (no
reference: its cost is x264's). Previews: clips (and their GIFs) of the 1080p source, one at a time
as the watcher makes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    CpuMeter,
    Verdicts,
    base_parser,
    median,
    print_header,
    read_all,
    spread,
    wait_for_quiet,
    work_dir,
)

if TYPE_CHECKING:  # the scan's worker processes import this module: no aiohttp for them
    from aiohttp import web

TARGET_RATIO = 1.3
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
CHUNK_SECONDS = 30


def ffmpeg() -> str:
    from imageapi.core.ffmpeg import ffmpeg_path

    return ffmpeg_path()


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, timeout=3600)


# --------------------------------------------------------------------------------------------
# Sources (reused when their manifest matches)


def make_sources(folder: Path, minutes: float, transcode_seconds: float) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.json"
    params = {"minutes": minutes, "transcode_seconds": transcode_seconds, "version": 1}
    copy_src, enc_src = folder / "library" / "copy_1080p.mp4", folder / "library" / "mpeg4_1080p.mov"
    if manifest.exists() and json.loads(manifest.read_text()) == params and copy_src.exists() and enc_src.exists():
        return copy_src, enc_src
    copy_src.parent.mkdir(parents=True, exist_ok=True)
    ff = ffmpeg()
    print(f"   making the sources: {minutes:g} min of 1080p30 H.264 + AAC, {transcode_seconds:g} s of MPEG-4 ...",
          flush=True)
    # A 30 s chunk of a busy picture (noise keeps the bit rate near a phone's 12 Mb/s, 2 s GOP),
    # repeated by the concat demuxer without re-encoding.
    chunk = folder / "chunk.mp4"
    _run([ff, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
          "-i", "testsrc2=size=1920x1080:rate=30,noise=alls=12:allf=t", "-f", "lavfi",
          "-i", "sine=frequency=440:sample_rate=48000", "-t", str(CHUNK_SECONDS), "-c:v", "libx264",
          "-preset", "ultrafast", "-g", "60", "-b:v", "12M", "-maxrate", "14M", "-bufsize", "24M",
          "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", str(chunk)])
    repeats = max(1, round(minutes * 60 / CHUNK_SECONDS))
    listing = folder / "concat.txt"
    listing.write_text("".join(f"file '{chunk.name}'\n" for _ in range(repeats)))
    _run([ff, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
          "-c", "copy", "-movflags", "+faststart", str(copy_src)])
    _run([ff, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
          "-i", "testsrc2=size=1920x1080:rate=30,noise=alls=12:allf=t", "-f", "lavfi",
          "-i", "sine=frequency=440:sample_rate=48000", "-t", str(transcode_seconds), "-c:v", "mpeg4",
          "-q:v", "4", "-g", "60", "-c:a", "libmp3lame", "-b:a", "128k", str(enc_src)])
    chunk.unlink()
    manifest.write_text(json.dumps(params))
    return copy_src, enc_src


# --------------------------------------------------------------------------------------------
# A real server over the sources


@dataclass
class Live:
    base: str
    auth: dict[str, str]
    runner: web.AppRunner
    video_path: Path
    transcodes: int


async def start_server(root: Path, data: Path) -> Live:
    from aiohttp import web

    from imageapi.core.config import load_config
    from imageapi.core.db import connect
    from imageapi.core.libraries import get_library, sync_base_path
    from imageapi.core.pool import WorkerPool
    from imageapi.core.scan import ScanTarget, run_scan
    from imageapi.core.tokens import TokenService
    from imageapi.core.users import add_user, get_user, hash_password
    from imageapi.server.app import create_app

    shutil.rmtree(data, ignore_errors=True)
    config = load_config(environ={"IMAGEAPI_DATA_DIR": str(data), "BASE_PATH": str(root), "SECRET_KEY": SECRET,
                                  "WORKERS": "1"}, cwd=data.parent)
    db = await connect(config.database_path)
    pool = WorkerPool(1)
    try:
        await sync_base_path(db, config)
        await run_scan(db, config, [ScanTarget(await get_library(db, "main"))], "full", pool)
        await add_user(db, "bench", hash_password("bench-password"))
        user = await get_user(db, "bench")
    finally:
        pool.close()
        await db.close()
    assert user is not None
    runner = web.AppRunner(create_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = TokenService(SECRET).issue(user, 3600).token
    return Live(f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}, runner, config.video_path,
                config.video.max_transcodes)


async def hls_round(live: Live, rel: str) -> tuple[float, float, int]:
    """(seconds to the first playable playlist, seconds to the published end, segments) of one
    request on an empty cache, polling the playlist as a player does."""
    import httpx

    shutil.rmtree(live.video_path, ignore_errors=True)
    settle()
    async with httpx.AsyncClient(base_url=live.base, headers=live.auth, timeout=3600) as client:
        started = time.perf_counter()
        while True:
            r = await client.get("/video/stream", params={"path": rel})
            if r.status_code == 200:
                break
            if r.status_code != 503:
                raise RuntimeError(f"/video/stream answered {r.status_code}: {r.text}")
        first = time.perf_counter() - started
        while not r.text.endswith("#EXT-X-ENDLIST\n"):
            await asyncio.sleep(0.05)
            r = await client.get("/video/stream", params={"path": rel})
            r.raise_for_status()
        total = time.perf_counter() - started
    shutil.rmtree(live.video_path, ignore_errors=True)  # the next step must not inherit its pages
    return first, total, r.text.count("#EXTINF")


def settle() -> None:
    """Write back what earlier runs left dirty (a gigabyte per run): a run must not pay for the
    previous one's writeback."""
    os.sync()


def reference(src: Path) -> float:
    """ffmpeg reading the file and copying its streams to nowhere: the floor of any remux."""
    settle()
    started = time.perf_counter()
    _run([ffmpeg(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(src), "-map", "0:V:0",
          "-map", "0:a:0?", "-c", "copy", "-f", "null", "-"])
    return time.perf_counter() - started


def write_floor(src: Path, scratch: Path) -> float:
    """Writing the same number of bytes to the same disk (a plain copy of the file): what any
    design that caches segments pays on top of reading them."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    settle()
    started = time.perf_counter()
    shutil.copyfile(src, scratch / src.name)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return elapsed


def bare_hls(src: Path, scratch: Path) -> float:
    """ffmpeg alone writing the same HLS (imageapi's command, nothing around it): what packaging
    the streams as fMP4 segments and writing them to disk costs, apart from imageapi."""
    from imageapi.core.ffmpeg import probe
    from imageapi.core.hls import plan_for, segment_command

    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    cmd = segment_command(src, plan_for(probe(src)))
    settle()
    started = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=scratch, timeout=3600)
    elapsed = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return elapsed


async def previews_per_minute(src: Path, data: Path, count: int) -> tuple[float, float]:
    """Clips (with their GIFs) per minute, one at a time; and the seconds of the first one."""
    from imageapi.core.config import load_config
    from imageapi.core.ffmpeg import probe_async
    from imageapi.core.previews import make_previews

    config = load_config(environ={"IMAGEAPI_DATA_DIR": str(data)}, cwd=data.parent)
    duration = (await probe_async(src)).duration
    times = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        await make_previews(config, "main", f"bench/{i}/{src.name}", src, duration)
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    return count / elapsed * 60, median(times)


async def main_async(args: argparse.Namespace) -> int:
    verdicts = Verdicts()
    with work_dir(args, "video") as work:
        copy_src, enc_src = make_sources(work / "sources", args.minutes, args.transcode_seconds)
        size_mb = copy_src.stat().st_size / 1e6
        print(f"   copy source: {copy_src.name}, {size_mb:.0f} MB; transcode source: {enc_src.name}", flush=True)
        read_all([copy_src, enc_src])
        live = await start_server(copy_src.parent, work / "data")
        try:
            firsts, totals, refs, bares, copies, ratios, first_ratios, own = [], [], [], [], [], [], [], []
            for i in range(args.rounds):
                wait_for_quiet(args.wait_quiet)
                meter = CpuMeter().start()
                if i % 2 == 0:
                    ref = reference(copy_src)
                    first, total, segments = await hls_round(live, copy_src.name)
                    bare = bare_hls(copy_src, work / "bare")
                else:
                    bare = bare_hls(copy_src, work / "bare")
                    first, total, segments = await hls_round(live, copy_src.name)
                    ref = reference(copy_src)
                copied = write_floor(copy_src, work / "bare")
                meter.stop()
                copies.append(copied)
                firsts.append(first)
                totals.append(total)
                refs.append(ref)
                bares.append(bare)
                ratios.append(total / ref)
                first_ratios.append(first / ref)
                own.append(total / bare)
                others = meter.others_cores
                busy = f"  (machine busy: others used {others:.2f} cores)" if others > 0.5 else ""
                print(f"   round {i + 1}: HLS copy first segment {first:.3f} s, total {total:.3f} s "
                      f"({segments} segments); ffmpeg -c copy -f null {ref:.3f} s (ratio {total / ref:.2f}); "
                      f"bare ffmpeg -f hls {bare:.3f} s (ratio {total / bare:.2f}){busy}", flush=True)
            print(f"   copy mode, first playable segment: {spread(firsts)}")
            print(f"   copy mode, total: {spread(totals)}")
            print(f"   reference ffmpeg -c copy -f null: {spread(refs)}; bare ffmpeg -f hls: {spread(bares)}")
            print(f"   writing the file's bytes once (a copy): {spread(copies)}")
            ratio = median(ratios)
            verdicts.check("HLS copy mode, first playable segment vs ffmpeg -c copy -f null",
                           f"{median(first_ratios):.2f}x (median of rounds)", f"<= {TARGET_RATIO}x",
                           median(first_ratios) <= TARGET_RATIO)
            verdicts.check("HLS copy mode, total vs ffmpeg -c copy -f null", f"{ratio:.2f}x (median of rounds)",
                           f"<= {TARGET_RATIO}x", ratio <= TARGET_RATIO)
            print(f"   (imageapi's own share: total vs the bare ffmpeg -f hls run {median(own):.2f}x)")

            meter = CpuMeter().start()
            first, total, segments = await hls_round(live, enc_src.name)
            meter.stop()
            speed = args.transcode_seconds / total
            print(f"   transcode mode (MPEG-4 1080p -> H.264 veryfast, {live.transcodes} at once): first playable "
                  f"segment {first:.3f} s, total {total:.3f} s for {args.transcode_seconds:g} s of video "
                  f"({speed:.2f}x real time, {segments} segments; the machine's other users took "
                  f"{meter.others_cores:.2f} cores meanwhile)", flush=True)
        finally:
            await live.runner.cleanup()

        per_minute, each = await previews_per_minute(copy_src, work / "previews", args.clips)
        print(f"   preview clips (+ GIF) of the {args.minutes:g}-minute 1080p source: {per_minute:.1f} per minute "
              f"one at a time ({each:.2f} s each, median)", flush=True)
    return verdicts.summary()


def main() -> int:
    parser = base_parser(__doc__ or "")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the copy-mode source (10)")
    parser.add_argument("--transcode-seconds", type=float, default=60.0,
                        help="length of the transcode-mode source (60)")
    parser.add_argument("--clips", type=int, default=6, help="preview clips to make (6)")
    args = parser.parse_args()
    print_header("bench_video: HLS copy and transcode, preview clips", args)
    try:
        return asyncio.run(main_async(args))
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        print(f"cannot measure: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
