"""Clustering faces into persons (imageapi.core.faces.cluster), on SQLite and PostgreSQL: a new face
joins the person of its nearest neighbour; FACE_CLUSTER_MIN_FACES faces start an unnamed person,
fewer wait; "not this person" is respected by every rule; --full keeps manual binds and named
persons; people tags name a cluster; the nightly pass; and the real detector on the corpus
portraits, end to end."""

from __future__ import annotations

import asyncio
import io
import math
import os
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imageapi.core.config import load_config
from imageapi.core.database import transaction
from imageapi.core.db import connect, utcnow
from imageapi.core.errors import ConfigError
from imageapi.core.faces.cluster import (
    cluster_all,
    cluster_new_faces,
    cluster_unbound,
    components,
    run_nightly,
)
from imageapi.core.faces.embeddings import to_blob
from imageapi.core.faces.people import (
    MeanCache,
    autobind_photo,
    bind_face_to,
    create_person,
    list_people,
    merge_persons,
)
from imageapi.core.faces.settings import FaceSettings, face_settings_from_env
from imageapi.core.repositories import faces as faces_repo
from imageapi.core.tags import add_tags

DIM = 32
MODEL = "synthetic-32"
SETTINGS = FaceSettings(base_url="http://127.0.0.1:9", cluster_max_distance=0.1, cluster_min_faces=3)


@pytest.fixture()
async def db(env_dirs: dict[str, Path]) -> AsyncIterator[Any]:
    env = {"IMAGEAPI_DATA_DIR": str(env_dirs["data"])}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    conn = await connect(load_config(environ=env).database)
    yield conn
    await conn.close()


def person_vector(seed: str) -> list[float]:
    rnd = random.Random(seed)
    v = [rnd.gauss(0.0, 1.0) for _ in range(DIM)]
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def near(base: list[float], seed: str, dist: float) -> list[float]:
    """A vector at about this cosine distance from `base` (dist small)."""
    rnd = random.Random(seed)
    noise = [rnd.gauss(0.0, 1.0) for _ in base]
    dot = sum(a * b for a, b in zip(noise, base, strict=True))
    noise = [x - dot * b for x, b in zip(noise, base, strict=True)]   # orthogonal to base
    n = math.sqrt(sum(x * x for x in noise))
    angle = math.acos(1 - dist)
    return [math.cos(angle) * b + math.sin(angle) * x / n for b, x in zip(base, noise, strict=True)]


async def add_face(db: Any, content: str, embedding: list[float], model: str = MODEL) -> int:
    async with transaction(db):
        idx = await faces_repo.next_idx(db, content)
        return await faces_repo.insert_face(db, content, idx, (0.1, 0.1, 0.2, 0.2), 0.9, to_blob(embedding), model,
                                            utcnow())


async def persons_of(db: Any, *face_ids: int) -> list[tuple[int | None, str | None]]:
    out = []
    for face_id in face_ids:
        f = await faces_repo.face(db, face_id)
        assert f is not None
        out.append((f.person_id, f.bound_by))
    return out


async def test_a_new_face_joins_the_person_of_its_nearest_neighbour(db: Any) -> None:
    a, b = person_vector("a"), person_vector("b")
    ann, ben = await create_person(db, "Ann"), await create_person(db, "Ben")
    fa, fb = await add_face(db, "c1", a), await add_face(db, "c2", b)
    await bind_face_to(db, fa, ann.id)
    await bind_face_to(db, fb, ben.id)
    # Within the distance of both, nearer to Ben's face.
    mid = [x + y for x, y in zip(near(a, "m", 0.02), near(b, "n", 0.02), strict=True)]
    new = await add_face(db, "c3", mid)
    far = await add_face(db, "c4", person_vector("c"))
    report = await cluster_new_faces(db, replace(SETTINGS, cluster_max_distance=1.0), ["c3"])
    assert report.bound == 1
    new_person = (await persons_of(db, new))[0]
    assert new_person[1] == "auto" and new_person[0] in (ann.id, ben.id)
    # With the real distance: a face near Ann joins Ann; one near nobody waits.
    close = await add_face(db, "c5", near(a, "x", 0.03))
    await cluster_new_faces(db, SETTINGS, ["c4", "c5"])
    assert await persons_of(db, close, far) == [(ann.id, "auto"), (None, None)]


