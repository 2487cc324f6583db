"""The embedded face backend end to end: FACE_BACKEND and its default, the real dlib detector run
by the backlog, `faces drain` and `imageapi worker` on the corpus portraits (faces found, bound by
people tags, the model stored per face), its failure classes, similarity only within one model,
and `faces reindex --model` carrying names and drawn boxes over to the new faces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imageapi.core.config import load_config
from imageapi.core.database import transaction
from imageapi.core.db import Connection, connect, utcnow
from imageapi.core.drainer import Drainer
from imageapi.core.errors import ConfigError
from imageapi.core.faces.apollo import DetectedFace, Detection
from imageapi.core.faces.backlog import FacePasses, Prepared
from imageapi.core.faces.detectors import EmbeddedDetector
from imageapi.core.faces.embedded import MODEL, available
from imageapi.core.faces.embeddings import from_blob
from imageapi.core.faces.people import create_person, draw_face
from imageapi.core.faces.reindex import iou, mark_for_reindex
from imageapi.core.faces.settings import FaceSettings, face_settings_from_env
from imageapi.core.faces.store import insert_detection
from imageapi.core.libraries import add_library
from imageapi.core.pool import WorkerPool
from tests.apollo_standin import insert_rows

pytestmark = pytest.mark.skipif(available() is not None, reason="pip install 'imageapi[faces]'")

ROOT = Path(__file__).resolve().parent.parent
PORTRAITS = ("obama.jpg", "obama2.jpg", "biden.jpg", "obama_and_biden_side_by_side.jpg")


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.close()


@pytest.fixture()
async def db(env_dirs: dict[str, Path]) -> AsyncIterator[Connection]:
    conn = await connect(load_config().database)
    yield conn
    await conn.close()


def embedded(**kw: Any) -> FaceSettings:
    return replace(face_settings_from_env({"FACE_BACKEND": "embedded"}), **kw)


async def library(db: Connection, root: Path, corpus: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Corpus portraits indexed (hashed); rel -> content hash."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(corpus / "faces" / name, root / name)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, list(names))
    async with db.execute("SELECT rel_path, content_hash FROM files") as cur:
        return {r[0]: r[1] for r in await cur.fetchall()}


async def tag(db: Connection, content_hash: str, *names: str) -> None:
    async with transaction(db):
        for name in names:
            await db.execute("INSERT INTO tags (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                             (name, utcnow()))
            await db.execute("INSERT INTO content_tags (content_hash, tag_id, created_at) "
                             "SELECT ?, id, ? FROM tags WHERE name = ? ON CONFLICT DO NOTHING",
                             (content_hash, utcnow(), name))


async def faces_of(db: Connection, content_hash: str) -> list[tuple]:
    """(x, model, person name, bound_by) of the content's faces, left to right."""
    async with db.execute(
        "SELECT f.x, f.model, p.name, f.bound_by FROM faces f LEFT JOIN persons p ON p.id = f.person_id "
        "WHERE f.content_hash = ? ORDER BY f.x", (content_hash,)
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


# -- settings ------------------------------------------------------------------------------------

def test_backend_setting_default_and_checks() -> None:
    auto = face_settings_from_env({})
    assert auto.active == "embedded" and auto.enabled and "installed" in auto.backend_reason
    assert auto.autobind_min_cos == 0.9          # dlib's own threshold (bench/faces_quality.py)
    apollo = face_settings_from_env({"APOLLO_FACE_API_BASE_URL": "http://apollo:8000"})
    assert apollo.active == "apollo" and "http://apollo:8000" in apollo.backend_reason
    assert apollo.autobind_min_cos == 0.4
    forced = face_settings_from_env({"APOLLO_FACE_API_BASE_URL": "http://apollo:8000", "FACE_BACKEND": "Embedded"})
    assert forced.active == "embedded"
    off = face_settings_from_env({"FACE_BACKEND": "off"})
    assert not off.enabled and "FACE_BACKEND=off" in off.disabled_message
    tuned = face_settings_from_env({"FACE_UPSAMPLE": "0", "FACE_MIN_SIZE_PX": "80", "FACE_MIN_SCORE": "0.5"})
    assert (tuned.upsample, tuned.min_size_px, tuned.min_score) == (0, 80, 0.5)
    for env in ({"FACE_BACKEND": "dlib"}, {"FACE_BACKEND": "apollo"}):
        with pytest.raises(ConfigError) as info:
            face_settings_from_env(env)
        assert info.value.setting == "FACE_BACKEND"
    for name, value in (("FACE_UPSAMPLE", "4"), ("FACE_MIN_SIZE_PX", "0"), ("FACE_MIN_SCORE", "x")):
        with pytest.raises(ConfigError) as info:
            face_settings_from_env({name: value})
        assert info.value.setting == name


def imageapi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imageapi", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture()
def env(env_dirs: dict[str, Path]) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("APOLLO_", "FACE_"))}
    out.update({"WORKERS": "2", "PYTHONPATH": str(ROOT)})
    return out


