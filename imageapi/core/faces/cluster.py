"""Clustering unknown faces into (unnamed) persons, as Immich does: a DBSCAN-like rule over the
embeddings of one model at a time (embeddings of two models are never compared).

Distance: cosine distance (1 - cosine similarity) of the embeddings, each normalised first.
FACE_CLUSTER_MAX_DISTANCE applies to every model when set; else it depends on the model family:
DLIB_MAX_DISTANCE for dlib's 128-d ResNet (measured on the corpus portraits: same person at most
0.049, different people at least 0.118; dlib's own 0.6 on raw descriptors of norm ~1.4 is about
0.09), OTHER_MAX_DISTANCE for ArcFace-like models such as Apollo's (Immich's default for them).

Incremental (after each detection batch, `cluster_new_faces`): a new unbound face joins the person
of its nearest neighbour within the distance (the nearest whose person is free in its photo and
was not rejected for it); otherwise, when it and its unbound neighbours make at least
FACE_CLUSTER_MIN_FACES faces (in as many photos), they start a new unnamed person; otherwise it
waits for the next full pass.

Full (`cluster_all`, `imageapi faces cluster --full`, nightly in the watcher): DBSCAN over every
face of the model: a core face has at least FACE_CLUSTER_MIN_FACES - 1 neighbours; clusters are
the connected core faces, and a border face joins the cluster of its nearest core neighbour. Each
cluster keeps the person most of its faces were bound to (named persons first, each person to one
cluster), so ids stay stable and named persons stay named; a cluster with none gets a new unnamed
person. A face in no cluster keeps a binding to a named person and loses one to an unnamed one.

Always: manual binds are never changed; a face is never bound to a person the user unbound it
from (face_rejections); a person has at most one face per photo; faces of one photo are never
each other's neighbours. Then an unnamed person whose photos carry exactly one person's name as
their only person tag is merged into that named person (people tags keep naming people).

Nearest neighbours: the model's embeddings are read once per pass into one float32 matrix; the
queries are matrix products in blocks of rows (BLOCK), the hits over the threshold kept (at most
MAX_NEIGHBOURS per face, by argpartition); on PostgreSQL with pgvector the incremental pass asks
an HNSW index (cosine, partial on the model, made on first use) for each new face's nearest
INDEXED_NEIGHBOURS instead of reading the matrix; clusters are connected components found by label
hooking in numpy. Numpy work runs in a thread, never in the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.faces.people import MANUAL_MODEL, merge_persons
from imageapi.core.faces.settings import FaceSettings
from imageapi.core.repositories import clusters as repo
from imageapi.core.repositories import people as people_repo

log = logging.getLogger(__name__)

DLIB_MAX_DISTANCE = 0.08
OTHER_MAX_DISTANCE = 0.5
BLOCK = 2048              # rows of a matrix product (BLOCK x N float32 similarities at once)
MAX_NEIGHBOURS = 1000     # kept per face: the nearest ones
INDEXED_NEIGHBOURS = 100  # read per face from pgvector's index
SIMS_AT_ONCE = 1 << 24    # similarities one product of `neighbours` makes (64 MiB)
FULL_MARK = "cluster_full_date"   # face_state key: the local date of the last nightly full pass


def max_distance(settings: FaceSettings, model: str) -> float:
    if settings.cluster_max_distance is not None:
        return settings.cluster_max_distance
    return DLIB_MAX_DISTANCE if model.startswith("dlib") else OTHER_MAX_DISTANCE


@dataclass
class ClusterReport:
    faces: int = 0            # faces of every model looked at
    bound: int = 0            # faces bound to a person by this pass
    unbound: int = 0          # faces a full pass took off a person
    new_persons: int = 0
    named: int = 0            # unnamed persons merged into a named one by people tags
    removed: int = 0          # unnamed persons left with no face, deleted
    seconds: float = 0.0

    def add(self, other: ClusterReport) -> None:
        for name in ("faces", "bound", "unbound", "new_persons", "named", "removed", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


# -- the matrix -----------------------------------------------------------------------------------

@dataclass
class FaceIndex:
    """One model's faces: row i is face ids[i]."""

    model: str
    ids: np.ndarray             # int64
    contents: np.ndarray        # int64: one number per content hash
    persons: np.ndarray         # int64: person id, 0 for none
    manual: np.ndarray          # bool: bound by a human
    vectors: np.ndarray         # float32 (n, dim), unit rows
    rows: dict[int, int] = field(default_factory=dict)   # face id -> row

    def __len__(self) -> int:
        return len(self.ids)