async def test_min_faces_start_an_unnamed_person_fewer_wait(db: Any) -> None:
    x = person_vector("x")
    f1, f2 = await add_face(db, "p1", near(x, "1", 0.02)), await add_face(db, "p2", near(x, "2", 0.02))
    # Two faces in one photo are not neighbours of each other.
    twin = await add_face(db, "p2", near(x, "2b", 0.02))
    await cluster_new_faces(db, SETTINGS, ["p1", "p2"])
    assert await persons_of(db, f1, f2, twin) == [(None, None)] * 3   # 2 photos < 3: they wait
    same1, same2 = await add_face(db, "p3", near(x, "3", 0.02)), await add_face(db, "p3", person_vector("y"))
    await cluster_new_faces(db, SETTINGS, ["p3"])
    bound = await persons_of(db, f1, f2, same1, same2, twin)
    person = bound[0][0]
    assert person is not None and bound == [(person, "auto")] * 3 + [(None, None)] * 2
    listed = await list_people(db)
    assert [(p.id, p.name, p.named, p.faces) for p in listed] == [(person, None, False, 3)]
    # Faces of another model are never compared.
    other = await add_face(db, "p4", near(x, "4", 0.01), model="other-model")
    await cluster_unbound(db, SETTINGS)
    assert await persons_of(db, other) == [(None, None)]


async def test_not_this_person_is_never_bound_again(db: Any) -> None:
    a = person_vector("a")
    ann = await create_person(db, "Ann")
    faces = [await add_face(db, f"r{i}", near(a, str(i), 0.02)) for i in range(4)]
    for f in faces[:3]:
        await bind_face_to(db, f, ann.id)
    odd = faces[3]
    await cluster_new_faces(db, SETTINGS, ["r3"])
    assert await persons_of(db, odd) == [(ann.id, "auto")]
    await bind_face_to(db, odd, None)                       # the user: not Ann
    await cluster_new_faces(db, SETTINGS, ["r3"])
    await cluster_unbound(db, SETTINGS)
    await cluster_all(db, SETTINGS)
    assert await persons_of(db, odd) == [(None, None)]
    # Nor by a merge of a person holding it into Ann, nor by a people tag (bootstrap).
    unnamed = await create_person(db, "Tmp")
    await bind_face_to(db, odd, unnamed.id)
    result = await merge_persons(db, unnamed.id, ann.id)
    assert result.unbound == 1 and await persons_of(db, odd) == [(None, None)]
    await add_tags(db, ["r3"], ["Ann"])
    async with transaction(db):
        assert await autobind_photo(db, "r3", 0.0, MeanCache(db)) == []
    # Manual binds stay through --full, and a human's bind takes "not this person" back.
    await bind_face_to(db, odd, ann.id)
    await cluster_all(db, SETTINGS)
    assert await persons_of(db, odd) == [(ann.id, "manual")]


async def test_full_recluster_keeps_manual_binds_and_named_persons(db: Any) -> None:
    a, b = person_vector("a"), person_vector("b")
    ann = await create_person(db, "Ann")
    xs = [await add_face(db, f"x{i}", near(a, f"x{i}", 0.02)) for i in range(5)]
    ys = [await add_face(db, f"y{i}", near(b, f"y{i}", 0.02)) for i in range(4)]
    z = await add_face(db, "z", near(b, "z", 0.02))           # looks like b, a human says Ann
    lone = await add_face(db, "lone", person_vector("lone"))
    await bind_face_to(db, xs[0], ann.id)
    await bind_face_to(db, z, ann.id)
    report = await cluster_all(db, SETTINGS)
    assert report.new_persons == 1
    got = await persons_of(db, *xs, *ys, z, lone)
    assert [p for p, _ in got[:5]] == [ann.id] * 5 and got[0][1] == "manual"
    y_person = got[5][0]
    assert y_person not in (None, ann.id) and [p for p, _ in got[5:9]] == [y_person] * 4
    assert got[9] == (ann.id, "manual") and got[10] == (None, None)
    # Named "Bea", the second cluster stays Bea with the same id through another --full.
    from imageapi.core.faces.people import name_person

    await name_person(db, y_person, "Bea")
    again = await cluster_all(db, SETTINGS)
    assert again.bound == 0 and again.unbound == 0 and again.new_persons == 0
    assert await persons_of(db, *xs, *ys, z, lone) == got
    assert [(p.name, p.faces) for p in await list_people(db)] == [("Ann", 6), ("Bea", 4)]