def test_embedded_without_its_packages_is_exit_2_with_the_pip_command(env: dict[str, str], tmp_path: Path) -> None:
    # A dlib that cannot be imported, first on the path.
    fake = tmp_path / "nodlib" / "dlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no dlib here', name='dlib')\n")
    e = {**env, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}
    res = imageapi({**e, "FACE_BACKEND": "embedded"}, "faces", "status")
    assert res.returncode == 2, res.stderr
    assert "FACE_BACKEND" in res.stderr and "pip install 'imageapi[faces]'" in res.stderr
    assert res.stderr.strip().count("\n") == 0
    # Unset, it falls back to off and says why, once.
    res = imageapi(e, "faces", "status")
    assert res.returncode == 0 and "disabled" in res.stdout and "imageapi[faces]" in res.stdout
    res = imageapi(e, "doctor", "--json")
    check = next(c for c in json.loads(res.stdout)["checks"] if c["name"] == "face detection")
    assert not check["ok"] and check["detail"].startswith("off:") and "imageapi[faces]" in check["fix"]


def test_doctor_and_status_say_which_backend_and_why(env: dict[str, str]) -> None:
    res = imageapi(env, "doctor", "--json")
    checks = [c for c in json.loads(res.stdout)["checks"] if c["name"] == "face detection"]
    assert len(checks) == 1 and checks[0]["ok"] and checks[0]["detail"].startswith("embedded:")
    res = imageapi(env, "faces", "status")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("backend embedded:") == 1
    res = imageapi({**env, "APOLLO_FACE_API_BASE_URL": "http://127.0.0.1:9"}, "faces", "status", "--json")
    assert json.loads(res.stdout)["backend"] == "apollo"


# -- the real detector through the backlog ---------------------------------------------------------

async def test_the_backlog_finds_the_portrait_faces_and_binds_them_by_tags(
        db: Connection, pool: WorkerPool, tmp_path: Path, corpus: Path) -> None:
    h = await library(db, tmp_path / "lib", corpus, PORTRAITS)
    await create_person(db, "Barack Obama")
    await create_person(db, "Joe Biden")
    await tag(db, h["obama.jpg"], "Barack Obama")
    await tag(db, h["biden.jpg"], "Joe Biden")
    await tag(db, h["obama_and_biden_side_by_side.jpg"], "Barack Obama", "Joe Biden")
    async with FacePasses(db, pool, embedded()) as passes:
        assert isinstance(passes.client, EmbeddedDetector)
        rep = await passes.tick(sweep="full")
    assert (rep.faces.detected, rep.faces.faces_found) == (4, 5)
    assert rep.faces.transient_failures == rep.faces.permanent_failures == 0
    async with db.execute("SELECT DISTINCT model FROM faces") as cur:
        assert [r[0] for r in await cur.fetchall()] == [MODEL]
    async with db.execute("SELECT DISTINCT model FROM face_scans") as cur:
        assert [r[0] for r in await cur.fetchall()] == [MODEL]
    assert [f[2:] for f in await faces_of(db, h["obama.jpg"])] == [("Barack Obama", "bootstrap")]
    assert [f[2:] for f in await faces_of(db, h["biden.jpg"])] == [("Joe Biden", "bootstrap")]
    # Obama stands on the left of the side-by-side picture, Biden on the right.
    assert [f[2:] for f in await faces_of(db, h["obama_and_biden_side_by_side.jpg"])] == [
        ("Barack Obama", "auto"), ("Joe Biden", "auto")]
    # Not tagged: clustering joins it to the person of its nearest neighbour, Obama.
    assert [f[2:] for f in await faces_of(db, h["obama2.jpg"])] == [("Barack Obama", "auto")]
    async with db.execute("SELECT embedding FROM faces") as cur:
        assert {len(from_blob(r[0])) for r in await cur.fetchall()} == {128}