async def load_index(db: Connection, model: str) -> FaceIndex:
    """Every face of the model with an embedding (of the length most of them have), read once."""
    ids: list[int] = []
    contents: list[int] = []
    persons: list[int] = []
    manual: list[bool] = []
    blobs: list[bytes] = []
    content_nums: dict[str, int] = {}
    size = None
    async for f in repo.faces_of_model(db, model):
        blob = bytes(f.embedding or b"")
        if not blob:
            continue
        if size is None:
            size = len(blob)
        if len(blob) != size:
            continue  # a malformed answer: not comparable
        ids.append(f.id)
        contents.append(content_nums.setdefault(f.content_hash, len(content_nums)))
        persons.append(f.person_id or 0)
        manual.append(f.bound_by == "manual")
        blobs.append(blob)
    dim = (size or 4) // 4
    raw = np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32).reshape(len(ids), dim)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    vectors = raw / np.where(norms > 0, norms, np.float32(1.0))
    index = FaceIndex(model, np.asarray(ids, dtype=np.int64), np.asarray(contents, dtype=np.int64),
                      np.asarray(persons, dtype=np.int64), np.asarray(manual, dtype=bool),
                      np.ascontiguousarray(vectors, dtype=np.float32))
    index.rows = {face_id: i for i, face_id in enumerate(ids)}
    return index


