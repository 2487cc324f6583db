"""The walker: what a full and a quick walk list, and what the quick one leaves alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from imageapi.core.config import DEFAULT_IGNORE
from imageapi.core.kinds import IgnoreRules
from imageapi.core.walk import Walker


def touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def age(p: Path, seconds: float = 100) -> None:
    """Push a folder's mtime into the past so it is not 'racy' (see walk.RACY_SECONDS)."""
    t = time.time() - seconds
    os.utime(p, (t, t))


def age_tree(root: Path) -> None:
    for d, _, _ in os.walk(root):
        age(Path(d))


def walker(root: Path) -> Walker:
    return Walker(str(root), IgnoreRules(DEFAULT_IGNORE))


def test_full_walk_indexes_media_and_skips_clutter(tmp_path: Path) -> None:
    for rel in ["a.jpg", "b/c.HEIC", "b/d/e.nef", "v/clip.MOV", "notes.txt", "@eaDir/a.jpg/SYNOPHOTO.jpg",
                "#recycle/old.jpg", ".hidden/x.jpg", "b/._c.HEIC", "b/.DS_Store", "#snapshot/s.jpg"]:
        touch(tmp_path / rel)
    res = walker(tmp_path).full()
    assert sorted(res.files) == ["a.jpg", "b/c.HEIC", "b/d/e.nef", "v/clip.MOV"]
    assert {e.kind for e in res.files.values()} == {"image", "heic", "raw", "video"}
    assert set(res.dirs) == {"", "b", "b/d", "v"}


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "secret.jpg")
    lib = tmp_path / "lib"
    touch(lib / "a.jpg")
    (lib / "link").symlink_to(outside)
    (lib / "l.jpg").symlink_to(outside / "secret.jpg")
    assert sorted(walker(lib).full().files) == ["a.jpg"]


def test_quick_walk_lists_only_changed_folders(tmp_path: Path) -> None:
    for i in range(5):
        touch(tmp_path / f"d{i}" / "sub" / f"p{i}.jpg")
    age_tree(tmp_path)
    first = walker(tmp_path).full()
    known = dict(first.dirs)
    assert all(m > 0 for m in known.values())

    # Nothing changed: no folder is listed.
    res = walker(tmp_path).quick(known)
    assert res.listed == set() and res.files == {}

    # A new file deep down, a file renamed, a folder moved in from elsewhere, a folder deleted.
    touch(tmp_path / "d1" / "sub" / "new.jpg")
    os.rename(tmp_path / "d2" / "sub" / "p2.jpg", tmp_path / "d2" / "sub" / "renamed.jpg")
    touch(tmp_path.parent / "elsewhere" / "deep" / "m.jpg")
    os.rename(tmp_path.parent / "elsewhere", tmp_path / "d3" / "moved_in")
    import shutil

    shutil.rmtree(tmp_path / "d4")
    res = walker(tmp_path).quick(known)
    assert res.listed == {"", "d1/sub", "d2/sub", "d3", "d3/moved_in", "d3/moved_in/deep"}
    assert set(res.files) == {"d1/sub/new.jpg", "d1/sub/p1.jpg", "d2/sub/renamed.jpg", "d3/moved_in/deep/m.jpg"}
    assert res.gone_dirs == {"d4", "d4/sub"}


def test_racy_folder_mtime_is_not_trusted(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x.jpg")
    res = walker(tmp_path).full()
    # Just written: remembered as 0, so the next quick walk lists it again.
    assert res.dirs["a"] == 0
    assert "a" in walker(tmp_path).quick(res.dirs).listed


def test_unreadable_folder_is_an_error(tmp_path: Path, monkeypatch) -> None:
    touch(tmp_path / "ok" / "a.jpg")
    touch(tmp_path / "locked" / "b.jpg")
    real_scandir = os.scandir

    def scandir(path):  # a NAS folder we may not read (root could read a chmod 0 one)
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    res = walker(tmp_path).full()
    assert res.errors == [("locked", "Permission denied")]
    assert "locked" not in res.listed and "locked" not in res.dirs
    assert set(res.files) == {"ok/a.jpg"}