async def test_undecodable_is_permanent_and_a_crashed_worker_is_transient(
        db: Connection, pool: WorkerPool, tmp_path: Path, corpus: Path) -> None:
    root = tmp_path / "lib"
    root.mkdir()
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG" * 10)
    shutil.copy(corpus / "faces" / "obama.jpg", root / "crash.jpg")
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, ["broken.jpg", "crash.jpg"])
    crashing = EmbeddedDetector(upsample=1, min_size_px=40, min_score=0.0)
    crashing._fn = crash_on_crash_jpg  # type: ignore[assignment]
    async with FacePasses(db, pool, embedded(), client=crashing) as passes:
        rep = await passes.tick(sweep=None)
    assert rep.faces.permanent_failures == 1 and rep.faces.transient_failures == 1
    async with db.execute("SELECT f.rel_path, x.permanent, x.next_attempt_at IS NOT NULL FROM face_failures x "
                          "JOIN files f ON f.content_hash = x.content_hash ORDER BY f.rel_path") as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [("broken.jpg", 1, False), ("crash.jpg", 0, True)]


def crash_on_crash_jpg(items: list[tuple[str, str, str]]) -> list[Prepared]:
    """A worker process that dies on one file (as a native crash in dlib would)."""
    from imageapi.core.faces.detectors import detect_batch

    if any(path.endswith("crash.jpg") for path, _, _ in items):
        os._exit(1)
    return detect_batch(items, upsample=1, min_size_px=40, min_score=0.0)


async def test_imageapi_worker_drains_faces_with_the_embedded_backend(
        db: Connection, pool: WorkerPool, tmp_path: Path, corpus: Path) -> None:
    import asyncio

    h = await library(db, tmp_path / "lib", corpus, ("obama.jpg", "obama_and_biden_side_by_side.jpg"))
    config = replace(load_config(), faces=embedded())
    drainer = Drainer(db, pool, config, ["faces"])
    try:
        report = await drainer.run(asyncio.Event(), until_empty=True)
    finally:
        await drainer.aclose()
    assert report.kinds["faces"].detail["detected"] == 2 and report.kinds["faces"].detail["faces_found"] == 3
    assert report.remaining["faces"] == 0 and report.service_down is None
    assert [f[1] for f in await faces_of(db, h["obama_and_biden_side_by_side.jpg"])] == [MODEL, MODEL]


# -- one model's embeddings are never compared with another's -----------------------------------------

async def test_autobind_compares_only_faces_of_one_model(db: Connection, tmp_path: Path, corpus: Path) -> None:
    from imageapi.core.faces.people import MeanCache, autobind_sweep

    h = await library(db, tmp_path / "lib", corpus, ("obama.jpg", "obama2.jpg", "biden.jpg"))
    ann = [1.0] + [0.0] * 127
    await create_person(db, "Ann")
    async with transaction(db):
        # Ann's one face, by model A (bootstrap binds it).
        await insert_detection(db, h["obama.jpg"], Detection("model-a", [DetectedFace((0.1, 0.1, 0.2, 0.2), 0.9,
                                                                                      tuple(ann))]), utcnow())
        # Two photos by model B, whose face vectors equal Ann's model-A direction: in another space
        # that means nothing, so they must not be bound by similarity.
        for rel in ("obama2.jpg", "biden.jpg"):
            await insert_detection(db, h[rel], Detection("model-b", [
                DetectedFace((0.1, 0.1, 0.2, 0.2), 0.9, tuple(ann)),
                DetectedFace((0.5, 0.1, 0.2, 0.2), 0.9, tuple([0.0, 1.0] + [0.0] * 126))]), utcnow())
    for rel in ("obama.jpg", "obama2.jpg"):
        await tag(db, h[rel], "Ann")
    assert await autobind_sweep(db, 0.5, incremental=False, means=MeanCache(db)) == 1   # the bootstrap only
    assert [f[2:] for f in await faces_of(db, h["obama2.jpg"])] == [(None, None), (None, None)]
    # A face of model B bound by hand gives Ann a model-B mean: now model B faces match it.
    async with db.execute("SELECT id FROM faces WHERE content_hash = ? ORDER BY idx", (h["biden.jpg"],)) as cur:
        first_b = (await cur.fetchone())[0]
    from imageapi.core.faces.people import bind_face
    await bind_face(db, first_b, "Ann")
    assert await autobind_sweep(db, 0.5, incremental=False, means=MeanCache(db)) == 1
    assert [f[2:] for f in await faces_of(db, h["obama2.jpg"])] == [("Ann", "auto"), (None, None)]


