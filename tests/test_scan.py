"""The scan through the core API: first import, re-scan, quick-scan semantics, moves, removals."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from PIL import Image

from imageapi.core.config import Config, load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect
from imageapi.core.libraries import add_library, sentinel_path
from imageapi.core.pool import WorkerPool
from imageapi.core.scan import ScanReport, ScanTarget, run_scan
from tests.media_factory import make_jpeg


def backdate(p: Path, seconds: float = 3600) -> None:
    t = time.time() - seconds
    os.utime(p, (t, t))


def backdate_tree(root: Path, seconds: float = 3600) -> None:
    for d, _, _ in os.walk(root):
        backdate(Path(d), seconds)


class Lib:
    def __init__(self, db: aiosqlite.Connection, cfg: Config, root: Path, pool: WorkerPool) -> None:
        self.db, self.cfg, self.root, self.pool = db, cfg, root, pool

    async def scan(self, mode: str = "full", subtree: str = "") -> ScanReport:
        from imageapi.core.libraries import get_library

        lib = await get_library(self.db, "main")
        [report] = await run_scan(self.db, self.cfg, [ScanTarget(lib, subtree)], mode, self.pool)
        return report

    async def rows(self) -> dict[str, aiosqlite.Row]:
        async with self.db.execute("SELECT * FROM files") as cur:
            return {r["rel_path"]: r for r in await cur.fetchall()}

    def thumb(self, rel: str) -> Path:
        return self.cfg.thumbnails / "main" / rel


@pytest.fixture()
async def lib(env_dirs: dict[str, Path]) -> AsyncIterator[Lib]:
    root = env_dirs["tmp"] / "photos"
    root.mkdir()
    cfg = load_config(workers=2)
    db = await connect(cfg.database_path)
    await add_library(db, "main", root)
    pool = WorkerPool(2)
    try:
        yield Lib(db, cfg, root, pool)
    finally:
        pool.close()
        await db.close()


async def test_first_scan_indexes_hashes_and_thumbnails(lib: Lib) -> None:
    make_jpeg(lib.root / "2021" / "a.jpg", (640, 480), seed=1, taken="2021:06:01 10:11:12")
    make_jpeg(lib.root / "2021" / "trip" / "b.JPG", (480, 640), seed=2, orientation=6)
    make_jpeg(lib.root / "c.jpeg", (300, 200), seed=3, taken=None)
    (lib.root / "notes.txt").write_text("not media")
    report = await lib.scan()
    c = report.counts
    assert (c.scanned, c.added, c.changed, c.removed, c.hashed, c.thumbs_made, c.errors) == (3, 3, 0, 0, 3, 3, 0)
    rows = await lib.rows()
    assert set(rows) == {"2021/a.jpg", "2021/trip/b.JPG", "c.jpeg"}
    a = rows["2021/a.jpg"]
    assert a["taken_at"] == "2021-06-01T10:11:12" and a["taken_at_source"] == "exif_original"
    assert (a["width"], a["height"], a["make"], a["model"]) == (640, 480, "TestCam", "T1")
    assert len(a["content_hash"]) == 64 and a["dir"] == "2021" and a["kind"] == "image"
    assert rows["c.jpeg"]["taken_at_source"] == "mtime"
    for rel in rows:
        with Image.open(lib.thumb(rel)) as im:
            assert im.format == "JPEG" and max(im.size) <= 400
    with Image.open(lib.thumb("2021/trip/b.JPG")) as im:  # orientation 6: stored 480x640 shows landscape
        assert im.width > im.height


async def test_unchanged_rescan_does_no_work(lib: Lib) -> None:
    for i in range(5):
        make_jpeg(lib.root / f"d{i}" / f"p{i}.jpg", seed=i)
    await lib.scan()
    before = {k: tuple(v) for k, v in (await lib.rows()).items()}
    for mode in ("full", "quick"):
        c = (await lib.scan(mode)).counts
        assert (c.added, c.changed, c.removed, c.moved, c.hashed) == (0, 0, 0, 0, 0), mode
    after = await lib.rows()
    assert {k: v["id"] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


async def test_quick_scan_finds_new_renamed_moved_and_deleted(lib: Lib) -> None:
    for i in range(4):
        make_jpeg(lib.root / f"d{i}" / f"p{i}.jpg", seed=i)
    make_jpeg(lib.root / "keep" / "edit.jpg", seed=10)
    backdate_tree(lib.root)
    await lib.scan()
    ids = {k: v["id"] for k, v in (await lib.rows()).items()}
    # Tags follow content: tag p1 through its hash.
    async with transaction(lib.db):
        await lib.db.execute("INSERT INTO tags (name, created_at) VALUES ('beach', 'now')")
        await lib.db.execute(
            "INSERT INTO content_tags (content_hash, tag_id, created_at) "
            "SELECT content_hash, 1, 'now' FROM files WHERE rel_path = 'd1/p1.jpg'")

    make_jpeg(lib.root / "d0" / "new.jpg", seed=20)                       # created
    os.rename(lib.root / "d1" / "p1.jpg", lib.root / "d1" / "renamed.jpg")  # renamed
    (lib.root / "d3" / "sub").mkdir()
    os.rename(lib.root / "d2" / "p2.jpg", lib.root / "d3" / "sub" / "p2.jpg")  # moved to a new folder
    os.unlink(lib.root / "d0" / "p0.jpg")                                 # deleted
    # Edited in place: same folder, same name -> no folder mtime change; waits for the full scan.
    make_jpeg(lib.root / "keep" / "edit.jpg", seed=11, size=(330, 240))
    # A late cron run: the changes are old (even backdated past the last scan), still found.
    for d in ("d0", "d1", "d2", "d3", "d3/sub"):
        backdate(lib.root / d, 7200)

    c = (await lib.scan("quick")).counts
    assert (c.added, c.moved, c.removed, c.changed) == (1, 2, 1, 0)
    rows = await lib.rows()
    assert set(rows) == {"d0/new.jpg", "d1/renamed.jpg", "d3/sub/p2.jpg", "d3/p3.jpg", "keep/edit.jpg"}
    assert rows["d1/renamed.jpg"]["id"] == ids["d1/p1.jpg"]   # identity kept
    assert rows["d3/sub/p2.jpg"]["id"] == ids["d2/p2.jpg"]
    assert rows["d3/sub/p2.jpg"]["dir"] == "d3/sub"
    assert not lib.thumb("d1/p1.jpg").exists() and lib.thumb("d1/renamed.jpg").exists()
    assert not lib.thumb("d0/p0.jpg").exists()
    async with lib.db.execute(
        "SELECT f.rel_path FROM content_tags t JOIN files f USING (content_hash)") as cur:
        assert [r[0] for r in await cur.fetchall()] == ["d1/renamed.jpg"]

    c = (await lib.scan("full")).counts
    assert (c.added, c.changed, c.removed, c.moved) == (0, 1, 0, 0)
    assert (await lib.rows())["keep/edit.jpg"]["width"] == 330


async def test_subtree_scan_touches_only_that_folder(lib: Lib) -> None:
    make_jpeg(lib.root / "a" / "1.jpg", seed=1)
    make_jpeg(lib.root / "b" / "2.jpg", seed=2)
    await lib.scan()
    os.unlink(lib.root / "b" / "2.jpg")
    make_jpeg(lib.root / "a" / "3.jpg", seed=3)
    c = (await lib.scan("full", subtree="a")).counts
    assert (c.scanned, c.added, c.removed) == (2, 1, 0)
    assert "b/2.jpg" in await lib.rows()
    assert (await lib.scan("full")).counts.removed == 1


async def test_empty_root_is_not_taken_for_mass_removal(lib: Lib) -> None:
    make_jpeg(lib.root / "a" / "1.jpg", seed=1)
    await lib.scan()
    shutil.rmtree(lib.root / "a")
    report = await lib.scan()
    assert report.counts.removed == 0 and "mounted" in report.warnings[0]
    assert "a/1.jpg" in await lib.rows()


async def test_unreadable_folder_keeps_its_rows(lib: Lib, monkeypatch: pytest.MonkeyPatch) -> None:
    make_jpeg(lib.root / "ok" / "1.jpg", seed=1)
    make_jpeg(lib.root / "nas" / "2.jpg", seed=2)
    await lib.scan()
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: (_ for _ in ()).throw(OSError(5, "Input/output error"))
                        if str(p).endswith("nas") else real(p))
    report = await lib.scan()
    assert report.counts.removed == 0 and report.errors == [("nas", "Input/output error")]
    assert "nas/2.jpg" in await lib.rows()


async def test_unsupported_files_get_sentinel_and_reason(lib: Lib) -> None:
    (lib.root / "fake.jpg").write_bytes(b"%PDF-1.4 not a jpeg at all" * 10)
    (lib.root / "empty.jpg").write_bytes(b"")
    make_jpeg(lib.root / "good.jpg", seed=1)
    c = (await lib.scan()).counts
    assert (c.added, c.thumbs_made, c.thumbs_unsupported) == (3, 1, 2)
    rows = await lib.rows()
    for rel in ("fake.jpg", "empty.jpg"):
        assert rows[rel]["thumb_state"] == "unsupported" and rows[rel]["thumb_reason"]
        assert rows[rel]["error"]
        assert sentinel_path(lib.thumb(rel)).exists() and not lib.thumb(rel).exists()
    # Not retried by the next scan (unchanged), even a full one.
    assert (await lib.scan()).counts.thumbs_unsupported == 0


async def test_corpus_scan_reads_everything_and_survives_bad_files(lib: Lib, corpus: Path) -> None:
    shutil.copytree(corpus, lib.root / "corpus")
    report = await lib.scan()
    rows = await lib.rows()
    media = [p for p in (lib.root / "corpus").rglob("*") if p.is_file() and p.suffix.lower() not in (".json", ".md")]
    assert len(rows) == len(media) == report.counts.scanned
    assert all(r["content_hash"] for r in rows.values() if r["size"] > 0)
    for rel, row in rows.items():
        if rel.startswith("corpus/bad/"):
            # Every bad file is recorded: unreadable content has a reason on its row.
            assert row["thumb_state"] in ("unsupported", "done"), rel
            if row["thumb_state"] != "done":
                assert row["error"] and row["thumb_reason"], rel
        elif not rel.endswith(".cr3"):
            assert row["thumb_state"] == "done", (rel, row["thumb_reason"])
    assert rows["corpus/raw/Canon_M50_nopreview.cr3"]["thumb_state"] == "unsupported"
    gps = rows["corpus/jpeg/gps_DSCN0010.jpg"]
    assert abs(gps["gps_lat"] - 43.4674483333333) < 1e-6 and abs(gps["gps_lon"] - 11.8851266666639) < 1e-6
    assert rows["corpus/video/clip_6s.mp4"]["duration"] == pytest.approx(6, abs=0.1)


async def test_last_seen_moves_with_each_full_scan_without_rewriting_rows(lib: Lib) -> None:
    from imageapi.core.files import describe_row, get_file_row
    from imageapi.core.libraries import get_library

    make_jpeg(lib.root / "a" / "1.jpg", seed=1)
    await lib.scan()
    main = await get_library(lib.db, "main")
    first = describe_row(lib.cfg, main, await get_file_row(lib.db, main, "a/1.jpg"))
    assert first["first_seen"] <= first["last_seen"]
    stored = (await lib.rows())["a/1.jpg"]["last_seen"]
    await lib.scan()
    again = describe_row(lib.cfg, main, await get_file_row(lib.db, main, "a/1.jpg"))
    assert again["first_seen"] == first["first_seen"] and again["last_seen"] > first["last_seen"]
    assert (await lib.rows())["a/1.jpg"]["last_seen"] == stored  # the row itself was not rewritten


async def test_full_scan_compares_only_folders_whose_fingerprint_moved(
    lib: Lib, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imageapi.core.scan as scan_mod

    for i in range(3):
        make_jpeg(lib.root / f"d{i}" / "p.jpg", seed=i)
    backdate_tree(lib.root)
    await lib.scan()
    loaded: list[set[str] | None] = []
    real = scan_mod._load_known

    async def spy(db, library, subtree, dirs):  # type: ignore[no-untyped-def]
        loaded.append(None if dirs is None else set(dirs))
        return await real(db, library, subtree, dirs)

    monkeypatch.setattr(scan_mod, "_load_known", spy)
    await lib.scan()
    assert loaded == [set()]  # nothing moved: no file row read back
    # An in-place edit (folder mtime unchanged) moves d1's fingerprint only.
    make_jpeg(lib.root / "d1" / "p.jpg", seed=7, size=(200, 100))
    backdate(lib.root / "d1", 3600)
    c = (await lib.scan()).counts
    assert loaded[-1] == {"d1"} and c.changed == 1


async def test_full_scan_removes_rows_of_folders_it_never_recorded(lib: Lib) -> None:
    make_jpeg(lib.root / "keep" / "a.jpg", seed=1)
    make_jpeg(lib.root / "gone" / "b.jpg", seed=2)
    await lib.scan()
    # As after a scan killed before it recorded its folders: rows exist, the folder is unknown.
    async with transaction(lib.db):
        await lib.db.execute("DELETE FROM dirs")
    shutil.rmtree(lib.root / "gone")
    c = (await lib.scan()).counts
    assert c.removed == 1 and set(await lib.rows()) == {"keep/a.jpg"}


async def test_scan_indexes_every_raw_container(lib: Lib) -> None:
    # One file of each container read outside TIFF (and an IIQ), as a camera names them.
    from tests import raw_factory as rf

    files = {
        "minolta/PICT0001.MRW": rf.make_mrw(),
        "canon/CRW_0001.CRW": rf.make_crw(rotation=90),
        "sigma/IMG00001.X3F": rf.make_x3f(exif=True, model="SIGMA DP2"),
        "phaseone/CF000001.IIQ": rf.make_iiq(),
        "contax/N0000001.RAW": rf.make_kyocera(),
        "minolta/placeholder.mrw": rf.make_mrw((1, 1)),
    }
    for rel, data in files.items():
        (lib.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (lib.root / rel).write_bytes(data)
    c = (await lib.scan()).counts
    assert (c.added, c.thumbs_made, c.thumbs_unsupported) == (6, 4, 2)
    rows = await lib.rows()
    expected = {   # rel: (make, model, taken_at, width, height, thumbnail size)
        "minolta/PICT0001.MRW": ("KONICA MINOLTA", "DiMAGE A2", "2004-05-06T07:08:09", 3264, 2448, (400, 265)),
        "canon/CRW_0001.CRW": ("Canon", "Canon EOS 10D", "2003-04-05T06:07:08", 3072, 2048, (267, 400)),
        "sigma/IMG00001.X3F": ("SIGMA", "SIGMA DP2", "2005-03-04T12:34:56", 2268, 1512, (400, 266)),
        "phaseone/CF000001.IIQ": ("Phase One", "P 45+", "2009-10-11T12:13:14", 7216, 5412, (400, 300)),
    }
    for rel, (make, model, taken, width, height, thumb) in expected.items():
        row = rows[rel]
        assert row["kind"] == "raw" and row["thumb_state"] == "done", rel
        assert (row["make"], row["model"], row["taken_at"], row["width"], row["height"]) == \
            (make, model, taken, width, height)
        assert row["taken_at_source"] == "exif_original"
        with Image.open(lib.thumb(rel)) as im:
            assert im.format == "JPEG" and im.size == thumb, rel
    contax = rows["contax/N0000001.RAW"]
    assert (contax["make"], contax["model"], contax["taken_at"]) == ("KYOCERA", "N DIGITAL", "2002-11-12T13:14:15")
    assert contax["thumb_state"] == "unsupported" and "no embedded preview" in contax["thumb_reason"]
    tiny = rows["minolta/placeholder.mrw"]
    assert tiny["thumb_state"] == "unsupported" and "placeholder" in tiny["thumb_reason"]
    for rel in ("contax/N0000001.RAW", "minolta/placeholder.mrw"):
        assert sentinel_path(lib.thumb(rel)).exists() and not lib.thumb(rel).exists()