async def test_people_tags_name_a_cluster(db: Any) -> None:
    a, b = person_vector("a"), person_vector("b")
    ann = await create_person(db, "Ann")
    await create_person(db, "Ben")
    for i in range(3):
        await add_face(db, f"a{i}", near(a, f"a{i}", 0.02))
        await add_face(db, f"b{i}", near(b, f"b{i}", 0.02))
    await add_tags(db, ["a1"], ["ann"])
    await add_tags(db, ["b0"], ["Ann"])
    await add_tags(db, ["b1"], ["Ben"])         # two people named by the photos of cluster b: not named
    report = await cluster_all(db, SETTINGS)
    assert report.named == 1
    people = {p.name: p for p in await list_people(db)}
    assert people["Ann"].id == ann.id and people["Ann"].faces == 3
    assert people[None].faces == 3 and people["Ben"].faces == 0


async def test_nightly_pass_runs_once_a_day_at_the_hour(db: Any) -> None:
    x = person_vector("x")
    for i in range(3):
        await add_face(db, f"n{i}", near(x, f"n{i}", 0.02))
    settings = FaceSettings(base_url="http://127.0.0.1:9", cluster_max_distance=0.1, cluster_hour=3)
    assert await run_nightly(db, settings, datetime(2026, 11, 30, 2, 59)) is None
    report = await run_nightly(db, settings, datetime(2026, 11, 30, 3, 0))
    assert report is not None and report.new_persons == 1
    assert await run_nightly(db, settings, datetime(2026, 11, 30, 23, 0)) is None
    assert await run_nightly(db, settings, datetime(2026, 12, 1, 4, 0)) is not None
    off = FaceSettings(base_url="http://127.0.0.1:9", cluster_hour=None)
    assert await run_nightly(db, off, datetime(2026, 12, 2, 4, 0)) is None


async def test_of_processes_racing_for_the_nightly_pass_one_runs_it(db: Any, env_dirs: dict[str, Path]) -> None:
    """The watcher and workers on other hosts all look whether the pass is due: the day's mark is
    claimed, so one of them runs it."""
    x = person_vector("x")
    for i in range(3):
        await add_face(db, f"r{i}", near(x, f"r{i}", 0.02))
    env = {"IMAGEAPI_DATA_DIR": str(env_dirs["data"])}
    if os.environ.get("DATABASE_URL"):
        env["DATABASE_URL"] = os.environ["DATABASE_URL"]
    others = [await connect(load_config(environ=env).database) for _ in range(3)]
    try:
        settings = FaceSettings(base_url="http://127.0.0.1:9", cluster_max_distance=0.1, cluster_hour=3)
        at = datetime(2026, 11, 30, 4, 0)
        reports = await asyncio.gather(*(run_nightly(c, settings, at) for c in (db, *others)))
    finally:
        for c in others:
            await c.close()
    assert sum(r is not None for r in reports) == 1
    assert [p.faces for p in await list_people(db)] == [3]


def test_cluster_settings() -> None:
    s = face_settings_from_env({"FACE_CLUSTER_HOUR": "off", "FACE_CLUSTER_MAX_DISTANCE": "0.3",
                                "FACE_CLUSTER_MIN_FACES": "5"})
    assert (s.cluster_hour, s.cluster_max_distance, s.cluster_min_faces) == (None, 0.3, 5)
    d = face_settings_from_env({})
    assert (d.cluster_enabled, d.cluster_hour, d.cluster_max_distance, d.cluster_min_faces) == (True, 3, None, 3)
    assert face_settings_from_env({"FACE_CLUSTER": "off"}).cluster_enabled is False
    for name, bad in (("FACE_CLUSTER_HOUR", "24"), ("FACE_CLUSTER_HOUR", "3am"), ("FACE_CLUSTER_MAX_DISTANCE", "0"),
                      ("FACE_CLUSTER_MAX_DISTANCE", "nan"), ("FACE_CLUSTER_MIN_FACES", "0"),
                      ("FACE_CLUSTER", "sometimes")):
        with pytest.raises(ConfigError, match=name):
            face_settings_from_env({name: bad})