# -- faces reindex --model -----------------------------------------------------------------------

def test_iou() -> None:
    assert iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert iou((0, 0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5)) == 0.0
    assert abs(iou((0, 0, 0.2, 0.2), (0.1, 0, 0.2, 0.2)) - 1 / 3) < 1e-9


async def test_reindex_redetects_and_carries_names_and_drawn_boxes_over(
        db: Connection, pool: WorkerPool, tmp_path: Path, corpus: Path) -> None:
    from imageapi.core.faces.people import bind_face

    h = await library(db, tmp_path / "lib", corpus, ("obama_and_biden_side_by_side.jpg", "obama.jpg"))
    pair, solo = h["obama_and_biden_side_by_side.jpg"], h["obama.jpg"]
    await create_person(db, "Barack Obama")
    await create_person(db, "Joe Biden")
    await create_person(db, "Someone")
    # The old backend's faces: near the real ones (the embedded detector finds Obama at about
    # x 0.21 and Biden at x 0.69), Obama bound automatically, Biden's box missed, and a spurious one.
    old = Detection("old-model", [DetectedFace((0.20, 0.07, 0.14, 0.24), 0.9, (1.0, 0.0)),
                                  DetectedFace((0.02, 0.80, 0.10, 0.10), 0.5, (0.0, 1.0))])
    async with transaction(db):
        assert await insert_detection(db, pair, old, utcnow())
        assert await insert_detection(db, solo, Detection("old-model", []), utcnow())
    async with db.execute("SELECT id FROM faces WHERE content_hash = ? ORDER BY idx", (pair,)) as cur:
        obama_old = (await cur.fetchone())[0]
    async with transaction(db):
        await db.execute("UPDATE faces SET person_id = (SELECT id FROM persons WHERE name = 'Barack Obama'), "
                         "bound_by = 'auto', bound_at = '2020-01-01T00:00:00.000000Z' WHERE id = ?", (obama_old,))
    # Biden drawn by hand (bound), and a drawn box on nothing the detector finds (kept as is).
    await draw_face(db, pair, (0.69, 0.09, 0.16, 0.28), "Joe Biden")
    await draw_face(db, pair, (0.45, 0.60, 0.10, 0.10), "Someone")
    # A photo the old backend saw no face in is detected again too.
    assert await mark_for_reindex(db, "other-model") == 0
    assert await mark_for_reindex(db, "old-model") == 2
    # Until detected again, the old faces stay (a kill now loses nothing).
    assert len(await faces_of(db, pair)) == 4
    async with FacePasses(db, pool, embedded()) as passes:
        rep = await passes.tick(sweep="full")
    assert rep.faces.detected == 2
    got = await faces_of(db, pair)
    assert [g[1:] for g in got] == [
        (MODEL, "Barack Obama", "auto"),         # the old face's person and how it was bound
        ("manual", "Someone", "manual"),         # the drawn box nothing matches: kept
        (MODEL, "Joe Biden", "manual"),          # the drawn box matched: the new face takes it over
    ]
    async with db.execute("SELECT bound_at FROM faces f JOIN persons p ON p.id = f.person_id "
                          "WHERE p.name = 'Barack Obama' AND f.content_hash = ?", (pair,)) as cur:
        assert [r[0] for r in await cur.fetchall()] == ["2020-01-01T00:00:00.000000Z"]
    # The solo portrait's new face joins Obama by clustering (its nearest neighbour is his).
    assert [g[1:] for g in await faces_of(db, solo)] == [(MODEL, "Barack Obama", "auto")]
    async with db.execute("SELECT model, COUNT(*) FROM face_scans GROUP BY model") as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [(MODEL, 2)]
    # The embedded model's own reindex queues them again (e.g. after changing FACE_UPSAMPLE).
    assert await mark_for_reindex(db, MODEL) == 2
    await bind_face(db, (await faces_of_ids(db, pair))[0], None)   # a human unbinds Obama meanwhile
    async with FacePasses(db, pool, embedded()) as passes:
        await passes.tick(sweep=None)
    assert [g[1:] for g in await faces_of(db, pair)] == [
        (MODEL, None, None), ("manual", "Someone", "manual"), (MODEL, "Joe Biden", "manual")]
    # "Not this person" follows the face to its new row: it is never bound to Obama again.
    async with db.execute("SELECT f.x, p.name FROM face_rejections r JOIN faces f ON f.id = r.face_id "
                          "JOIN persons p ON p.id = r.person_id") as cur:
        rejected = [tuple(r) for r in await cur.fetchall()]
    assert [name for _, name in rejected] == ["Barack Obama"]
    assert rejected[0][0] < 0.4   # the new face on the left, Obama's


