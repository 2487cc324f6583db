"""`imageapi thumbs` and `imageapi hash backfill`: jobs that work from the database alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imageapi.core.libraries import sentinel_path
from tests import dbq
from tests.media_factory import make_jpeg
from tests.test_cli import imageapi


@pytest.fixture()
def indexed(env_dirs: dict[str, Path]) -> dict[str, Path]:
    root = env_dirs["tmp"] / "lib"
    for i in range(5):
        make_jpeg(root / f"p{i}.jpg", seed=i)
    (root / "fake.jpg").write_bytes(b"PK\x03\x04 a zip, not a photo" * 4)
    assert imageapi("scan", str(root)).returncode == 0
    return {"root": root, "db": env_dirs["data"] / "imageapi.db", "thumbs": env_dirs["data"] / "thumbnails" / "main"}


def test_thumbs_makes_missing_ones_and_leaves_unsupported_alone(indexed: dict[str, Path]) -> None:
    thumbs = indexed["thumbs"]
    (thumbs / "p1.jpg").unlink()
    (thumbs / ".p2.jpg.tmp-123-abcdef01").write_bytes(b"half a jpeg")  # left by a kill -9
    res = imageapi("thumbs", "--json")
    assert res.returncode == 0, res.stderr
    counts = json.loads(res.stdout)
    assert (counts["made"], counts["unsupported"], counts["retried_unsupported"], counts["temp_files_removed"]) == (
        1, 0, 0, 1)
    assert (thumbs / "p1.jpg").stat().st_size > 0
    assert not (thumbs / ".p2.jpg.tmp-123-abcdef01").exists()
    assert sentinel_path(thumbs / "fake.jpg").exists()

    res = imageapi("thumbs", "--retry-unsupported", "--json")
    counts = json.loads(res.stdout)
    assert (counts["made"], counts["unsupported"], counts["retried_unsupported"]) == (0, 1, 1)
    assert sentinel_path(thumbs / "fake.jpg").exists()
    with dbq.connect(indexed["db"]) as conn:
        state, reason = conn.execute("SELECT thumb_state, thumb_reason FROM files WHERE rel_path='fake.jpg'").fetchone()
    assert state == "unsupported" and reason


def test_hash_backfill_goes_in_id_order_capped(indexed: dict[str, Path]) -> None:
    with dbq.connect(indexed["db"]) as conn:
        hashes = dict(conn.execute("SELECT id, content_hash FROM files"))
        conn.execute("UPDATE files SET content_hash = NULL")
    res = imageapi("hash", "backfill", "--max", "2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"hashed": 2, "failed": 0, "remaining": 4}
    with dbq.connect(indexed["db"]) as conn:
        now = dict(conn.execute("SELECT id, content_hash FROM files"))
    first_two = sorted(hashes)[:2]
    assert {i for i, h in now.items() if h} == set(first_two)
    assert all(now[i] == hashes[i] for i in first_two)

    with dbq.connect(indexed["db"]) as conn:
        gone = conn.execute("SELECT rel_path FROM files WHERE content_hash IS NULL ORDER BY id DESC").fetchone()[0]
    (indexed["root"] / gone).unlink()  # a file that went away since the scan
    res = imageapi("hash", "backfill", "--json")
    assert json.loads(res.stdout) == {"hashed": 3, "failed": 1, "remaining": 1}
    with dbq.connect(indexed["db"]) as conn:
        error = conn.execute("SELECT error FROM files WHERE rel_path = ?", (gone,)).fetchone()[0]
    assert "No such file" in error


def test_failed_rows_do_not_starve_the_backlog(indexed: dict[str, Path]) -> None:
    with dbq.connect(indexed["db"]) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM files ORDER BY id")]
        conn.execute("UPDATE files SET content_hash = NULL")
        first = conn.execute("SELECT rel_path FROM files WHERE id = ?", (ids[0],)).fetchone()[0]
    (indexed["root"] / first).unlink()
    assert json.loads(imageapi("hash", "backfill", "--max", "1", "--json").stdout)["failed"] == 1
    # The failed row no longer comes first: the next capped runs make progress.
    for _ in range(2):
        assert json.loads(imageapi("hash", "backfill", "--max", "1", "--json").stdout)["hashed"] == 1
