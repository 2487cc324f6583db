"""People: bootstrap, autobind with real embeddings (scripted per photo by the stand-in), never two
faces of one photo bound to one person, the tag sweep, rename and merge."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

from imageapi.core.database import transaction
from imageapi.core.db import connect
from imageapi.core.errors import NotFoundError, UsageError
from imageapi.core.faces.backlog import FacePasses
from imageapi.core.faces.embeddings import cosine, from_blob, mean_direction, normalized, to_blob
from imageapi.core.faces.people import (
    bind_face,
    create_person,
    list_people,
    merge_people,
    rename_person,
)
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.libraries import add_library
from imageapi.core.pool import WorkerPool
from tests.apollo_standin import StandIn, face, hash_embedding, insert_rows, make_photo, near, tag

OBAMA = hash_embedding("obama")
BIDEN = hash_embedding("biden")
LEFT, RIGHT = (0.1, 0.2, 0.3, 0.4), (0.6, 0.2, 0.3, 0.4)


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(2)
    yield p
    p.close()


@pytest.fixture()
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "imageapi.db")
    yield conn
    await conn.close()


@pytest.fixture()
def standin() -> Iterator[StandIn]:
    with StandIn() as s:
        yield s


async def library(db: aiosqlite.Connection, root: Path, files: dict[str, Path | int]) -> dict[str, str]:
    """Files from the corpus (a Path) or generated (a seed); returns rel -> content hash."""
    for rel, src in files.items():
        if isinstance(src, Path):
            root.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / rel)
        else:
            make_photo(root / rel, src)
    lib = await add_library(db, "main", root)
    await insert_rows(db, lib.id, root, list(files))
    async with db.execute("SELECT rel_path, content_hash FROM files") as cur:
        return {r[0]: r[1] for r in await cur.fetchall()}


async def bindings(db: aiosqlite.Connection) -> dict[tuple[str, int], tuple[str | None, str | None]]:
    async with db.execute(
        "SELECT f.content_hash, f.idx, p.name, f.bound_by FROM faces f LEFT JOIN persons p ON p.id = f.person_id"
    ) as cur:
        return {(r[0], r[1]): (r[2], r[3]) for r in await cur.fetchall()}


def passes(db: aiosqlite.Connection, pool: WorkerPool, url: str, min_cos: float = 0.4) -> FacePasses:
    # The tag rules alone: clustering (tests/test_faces_cluster.py) would also bind untagged faces.
    return FacePasses(db, pool, FaceSettings(base_url=url, autobind_min_cos=min_cos, cluster_enabled=False))


async def test_bootstrap_then_autobind_on_the_corpus_portraits(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path, corpus: Path) -> None:
    faces_dir = corpus / "faces"
    h = await library(db, tmp_path / "lib", {n: faces_dir / n for n in
                                             ("obama.jpg", "obama2.jpg", "biden.jpg", "obama_and_biden.jpg")})
    standin.script.update({
        h["obama.jpg"]: [face(near(OBAMA, "o1"))],
        h["obama2.jpg"]: [face(near(OBAMA, "o2"))],
        h["biden.jpg"]: [face(near(BIDEN, "b1"))],
        h["obama_and_biden.jpg"]: [face(near(BIDEN, "ob-b"), LEFT), face(near(OBAMA, "ob-o"), RIGHT)],
    })
    await create_person(db, "Barack Obama")
    await create_person(db, "Joe Biden")
    # Tags are case-insensitive: any case of the person's name links the photo to them.
    await tag(db, h["obama.jpg"], "barack obama")
    await tag(db, h["biden.jpg"], "JOE BIDEN")
    await tag(db, h["obama_and_biden.jpg"], "Barack Obama", "Joe Biden", "White House")
    async with passes(db, pool, standin.url) as p:
        rep = await p.tick(sweep="full")
    assert rep.faces.detected == 4 and rep.faces.faces_found == 5
    got = await bindings(db)
    assert got[(h["obama.jpg"], 0)] == ("Barack Obama", "bootstrap")
    assert got[(h["biden.jpg"], 0)] == ("Joe Biden", "bootstrap")
    # The group photo: each face to the person it resembles, whatever order the photos came in.
    assert got[(h["obama_and_biden.jpg"], 0)] == ("Joe Biden", "auto")
    assert got[(h["obama_and_biden.jpg"], 1)] == ("Barack Obama", "auto")
    assert got[(h["obama2.jpg"], 0)] == (None, None)                    # not tagged: not bound
    assert rep.faces.bound + rep.swept_bound == 4
    people = {p.name: p for p in await list_people(db)}
    assert (people["Barack Obama"].faces, people["Barack Obama"].photos) == (2, 2)
    assert people["Barack Obama"].bound_by == {"bootstrap": 1, "auto": 1}


async def test_never_two_faces_of_one_photo_to_one_person(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    h = await library(db, tmp_path / "lib", {"solo.jpg": 1, "twins.jpg": 2, "stranger.jpg": 3})
    standin.script.update({
        h["solo.jpg"]: [face(near(OBAMA, "s"))],
        # Both faces look like the person; the closer one wins, the other stays unbound.
        h["twins.jpg"]: [face(near(OBAMA, "t1", noise=0.6), LEFT), face(near(OBAMA, "t2", noise=0.1), RIGHT)],
        # Two faces, neither close enough.
        h["stranger.jpg"]: [face(hash_embedding("x1"), LEFT), face(hash_embedding("x2"), RIGHT)],
    })
    await create_person(db, "Ann")
    for rel in h:
        await tag(db, h[rel], "ann")
    async with passes(db, pool, standin.url, min_cos=0.5) as p:
        await p.tick(sweep="full")
        await p.tick(sweep="full")        # sweeping again changes nothing
    got = await bindings(db)
    assert got[(h["solo.jpg"], 0)] == ("Ann", "bootstrap")
    assert got[(h["twins.jpg"], 1)] == ("Ann", "auto") and got[(h["twins.jpg"], 0)] == (None, None)
    assert cosine(near(OBAMA, "t1", noise=0.6), OBAMA) >= 0.5           # the loser was above the threshold
    assert got[(h["stranger.jpg"], 0)] == got[(h["stranger.jpg"], 1)] == (None, None)
    async with db.execute("SELECT content_hash, person_id, COUNT(*) FROM faces WHERE person_id IS NOT NULL "
                          "GROUP BY content_hash, person_id HAVING COUNT(*) > 1") as cur:
        assert await cur.fetchall() == []


async def test_bootstrap_needs_exactly_one_face_and_one_person_tag(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    h = await library(db, tmp_path / "lib", {"two_tags.jpg": 1, "two_faces.jpg": 2, "no_person.jpg": 3})
    standin.script.update({
        h["two_tags.jpg"]: [face(near(OBAMA, "a"))],
        h["two_faces.jpg"]: [face(near(OBAMA, "b"), LEFT), face(near(BIDEN, "c"), RIGHT)],
        h["no_person.jpg"]: [face(near(OBAMA, "d"))],
    })
    await create_person(db, "Ann")
    await create_person(db, "Bob")
    await tag(db, h["two_tags.jpg"], "Ann", "Bob")
    await tag(db, h["two_faces.jpg"], "Ann")
    await tag(db, h["no_person.jpg"], "holiday")
    async with passes(db, pool, standin.url) as p:
        rep = await p.tick(sweep="full")
    assert rep.faces.bound == rep.swept_bound == 0        # nobody has a first face to compare with
    assert all(v == (None, None) for v in (await bindings(db)).values())


async def test_tags_added_after_detection_bind_on_the_next_tick(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    h = await library(db, tmp_path / "lib", {"a.jpg": 1, "group.jpg": 2})
    standin.script.update({
        h["a.jpg"]: [face(near(OBAMA, "a"))],
        h["group.jpg"]: [face(near(BIDEN, "g1"), LEFT), face(near(OBAMA, "g2"), RIGHT)],
    })
    await create_person(db, "Ann")
    async with passes(db, pool, standin.url) as p:
        assert (await p.tick()).faces.detected == 2
        await tag(db, h["a.jpg"], "Ann")
        rep = await p.tick()                       # incremental sweep: the new tag link
        assert rep.swept_bound == 1 and rep.faces.candidates == 0
        await tag(db, h["group.jpg"], "ann")
        rep = await p.tick()
        assert rep.swept_bound == 1
        assert (await p.tick()).swept_bound == 0   # nothing new
    got = await bindings(db)
    assert got[(h["a.jpg"], 0)] == ("Ann", "bootstrap") and got[(h["group.jpg"], 1)] == ("Ann", "auto")
    assert standin.total == 2


async def test_rename_merge_and_manual_binding(db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn,
                                               tmp_path: Path) -> None:
    h = await library(db, tmp_path / "lib", {"a.jpg": 1, "b.jpg": 2, "group.jpg": 3})
    standin.script.update({
        h["a.jpg"]: [face(near(OBAMA, "a"))],
        h["b.jpg"]: [face(near(OBAMA, "b"))],
        h["group.jpg"]: [face(near(OBAMA, "g1"), LEFT), face(near(BIDEN, "g2"), RIGHT)],
    })
    await create_person(db, "Ann")
    await create_person(db, "Annie")
    await tag(db, h["a.jpg"], "Ann")
    await tag(db, h["b.jpg"], "Annie")
    async with passes(db, pool, standin.url) as p:
        await p.tick(sweep="full")
    async with db.execute("SELECT id FROM faces WHERE content_hash = ? ORDER BY idx", (h["group.jpg"],)) as cur:
        g1, g2 = [r[0] for r in await cur.fetchall()]
    await bind_face(db, g1, "ann")
    await bind_face(db, g2, "Annie")
    with pytest.raises(UsageError):
        await create_person(db, "ANN")
    with pytest.raises(UsageError):
        await rename_person(db, "Ann", "annie")
    await rename_person(db, "ann", "ANN")                          # a change of case is allowed
    res = await merge_people(db, "Annie", "ANN")
    # group.jpg had a face of each: Annie's face there is left unbound; b.jpg's face moves.
    assert (res.moved, res.unbound) == (1, 1)
    got = await bindings(db)
    assert got[(h["b.jpg"], 0)] == ("ANN", "bootstrap") and got[(h["group.jpg"], 1)] == (None, None)
    assert got[(h["group.jpg"], 0)] == ("ANN", "manual")
    assert [(p.name, p.faces) for p in await list_people(db)] == [("ANN", 3)]
    with pytest.raises(NotFoundError):
        await merge_people(db, "Annie", "ANN")
    with pytest.raises(UsageError):
        await merge_people(db, "ANN", "ann")
    # A manual binding moves another face of that photo off the person.
    await bind_face(db, g2, "ANN")
    got = await bindings(db)
    assert got[(h["group.jpg"], 1)] == ("ANN", "manual") and got[(h["group.jpg"], 0)] == (None, None)


def test_embedding_blobs_and_similarity() -> None:
    v = [0.5, -1.25, 3.0, 1e-3]
    blob = to_blob(v)
    assert len(blob) == 16 and list(from_blob(blob)) == pytest.approx(v)
    assert blob[:4] == b"\x00\x00\x00\x3f"                        # little-endian float32 0.5
    assert cosine(v, [2 * x for x in v]) == pytest.approx(1.0)
    assert cosine(v, [-x for x in v]) == pytest.approx(-1.0)
    assert cosine(v, v[:3]) == 0.0 and cosine([0.0, 0.0], [1.0, 0.0]) == 0.0
    assert sum(x * x for x in normalized(v)) == pytest.approx(1.0)
    mean = mean_direction([[10.0, 0.0], [0.0, 1.0], [1.0]])        # normalised first; other length skipped
    assert mean == pytest.approx([0.5, 0.5])
    assert mean_direction([]) is None


async def test_faces_drawn_by_hand_have_no_embedding_and_never_skew_autobind(
        db: aiosqlite.Connection, pool: WorkerPool, standin: StandIn, tmp_path: Path) -> None:
    h = await library(db, tmp_path / "lib", {"a.jpg": 1, "group.jpg": 2, "c.jpg": 3, "hand.jpg": 4})
    standin.script.update({
        h["hand.jpg"]: [],
        h["a.jpg"]: [face(near(OBAMA, "a"))],
        h["group.jpg"]: [face(near(BIDEN, "g1"), LEFT), face(near(OBAMA, "g2"), RIGHT)],
        h["c.jpg"]: [],
    })
    ann = await create_person(db, "Ann")
    await tag(db, h["a.jpg"], "Ann")
    async with passes(db, pool, standin.url, min_cos=-1.0) as p:
        await p.tick()
        # A box drawn by hand (as the server stores it: empty embedding), one bound and one not.
        async with transaction(db):
            for content_hash, idx, person in ((h["c.jpg"], 5, ann.id), (h["group.jpg"], 6, None),
                                              (h["hand.jpg"], 0, None), (h["hand.jpg"], 1, None)):
                await db.execute(
                    "INSERT INTO faces (content_hash, idx, x, y, w, h, score, embedding, model, person_id, bound_by, "
                    "created_at) VALUES (?, ?, 0, 0, 0.1, 0.1, 1, x'', 'manual', ?, ?, 'now')",
                    (content_hash, idx, person, "manual" if person else None))
        await tag(db, h["group.jpg"], "Ann")
        await tag(db, h["hand.jpg"], "Ann")
        rep = await p.tick()
    # Even with a threshold of -1 the hand-drawn face is not matched, and the mean (of the one real
    # face) still picks the face that resembles Ann.
    assert rep.swept_bound == 1
    got = await bindings(db)
    assert got[(h["group.jpg"], 1)] == ("Ann", "auto")
    assert got[(h["group.jpg"], 0)] == got[(h["group.jpg"], 6)] == (None, None)
    assert got[(h["hand.jpg"], 0)] == got[(h["hand.jpg"], 1)] == (None, None)