async def faces_of_ids(db: Connection, content_hash: str) -> list[int]:
    async with db.execute("SELECT id FROM faces WHERE content_hash = ? ORDER BY x", (content_hash,)) as cur:
        return [r[0] for r in await cur.fetchall()]


def test_reindex_command(env: dict[str, str], env_dirs: dict[str, Path], corpus: Path) -> None:
    root = env_dirs["tmp"] / "Pictures"
    root.mkdir()
    shutil.copy(corpus / "faces" / "obama.jpg", root / "obama.jpg")
    assert imageapi(env, "scan", str(root)).returncode == 0
    res = imageapi(env, "faces", "drain", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["faces_found"] == 1, res.stderr
    res = imageapi(env, "faces", "reindex", "--model", MODEL, "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == {"queued": 1, "model": MODEL, "backend": "embedded"}
    status = json.loads(imageapi(env, "faces", "status", "--json").stdout)
    assert (status["pending"], status["faces"]) == (1, 1)       # queued, its face still there
    res = imageapi(env, "faces", "drain", "--json")
    assert json.loads(res.stdout)["detected"] == 1
    status = json.loads(imageapi(env, "faces", "status", "--json").stdout)
    assert (status["pending"], status["scanned"], status["faces"]) == (0, 1, 1)


def test_kill_9_mid_reindex_loses_no_face_and_no_name(env: dict[str, str], env_dirs: dict[str, Path],
                                                      corpus: Path) -> None:
    """Killed while re-detecting, every photo holds either its old faces (still queued) or its new
    ones with their scan mark, and every name; the next drain finishes the rest."""
    import signal
    import time

    from bench.synth import with_comment
    from tests import dbq

    root = env_dirs["tmp"] / "Pictures"
    root.mkdir()
    portrait = (corpus / "faces" / "obama_1080p.jpg").read_bytes()
    n = 10
    for i in range(n):
        (root / f"obama{i:02d}.jpg").write_bytes(with_comment(portrait, f"copy {i}".encode()))
    assert imageapi(env, "scan", str(root)).returncode == 0
    assert json.loads(imageapi(env, "faces", "drain", "--json").stdout)["faces_found"] == n
    assert imageapi(env, "people", "add", "Barack Obama").returncode == 0

    def query(sql: str) -> list[tuple]:
        conn = dbq.connect(env_dirs["data"] / "imageapi.db")
        try:
            rows = conn.execute(sql).fetchall()
            conn.commit()
            return [tuple(r) for r in rows]
        finally:
            conn.close()

    query("UPDATE faces SET person_id = (SELECT id FROM persons WHERE name = 'Barack Obama'), bound_by = 'manual', "
          "bound_at = '2020-01-01T00:00:00.000000Z'")
    res = imageapi(env, "faces", "reindex", "--model", MODEL, "--json")
    assert json.loads(res.stdout)["queued"] == n
    proc = subprocess.Popen([sys.executable, "-m", "imageapi", "faces", "drain"], env={**env, "WORKERS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and query("SELECT COUNT(*) FROM face_scans")[0][0] < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    marked = query("SELECT COUNT(*) FROM face_scans")[0][0]
    assert 2 <= marked < n
    # Every content: one face, bound to Obama by hand; the re-detected ones are the new rows.
    per_content = query("SELECT content_hash, COUNT(*), MIN(person_id), MIN(bound_by) FROM faces "
                        "GROUP BY content_hash")
    assert len(per_content) == n and all(c == 1 and p is not None and b == "manual" for _, c, p, b in per_content)
    res = imageapi(env, "faces", "drain", "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["detected"] == n - marked
    assert query("SELECT COUNT(*), COUNT(DISTINCT content_hash), MIN(bound_by), MAX(bound_at) FROM faces "
                 "WHERE person_id IS NOT NULL") == [(n, n, "manual", "2020-01-01T00:00:00.000000Z")]
    assert query("SELECT COUNT(*) FROM face_scans")[0][0] == n