async def test_the_embedded_detector_clusters_the_corpus_portraits(db: Any, corpus: Path) -> None:
    """Obama's 7 faces and Biden's 3 become two persons, nothing mixed (the third face in
    obama_and_biden.jpg, someone else, stays alone)."""
    pytest.importorskip("dlib")
    from PIL import Image

    from imageapi.core.faces.embedded import MODEL as EMBEDDED
    from imageapi.core.faces.embedded import detect_jpeg

    truth: dict[int, str] = {}
    for path in sorted((corpus / "faces").glob("*.jpg")):
        with Image.open(path) as im:
            pic = im.convert("RGB")
        pic.thumbnail((1600, 1600))
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=90)
        for f in detect_jpeg(buf.getvalue()).faces:
            face_id = await add_face(db, path.name, list(f.embedding), model=EMBEDDED)
            # Who is where: biden.jpg is Biden; in the two-person photos Biden is the face on the
            # left (obama_and_biden) or right (side by side); the small third face is neither.
            x = f.bbox[0]
            if path.name == "biden.jpg" or (path.name == "obama_and_biden.jpg" and 0.3 < x < 0.45) or \
                    (path.name == "obama_and_biden_side_by_side.jpg" and x > 0.5):
                truth[face_id] = "biden"
            elif path.name == "obama_and_biden.jpg" and x > 0.7:
                truth[face_id] = "other"
            else:
                truth[face_id] = "obama"
    assert sorted(truth.values()).count("obama") == 7 and list(truth.values()).count("biden") == 3
    settings = FaceSettings(base_url="http://127.0.0.1:9")   # the defaults: dlib's distance, 3 faces
    assert await cluster_all(db, settings) is not None
    got = dict(zip(truth, [p for p, _ in await persons_of(db, *truth)], strict=True))
    obama = {got[f] for f, who in truth.items() if who == "obama"}
    biden = {got[f] for f, who in truth.items() if who == "biden"}
    assert len(obama) == 1 and len(biden) == 1 and obama != biden and None not in obama | biden
    assert [got[f] for f, who in truth.items() if who == "other"] == [None]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.lists(
    st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=60))))
