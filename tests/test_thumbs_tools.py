"""A sentinel is not forever when the tools change: the tools (and versions) a video or RAW was
found unsupported with are recorded, and such files are tried again, by themselves, when the tools
there now differ. Run with two real ffmpeg builds (Debian's and the imageio-ffmpeg package's)."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imageapi.core import ffmpeg_caps
from imageapi.core.config import load_config
from imageapi.core.db import apply_migrations, connect, connect_sync
from imageapi.core.libraries import add_library, sentinel_path
from imageapi.core.maintenance import make_missing_thumbnails, retry_new_tools
from imageapi.core.migrations import MIGRATIONS
from imageapi.core.pool import WorkerPool
from tests.media_factory import make_jpeg
from tests.test_scan import Lib
from tests.test_video_support import ffmpeg_binaries, make_video

BINARIES = ffmpeg_binaries()
two_builds = pytest.mark.skipif(len(BINARIES) < 2, reason="needs two ffmpeg builds: Debian's ffmpeg "
                                "(apt-get install ffmpeg) and the imageio-ffmpeg package's")


@pytest.fixture()
async def lib(env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Lib]:
    monkeypatch.setenv("IMAGEAPI_FFPROBE", "none")   # one build at a time: its own banner
    root = env_dirs["tmp"] / "photos"
    root.mkdir()
    cfg = load_config(workers=1)
    db = await connect(cfg.database_path)
    await add_library(db, "main", root)
    holder = Lib(db, cfg, root, WorkerPool(1))
    try:
        yield holder
    finally:
        holder.pool.close()
        await db.close()


def use(lib: Lib, monkeypatch: pytest.MonkeyPatch, path: str) -> str:
    """Switch to another ffmpeg (as an upgrade or a new IMAGEAPI_FFMPEG does): new workers."""
    monkeypatch.setenv("IMAGEAPI_FFMPEG", path)
    lib.pool.close()
    lib.pool = WorkerPool(1)
    return f"ffmpeg {ffmpeg_caps.version(path)}, no ffprobe"


def broken_video(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return path


@two_builds
async def test_sentinels_are_tried_again_when_ffmpeg_changes(lib: Lib, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = list(BINARIES.values())[:2]
    broken_video(lib.root / "broken.mp4")
    (lib.root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    make_jpeg(lib.root / "fine.jpg", (64, 48))
    tools_a = use(lib, monkeypatch, a)
    await lib.scan()
    rows = await lib.rows()
    assert (rows["broken.mp4"]["thumb_state"], rows["broken.mp4"]["thumb_tool"]) == ("unsupported", tools_a)
    assert (rows["broken.jpg"]["thumb_state"], rows["broken.jpg"]["thumb_tool"]) == ("unsupported", None)
    sentinel = sentinel_path(lib.thumb("broken.mp4"))
    assert sentinel.exists()

    # Same tools: nothing is tried again, by the scan or by `thumbs`.
    assert (await retry_new_tools(lib.db, lib.cfg, lib.pool)).retried_new_tools == 0
    counts = await make_missing_thumbnails(lib.db, lib.cfg, lib.pool)
    assert (counts.retried_new_tools, counts.retried_unsupported, counts.made) == (0, 0, 0)

    # Another ffmpeg: the video alone is tried again (the JPEG's sentinel has nothing to do with it).
    tools_b = use(lib, monkeypatch, b)
    counts = await make_missing_thumbnails(lib.db, lib.cfg, lib.pool)
    assert (counts.retried_new_tools, counts.retried_unsupported, counts.unsupported) == (1, 0, 1)
    rows = await lib.rows()
    assert (rows["broken.mp4"]["thumb_state"], rows["broken.mp4"]["thumb_tool"]) == ("unsupported", tools_b)
    assert rows["broken.jpg"]["thumb_tool"] is None and sentinel.exists()
    # ... once: the new tools are recorded.
    assert (await make_missing_thumbnails(lib.db, lib.cfg, lib.pool)).retried_new_tools == 0

    # Back to the first one, through a scan (as the watcher's tick runs it).
    use(lib, monkeypatch, a)
    assert (await retry_new_tools(lib.db, lib.cfg, lib.pool)).retried_new_tools == 1
    use(lib, monkeypatch, b)
    await lib.scan()
    assert (await lib.rows())["broken.mp4"]["thumb_tool"] == tools_b
    # --retry-unsupported still tries everything.
    counts = await make_missing_thumbnails(lib.db, lib.cfg, lib.pool, retry_unsupported=True)
    assert (counts.retried_unsupported, counts.retried_new_tools, counts.unsupported) == (2, 0, 2)


def _apv_pair() -> tuple[str, str] | None:
    """An ffmpeg that cannot decode APV (Samsung's 2025 codec) and one that can encode and decode it."""
    caps = {path: ffmpeg_caps.caps(path) for path in BINARIES.values()}
    old = next((p for p, c in caps.items() if "apv" not in c.decoders), None)
    new = next((p for p, c in caps.items() if {"apv"} <= c.decoders and "liboapv" in c.encoders), None)
    return (old, new) if old and new else None


async def test_a_video_only_a_newer_ffmpeg_reads_gets_its_thumbnail_after_the_upgrade(
        lib: Lib, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = _apv_pair()
    if pair is None:
        pytest.skip(f"needs an ffmpeg without the APV decoder and one with it; here: {', '.join(BINARIES)}")
    old, new = pair
    subprocess.run([new, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=320x240:rate=25:duration=4", "-c:v", "liboapv", "-pix_fmt", "yuv422p10le",
                    str(lib.root / "samsung.mkv")], check=True, timeout=120)
    use(lib, monkeypatch, old)
    report = await lib.scan()
    assert report.counts.thumbs_unsupported == 1
    row = (await lib.rows())["samsung.mkv"]
    assert "decoder" in row["thumb_reason"].lower() or "codec" in row["thumb_reason"].lower()
    use(lib, monkeypatch, new)
    report = await lib.scan()
    assert report.counts.scanned == 1 and report.counts.changed == 0   # the file itself did not change
    row = (await lib.rows())["samsung.mkv"]
    assert (row["thumb_state"], row["thumb_reason"], row["thumb_tool"]) == ("done", None, None)
    assert lib.thumb("samsung.mkv").read_bytes().startswith(b"\xff\xd8")
    assert not sentinel_path(lib.thumb("samsung.mkv")).exists()


async def test_sentinels_from_before_tools_were_recorded_are_tried_once(
        env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A database of an older imageapi, whose ffmpeg 5.1 frame grabs all failed: after the upgrade
    each video's thumbnail is made by the next scan (or `thumbs`), without --retry-unsupported."""
    cfg = load_config(workers=1)
    root = env_dirs["tmp"] / "photos"
    video = make_video(root / "clip.mp4", 4.0)
    make_jpeg(root / "a.jpg", (64, 48))
    cfg.database_path.parent.mkdir(parents=True)
    conn = connect_sync(cfg.database_path, migrate=False)
    apply_migrations(conn, [m for m in MIGRATIONS if m.version < 8])
    conn.execute("INSERT INTO libraries (name, root, created_at) VALUES ('main', ?, '2024-01-01')", (str(root),))
    st = video.stat()
    for rel, kind, size, mtime in (("clip.mp4", "video", st.st_size, st.st_mtime_ns),
                                   ("gone.jpg", "image", 1, 1)):
        conn.execute("INSERT INTO files (library_id, rel_path, dir, kind, size, mtime_ns, thumb_state, thumb_reason, "
                     "first_seen, last_seen) VALUES (1, ?, '', ?, ?, ?, 'unsupported', 'no video frame: Option "
                     "autorotate (automatically insert correct rotate filters) cannot be applied to output url "
                     "3.000', '2024-01-01', '2024-01-01')", (rel, kind, size, mtime))
    conn.close()
    sentinel = sentinel_path(cfg.thumbnails / "main" / "clip.mp4")
    sentinel.parent.mkdir(parents=True)
    sentinel.touch()

    db = await connect(cfg.database_path)   # migration 8
    pool = WorkerPool(1)
    try:
        counts = await make_missing_thumbnails(db, cfg, pool)
        assert (counts.retried_new_tools, counts.made) == (1, 1)   # the video; the image row is not a tool's
        async with db.execute("SELECT rel_path, thumb_state, thumb_tool FROM files ORDER BY rel_path") as cur:
            rows = [tuple(r) for r in await cur.fetchall()]
        assert rows == [("clip.mp4", "done", None), ("gone.jpg", "unsupported", None)]
        assert not sentinel.exists() and (cfg.thumbnails / "main" / "clip.mp4").exists()
    finally:
        pool.close()
        await db.close()
    with sqlite3.connect(cfg.database_path) as conn:
        plan = " ".join(str(r) for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM files WHERE thumb_state = 'unsupported' AND kind = 'video' "
            "AND thumb_tool IS NOT NULL AND thumb_tool IS NOT 'x'"))
    assert "files_unsupported_by_tool" in plan   # the scans' check costs an index lookup