def neighbours(vectors: np.ndarray, queries: np.ndarray, max_dist: float,
               cap: int = MAX_NEIGHBOURS) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each query (unit rows), the rows of `vectors` within `max_dist` (cosine distance),
    nearest first, at most `cap`: (rows, distances)."""
    min_sim = np.float32(1.0 - max_dist)
    hits: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(queries))]
    step = max(BLOCK, SIMS_AT_ONCE // max(1, len(queries)))
    for start in range(0, len(vectors), step):
        sims = queries @ vectors[start:start + step].T
        qi, cj = np.nonzero(sims >= min_sim)
        if len(qi) == 0:
            continue
        bounds = np.searchsorted(qi, np.arange(len(queries) + 1))
        for q in range(len(queries)):
            lo, hi = bounds[q], bounds[q + 1]
            if lo < hi:
                cols = cj[lo:hi]
                hits[q].append((cols + start, sims[q, cols]))
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for parts in hits:
        if not parts:
            out.append((np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)))
            continue
        rows = np.concatenate([p[0] for p in parts])
        sims = np.concatenate([p[1] for p in parts])
        if len(rows) > cap:
            keep = np.argpartition(-sims, cap)[:cap]
            rows, sims = rows[keep], sims[keep]
        order = np.argsort(-sims, kind="stable")
        out.append((rows[order].astype(np.int64), (1.0 - sims[order]).astype(np.float32)))
    return out


# -- incremental --------------------------------------------------------------------------------

async def cluster_new_faces(db: Connection, settings: FaceSettings, content_hashes: list[str]) -> ClusterReport:
    """Cluster the unbound faces of these contents (just detected) against every face of their model."""
    started = time.monotonic()
    report = ClusterReport()
    if not settings.cluster_enabled or not content_hashes:
        return report
    by_model: dict[str, list[int]] = {}
    for face_id, model in await repo.unbound_in_contents(db, content_hashes):
        if model != MANUAL_MODEL:
            by_model.setdefault(model, []).append(face_id)
    touched: set[int] = set()
    vectors = await repo.embeddings_are_vectors(db)
    for model, face_ids in by_model.items():
        if vectors:  # PostgreSQL with pgvector: an HNSW index instead of the whole matrix
            await _incremental_indexed(db, settings, model, face_ids, report, touched)
            continue
        index = await load_index(db, model)
        report.faces += len(index)
        await _incremental(db, settings, index, face_ids, report, touched)
    report.named += await name_from_tags(db, sorted(touched))
    report.seconds = time.monotonic() - started
    return report


async def _incremental_indexed(db: Connection, settings: FaceSettings, model: str, face_ids: list[int],
                               report: ClusterReport, touched: set[int]) -> None:
    """The incremental rule with each face's neighbours read from pgvector's HNSW index (made on
    first use, per model and dimension)."""
    dim = await repo.embedding_dim(db, face_ids[0])
    if dim == 0:
        return
    await repo.ensure_vector_index(db, model, dim)
    limit = max(INDEXED_NEIGHBOURS, settings.cluster_min_faces * 4)
    dist = max_distance(settings, model)
    rejected = await people_repo.rejections_of_model(db, model)
    now = utcnow()
    report.faces += len(face_ids)
    async with transaction(db):
        for face_id in face_ids:
            if await repo.embedding_dim(db, face_id) != dim:
                continue  # not comparable with the others of its model
            found = await repo.vector_neighbours(db, model, dim, face_id, limit)
            me = next((n for n in found if n.id == face_id), None)
            if me is not None and me.person_id is not None:
                continue  # bound meanwhile (a face of this batch that started a person)
            content = me.content_hash if me is not None else None
            near = [n for n in found if n.id != face_id and n.content_hash != content and n.distance <= dist]
            joined = False
            for n in near:
                if n.person_id is not None and (face_id, n.person_id) not in rejected \
                        and await repo.bind_auto(db, face_id, n.person_id, now):
                    report.bound += 1
                    touched.add(n.person_id)
                    joined = True
                    break
            if joined:
                continue
            group = [face_id]
            seen = {content}
            for n in near:
                if n.person_id is None and n.content_hash not in seen:
                    seen.add(n.content_hash)
                    group.append(n.id)
            if len(group) < settings.cluster_min_faces:
                continue
            person = await people_repo.insert_unnamed(db, now)
            report.new_persons += 1
            touched.add(person)
            for member in group:
                if await repo.bind_auto(db, member, person, now):
                    report.bound += 1


async def cluster_unbound(db: Connection, settings: FaceSettings) -> ClusterReport:
    """The incremental rule for every unbound face (`imageapi faces cluster` without --full)."""
    started = time.monotonic()
    report = ClusterReport()
    touched: set[int] = set()
    for model in await repo.models(db, MANUAL_MODEL):
        index = await load_index(db, model)
        report.faces += len(index)
        await _incremental(db, settings, index, [int(i) for i in index.ids[index.persons == 0]], report, touched)
    report.named += await name_from_tags(db, sorted(touched))
    report.seconds = time.monotonic() - started
    return report


async def _incremental(db: Connection, settings: FaceSettings, index: FaceIndex, face_ids: list[int],
                       report: ClusterReport, touched: set[int]) -> None:
    rows = [index.rows[i] for i in face_ids if i in index.rows]
    if not rows:
        return
    found = await asyncio.to_thread(neighbours, index.vectors, index.vectors[rows], max_distance(settings, index.model))
    rejected = await people_repo.rejections_of_model(db, index.model)
    now = utcnow()
    async with transaction(db):
        for row, (near, _dist) in zip(rows, found, strict=True):
            if index.persons[row]:
                continue  # bound meanwhile (a face of this batch that started a person)
            face_id = int(index.ids[row])
            near = near[(near != row) & (index.contents[near] != index.contents[row])]
            joined = False
            for j in near:
                person = int(index.persons[j])
                if person and (face_id, person) not in rejected and await repo.bind_auto(db, face_id, person, now):
                    index.persons[row] = person
                    report.bound += 1
                    touched.add(person)
                    joined = True
                    break
            if joined:
                continue
            group = [row]
            seen = {int(index.contents[row])}
            for j in near:
                if not index.persons[j] and int(index.contents[j]) not in seen:
                    seen.add(int(index.contents[j]))
                    group.append(int(j))
            if len(group) < settings.cluster_min_faces:
                continue  # waits for more faces, or the next full pass
            person = await people_repo.insert_unnamed(db, now)
            report.new_persons += 1
            touched.add(person)
            for j in group:
                if await repo.bind_auto(db, int(index.ids[j]), person, now):
                    index.persons[j] = person
                    report.bound += 1


# -- full ---------------------------------------------------------------------------------------

async def cluster_all(db: Connection, settings: FaceSettings) -> ClusterReport:
    """Recluster every face of every model, but manual binds (see the module's doc)."""
    started = time.monotonic()
    report = ClusterReport()
    named = {r.id for r in await people_repo.all_people(db) if r.name is not None}
    for model in await repo.models(db, MANUAL_MODEL):
        index = await load_index(db, model)
        report.faces += len(index)
        if len(index):
            await _full(db, settings, index, named, report)
    async with transaction(db):
        report.removed += await people_repo.delete_empty_unnamed(db)
    unnamed = [r.id for r in await people_repo.all_people(db) if r.name is None]
    report.named += await name_from_tags(db, unnamed)
    report.seconds = time.monotonic() - started
    return report


def edges(index: FaceIndex, max_dist: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of faces (i < j) within `max_dist`, of two different photos: (i, j, similarity)."""
    v, contents = index.vectors, index.contents
    min_sim = np.float32(1.0 - max_dist)
    out_i, out_j, out_s = [], [], []
    step = max(1, min(BLOCK, SIMS_AT_ONCE // max(1, len(v))))   # bounded memory at any size
    for start in range(0, len(v), step):
        sims = v[start:start + step] @ v[start:].T    # pairs (i, j >= start): half the products
        qi, cj = np.nonzero(sims >= min_sim)
        gi, gj = qi + start, cj + start
        keep = (gj > gi) & (contents[gi] != contents[gj])
        out_i.append(gi[keep])
        out_j.append(gj[keep])
        out_s.append(sims[qi[keep], cj[keep]])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of n nodes and the edges (i, j): each node's smallest node id in its
    component (hooking to the smaller label, then pointer jumping: a few rounds, all vectorised)."""
    labels = np.arange(n, dtype=np.int64)
    while True:
        low = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, labels[i], low)
        np.minimum.at(new, labels[j], low)
        while True:  # every node points at its root
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def dbscan(n: int, i: np.ndarray, j: np.ndarray, s: np.ndarray, min_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels (-1: none) of n faces from their edges, and each face's neighbour count."""
    degree = np.bincount(i, minlength=n) + np.bincount(j, minlength=n)
    core = degree + 1 >= min_faces
    both = core[i] & core[j]
    comp = components(n, i[both], j[both])
    labels = np.where(core, comp, -1).astype(np.int64)
    # A border face joins the cluster of its nearest core neighbour.
    bi = np.concatenate([i[core[j] & ~core[i]], j[core[i] & ~core[j]]])
    bc = np.concatenate([j[core[j] & ~core[i]], i[core[i] & ~core[j]]])
    bs = np.concatenate([s[core[j] & ~core[i]], s[core[i] & ~core[j]]])
    if len(bi):
        order = np.lexsort((-bs, bi))
        bi, bc = bi[order], bc[order]
        first = np.unique(bi, return_index=True)[1]
        labels[bi[first]] = labels[bc[first]]
    return labels, degree


def assign(index: FaceIndex, labels: np.ndarray, degree: np.ndarray, named: set[int],
           rejected: set[tuple[int, int]]) -> np.ndarray:
    """The person each face should have: an existing id, a negative number for a new person (one
    per cluster without one), 0 for none. Manual faces keep theirs."""
    persons, manual = index.persons, index.manual
    votes: dict[tuple[int, int], int] = {}
    for row in np.nonzero((labels >= 0) & (persons > 0))[0]:
        key = (int(labels[row]), int(persons[row]))
        votes[key] = votes.get(key, 0) + 1
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for (label, person), _count in sorted(votes.items(), key=lambda kv: (kv[0][1] not in named, -kv[1], kv[0])):
        if label not in chosen and person not in used:
            chosen[label] = person
            used.add(person)
    want = np.zeros(len(index), dtype=np.int64)
    clustered = labels >= 0
    if clustered.any():
        top = int(labels.max()) + 1
        by_label = np.array([chosen.get(label, -1 - label) for label in range(top)], dtype=np.int64)
        want[clustered] = by_label[labels[clustered]]
    noise = labels < 0
    want[noise] = np.where(np.isin(persons[noise], list(named)), persons[noise], 0)
    want[manual] = persons[manual]
    # Not this person; then one face per person and photo: manual ones first, then the face with
    # the most neighbours.
    taken: set[tuple[int, int]] = set()
    order = sorted(range(len(index)), key=lambda r: (not manual[r], -int(degree[r]), r))
    for r in order:
        p = int(want[r])
        if p == 0 or manual[r]:
            if p:
                taken.add((int(index.contents[r]), p))
            continue
        if p > 0 and (int(index.ids[r]), p) in rejected:
            want[r] = 0
            continue
        key = (int(index.contents[r]), p)
        if key in taken:
            want[r] = 0
        else:
            taken.add(key)
    return want


async def _full(db: Connection, settings: FaceSettings, index: FaceIndex, named: set[int],
                report: ClusterReport) -> None:
    dist = max_distance(settings, index.model)
    rejected = await people_repo.rejections_of_model(db, index.model)

    def compute() -> np.ndarray:
        i, j, s = edges(index, dist)
        labels, degree = dbscan(len(index), i, j, s, settings.cluster_min_faces)
        return assign(index, labels, degree, named, rejected)

    want = await asyncio.to_thread(compute)
    changed = np.nonzero((want != index.persons) & ~index.manual)[0]
    if not len(changed):
        return
    now = utcnow()
    async with transaction(db):
        off = [int(index.ids[r]) for r in changed if index.persons[r]]
        await repo.unbind_many(db, off)
        report.unbound += len(off)
        new_ids: dict[int, int] = {}
        binds: list[tuple[int, int]] = []
        for r in changed:
            p = int(want[r])
            if p == 0:
                continue
            if p < 0:
                if p not in new_ids:
                    new_ids[p] = await people_repo.insert_unnamed(db, now)
                    report.new_persons += 1
                p = new_ids[p]
            binds.append((int(index.ids[r]), p))
        report.bound += await repo.bind_auto_many(db, binds, now)


# -- people tags --------------------------------------------------------------------------------

async def name_from_tags(db: Connection, person_ids: list[int]) -> int:
    """Merge each unnamed person whose photos name exactly one person (a photo's only person tag)
    into that named person; how many were merged."""
    unnamed = [p.id for p in await people_repo.all_people(db) if p.name is None and p.id in set(person_ids)]
    if not unnamed:
        return 0
    tagged: dict[int, set[int]] = {}
    for vote in await repo.single_tag_votes(db, unnamed):
        tagged.setdefault(vote.person_id, set()).add(vote.tagged_id)
    merged = 0
    for person_id, names in sorted(tagged.items()):
        if len(names) == 1:
            await merge_persons(db, person_id, next(iter(names)))
            merged += 1
    return merged


# -- nightly ------------------------------------------------------------------------------------

async def nightly_due(db: Connection, settings: FaceSettings, now: datetime | None = None) -> bool:
    """Whether the nightly full pass is due: at or after FACE_CLUSTER_HOUR (local time), once a day."""
    if settings.cluster_hour is None or not settings.cluster_enabled:
        return False
    now = now or datetime.now().astimezone()
    if now.hour < settings.cluster_hour:
        return False
    return await people_repo.face_state(db, FULL_MARK) != now.date().isoformat()


async def run_nightly(db: Connection, settings: FaceSettings, now: datetime | None = None) -> ClusterReport | None:
    """The full pass when due (marked done first, so a failing pass is not retried all night). The
    watcher and `imageapi worker` (on any host) both call this: the mark is claimed, so one of them
    runs the day's pass."""
    if not await nightly_due(db, settings, now):
        return None
    now = now or datetime.now().astimezone()
    async with transaction(db):
        claimed = await people_repo.claim_face_state(db, FULL_MARK, now.date().isoformat())
    if not claimed:
        return None
    report = await cluster_all(db, settings)
    log.info("nightly face clustering: %d faces, %d bound, %d unbound, %d new persons, %d named by tags (%.1f s)",
             report.faces, report.bound, report.unbound, report.new_persons, report.named, report.seconds)
    return report