def test_components_match_a_plain_union_find(graph: tuple[int, list[tuple[int, int]]]) -> None:
    n, pairs = graph
    parent = list(range(n))

    def root(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in pairs:
        parent[root(a)] = root(b)
    i = np.asarray([a for a, _ in pairs], dtype=np.int64)
    j = np.asarray([b for _, b in pairs], dtype=np.int64)
    got = components(n, i, j)
    for a in range(n):
        for b in range(n):
            assert (got[a] == got[b]) == (root(a) == root(b))
    assert all(got[k] == min(m for m in range(n) if root(m) == root(k)) for k in range(n))


async def test_postgres_finds_neighbours_through_an_hnsw_index(db: Any) -> None:
    from imageapi.core.db import dialect

    if dialect(db) != "postgresql":
        pytest.skip("pgvector: PostgreSQL only (IMAGEAPI_TEST_DATABASE=postgresql)")
    x = person_vector("x")
    faces = [await add_face(db, f"v{i}", near(x, f"v{i}", 0.02)) for i in range(3)]
    report = await cluster_new_faces(db, SETTINGS, ["v0", "v1", "v2"])
    assert report.new_persons == 1 and report.bound == 3
    async with db.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'faces_hnsw_%'") as cur:
        assert len(await cur.fetchall()) == 1
    # The planner takes the index for the neighbour query (sequential scans off, as for a large table).
    import asyncpg

    from imageapi.core.repositories.clusters import vector_neighbours

    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            rows = await conn.fetch(
                f"EXPLAIN SELECT f.id FROM faces f WHERE f.model = '{MODEL}' ORDER BY (f.embedding::vector({DIM})) "
                f"<=> (SELECT q.embedding::vector({DIM}) FROM faces q WHERE q.id = $1) LIMIT 5", faces[0])
    finally:
        await conn.close()
    plan = " ".join(str(r[0]) for r in rows)
    async with transaction(db):
        found = await vector_neighbours(db, MODEL, DIM, faces[0], 5)
    assert "faces_hnsw_" in plan, plan
    assert [n.id for n in found][0] == faces[0] and {n.id for n in found} == set(faces)


async def test_processes_making_the_hnsw_index_at_once_all_go_on(db: Any) -> None:
    """Two workers' first clustering passes start together: both ask for the index; neither fails."""
    import asyncio

    from imageapi.core.db import dialect
    from imageapi.core.repositories.clusters import ensure_vector_index

    if dialect(db) != "postgresql":
        pytest.skip("pgvector: PostgreSQL only (IMAGEAPI_TEST_DATABASE=postgresql)")
    x = person_vector("x")
    for i in range(200):
        await add_face(db, f"r{i}", near(x, f"r{i}", 0.3))
    # Six processes' own connections.
    others = [await connect(load_config(environ={"DATABASE_URL": os.environ["DATABASE_URL"]}).database)
              for _ in range(6)]
    try:
        for round_ in range(3):
            model = f"{MODEL}-{round_}"
            await asyncio.gather(*(ensure_vector_index(o, model, DIM) for o in others))
            async with db.execute("SELECT COUNT(*) FROM pg_indexes WHERE indexname LIKE 'faces_hnsw_%'") as cur:
                assert (await cur.fetchone())[0] == round_ + 1
    finally:
        for o in others:
            await o.close()


def test_migration_18_keeps_the_bindings_of_faces(tmp_path: Path) -> None:
    """SQLite rebuilds persons to let name be NULL: faces keep their person, bound_by and bound_at."""
    import sqlite3

    from imageapi.core.db import apply_migrations
    from imageapi.core.migrations import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    apply_migrations(conn, [m for m in MIGRATIONS if m.version < 18])
    conn.execute("INSERT INTO persons (id, name, created_at) VALUES (1, 'Ann', 't'), (2, 'Ben', 't')")
    conn.execute("INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, bound_by, "
                 "bound_at, created_at) VALUES ('h', 0, 0, 0, .1, .1, 1, x'00', 'm', 2, 'manual', 'when', 't'), "
                 "('h', 1, 0, 0, .1, .1, 1, x'00', 'm', 1, 'auto', 'then', 't'), "
                 "('h', 2, 0, 0, .1, .1, 1, x'00', 'm', NULL, NULL, NULL, 't')")
    assert 18 in apply_migrations(conn)
    assert conn.execute("SELECT idx, person_id, bound_by, bound_at FROM faces ORDER BY idx").fetchall() == [
        (0, 2, "manual", "when"), (1, 1, "auto", "then"), (2, None, None, None)]
    conn.execute("INSERT INTO persons (name, created_at) VALUES (NULL, 't'), (NULL, 't')")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO persons (name, created_at) VALUES ('ANN', 't')")
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.execute("DELETE FROM persons WHERE id = 2")           # the reference still works
    assert conn.execute("SELECT person_id FROM faces WHERE idx = 0").fetchone() == (None,)
    conn.close()


async def test_a_detection_batch_clusters_its_faces(db: Any, tmp_path: Path) -> None:
    """The backlog's hook: faces stored by a tick are clustered at its end (here four alike faces
    from the stand-in Apollo start one unnamed person; a stranger's face waits)."""
    from imageapi.core.faces.backlog import FacePasses
    from imageapi.core.libraries import add_library
    from imageapi.core.pool import WorkerPool
    from tests.apollo_standin import StandIn, face, hash_embedding, insert_rows, make_photo
    from tests.apollo_standin import near as near_to

    root = tmp_path / "lib"
    names = [f"p{i}.jpg" for i in range(5)]
    for i, name in enumerate(names):
        make_photo(root / name, i + 1)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, names)
    async with db.execute("SELECT rel_path, content_hash FROM files") as cur:
        h = {r[0]: r[1] for r in await cur.fetchall()}
    who = hash_embedding("someone")
    pool = WorkerPool(1)
    try:
        with StandIn() as standin:
            standin.script.update({h[n]: [face(near_to(who, n, noise=0.1))] for n in names[:4]})
            standin.script[h["p4.jpg"]] = [face(hash_embedding("stranger"))]
            async with FacePasses(db, pool, FaceSettings(base_url=standin.url)) as passes:
                rep = await passes.tick()
    finally:
        pool.close()
    assert rep.faces.detected == 5 and rep.faces.bound == 4
    listed = await list_people(db)
    assert [(p.named, p.faces, p.photos) for p in listed] == [(False, 4, 4)]
