"""People: named persons, and binding detected faces to them.

A person is linked to photos by tags: a tag whose name is a person's name (case-insensitive) says
that person is in the photo. Two rules bind faces without a human:
- bootstrap: a photo with exactly one detected face and exactly one person tag binds that face to
  that person (this is how a person gets a first embedding);
- autobind: in a photo tagged with a person's name, a face binds to that person when the cosine
  similarity between its embedding and the mean of that person's bound faces is at least
  FACE_AUTOBIND_MIN_COS; each face to at most one person and, never, two faces of one photo to
  one person (the best match wins). A unique index on faces(content_hash, person_id) backs this.
Embeddings are only compared within one model: a face is matched against the mean of the person's
faces of its own model (another backend's embeddings live in another space).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

from imageapi.core.database import transaction
from imageapi.core.db import Connection, DriverError, IntegrityError, utcnow
from imageapi.core.errors import ConflictError, NotFoundError, UsageError
from imageapi.core.faces.embeddings import cosine, from_blob, normalized
from imageapi.core.repositories import faces as repo
from imageapi.core.repositories import people as people_repo
from imageapi.core.repositories.faces import FaceRow

MAX_NAME = 200
SWEEP_MARK = "autobind_tags_seen"   # face_state key: created_at of the newest tag link swept
SWEEP_BATCH = 64                    # photos per transaction in a sweep


@dataclass(frozen=True)
class Person:
    id: int
    name: str | None     # None: an unnamed cluster

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"unnamed #{self.id}"


@dataclass
class PersonSummary:
    id: int
    name: str | None
    faces: int = 0
    photos: int = 0
    bound_by: dict[str, int] = field(default_factory=dict)
    cover_face_id: int | None = None     # the best-scored face

    @property
    def named(self) -> bool:
        return self.name is not None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"unnamed #{self.id}"


@dataclass(frozen=True)
class Binding:
    face_id: int
    person_id: int
    content_hash: str
    how: str            # auto, bootstrap, manual
    similarity: float | None


def _clean_name(name: str) -> str:
    clean = " ".join(name.split())
    if not clean:
        raise UsageError("a person's name cannot be empty")
    if len(clean) > MAX_NAME:
        raise UsageError(f"a person's name is at most {MAX_NAME} characters")
    return clean


async def get_person(db: Connection, name: str) -> Person:
    row = await people_repo.by_name(db, _clean_name(name))
    if row is None:
        raise NotFoundError(f"no person named {name!r}")
    return Person(row.id, row.name)


async def create_person(db: Connection, name: str) -> Person:
    clean = _clean_name(name)
    try:
        async with transaction(db):
            new_id = await people_repo.insert_person(db, clean, utcnow())
    except IntegrityError:
        raise UsageError(f"a person named {clean!r} already exists") from None
    return Person(new_id, clean)


async def list_people(db: Connection, named: bool | None = None) -> list[PersonSummary]:
    """Named persons by name (case aside), then unnamed ones, largest first. `named`: only those."""
    people: dict[int, PersonSummary] = {}
    for r in await people_repo.all_people(db):
        if named is None or named == (r.name is not None):
            people[r.id] = PersonSummary(r.id, r.name)
    for c in await people_repo.bound_counts(db):
        p = people.get(c.person_id)
        if p is not None:
            p.faces += c.faces
            p.photos += c.photos  # a person is in a photo at most once, so these add up
            p.bound_by[c.bound_by] = c.faces
    for person_id, face_id in (await people_repo.cover_faces(db)).items():
        if person_id in people:
            people[person_id].cover_face_id = face_id
    found = list(people.values())
    unnamed = sorted((p for p in found if not p.named), key=lambda p: (-p.faces, p.id))
    return [p for p in found if p.named] + unnamed


async def name_person(db: Connection, person_id: int, name: str) -> Person:
    """Name an unnamed person, or rename a named one (a change of case only is allowed). A name
    another person has is a ConflictError: merge instead. Tags are left as they are: autobind
    matches tags against the person's current name."""
    person = await person_by_id(db, person_id)
    clean = _clean_name(name)
    if await people_repo.name_taken(db, clean, person.id):
        raise ConflictError(f"a person named {clean!r} already exists; merge into them instead "
                            "(`imageapi people merge`, POST /persons/{id}/merge)")
    try:
        async with transaction(db):
            await people_repo.rename(db, person.id, clean)
    except IntegrityError:  # named by someone else meanwhile
        raise ConflictError(f"a person named {clean!r} already exists; merge into them instead") from None
    return Person(person.id, clean)


async def rename_person(db: Connection, old: str, new: str) -> Person:
    """Rename the person named `old` (see name_person)."""
    return await name_person(db, (await get_person(db, old)).id, new)


async def find_person(db: Connection, ref: str) -> Person:
    """A person by name; else, for a number (`12` or `#12`), by id: unnamed persons have only an id."""
    raw = ref.strip().removeprefix("#")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return await get_person(db, ref)
    if not ref.strip().startswith("#"):
        row = await people_repo.by_name(db, _clean_name(ref))
        if row is not None:
            return Person(row.id, row.name)
    return await person_by_id(db, int(raw))


@dataclass(frozen=True)
class MergeResult:
    source: str
    target: str
    moved: int       # faces now bound to target
    unbound: int     # faces of source left unbound: in photos where target already had a face, or
    #                  rejected from target by the user
    target_id: int = 0
    target_name: str | None = None


async def merge_people(db: Connection, source: str, target: str) -> MergeResult:
    """Merge `source` into `target` (names, or ids as `find_person` reads them)."""
    src, dst = await find_person(db, source), await find_person(db, target)
    return await merge_persons(db, src.id, dst.id)


async def merge_persons(db: Connection, source_id: int, target_id: int) -> MergeResult:
    """Merge person `source_id` into `target_id`: its faces go to target, then source is deleted.
    Named or not; the target keeps its name (an unnamed target merged with a named source takes
    the source's name, so a name is never lost)."""
    src, dst = await person_by_id(db, source_id), await person_by_id(db, target_id)
    if src.id == dst.id:
        raise UsageError("cannot merge a person into themselves")
    async with transaction(db):
        # A photo holding a face of each: the target's stays, the source's is unbound (one
        # person, one face per photo). A face the user said is not the target stays unbound.
        unbound = await people_repo.unbind_where_both(db, src.id, dst.id)
        unbound += await people_repo.unbind_rejected(db, src.id, dst.id)
        moved = await people_repo.move_faces(db, src.id, dst.id)
        await people_repo.move_rejections(db, src.id, dst.id)
        await people_repo.delete_person(db, src.id)
        name = dst.name
        if name is None and src.name is not None:
            name = src.name
            await people_repo.rename(db, dst.id, name)
    return MergeResult(src.label, Person(dst.id, name).label, moved, unbound, dst.id, name)


async def _claim(db: Connection, content_hash: str, face_id: int, person_id: int) -> None:
    """A human binds the face to the person: the one-face-per-person-per-photo rule moves any
    other face of this content off the person first (the human's choice wins over an earlier
    binding, automatic or not). In the caller's transaction."""
    await repo.unbind_person_in_content(db, content_hash, person_id, face_id)
    await repo.bind(db, face_id, person_id, "manual", utcnow())


async def bind_face(db: Connection, face_id: int, person_name: str | None) -> None:
    """A human's binding (or unbinding, with None). Moves another face of the same photo off this
    person first, since a person is in a photo once."""
    if person_name is None:
        await bind_face_to(db, face_id, None)
        return
    await bind_face_to(db, face_id, (await get_person(db, person_name)).id)


async def bind_face_to(db: Connection, face_id: int, person_id: int | None) -> None:
    """A human binds the face to a person by id (named or not), or unbinds it with None: "not this
    person", remembered so no rule binds the face to them again. Binding by hand takes back an
    earlier "not this person" for that pair."""
    found = await repo.face(db, face_id)
    if found is None:
        raise NotFoundError(f"no face with id {face_id}")
    content_hash = await repo.content_of_face(db, face_id)
    if person_id is not None:
        await person_by_id(db, person_id)
    async with transaction(db):
        if person_id is None:
            if found.person_id is not None:
                await people_repo.reject(db, face_id, found.person_id, utcnow())
            await repo.unbind(db, face_id)
            return
        await people_repo.unreject(db, face_id, person_id)
        await _claim(db, content_hash or "", face_id, person_id)


MANUAL_MODEL = "manual"     # the model of a face box drawn by a human (it has no embedding)
Box = tuple[float, float, float, float]   # x, y, w, h, relative to the upright picture, 0..1


@dataclass(frozen=True)
class ContentFaces:
    scanned: bool            # detection has run on this content
    faces: list[FaceRow]     # in order: detected ones as Apollo listed them, then drawn ones


def check_box(box: Box) -> Box:
    """A box inside the picture with a positive size (a little slack for rounding)."""
    x, y, w, h = (float(v) for v in box)
    if not all(0.0 <= v <= 1.0 for v in (x, y, w, h)):
        raise UsageError("a face box's x, y, w and h must be numbers from 0 to 1")
    if w <= 0 or h <= 0 or x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
        raise UsageError("a face box must have a positive size and lie inside the picture")
    return x, y, w, h


async def face_view(db: Connection, face_id: int) -> FaceRow:
    found = await repo.face(db, face_id)
    if found is None:
        raise NotFoundError(f"no face with id {face_id}")
    return found


async def content_faces(db: Connection, content_hash: str | None) -> ContentFaces:
    """The faces of one content; content not hashed yet has none and is not scanned."""
    if not content_hash:
        return ContentFaces(False, [])
    return ContentFaces(await repo.is_scanned(db, content_hash), await repo.faces_of_content(db, content_hash))


async def draw_face(db: Connection, content_hash: str | None, box: Box, person_name: str | None = None, *,
                    what: str = "this file") -> FaceRow:
    """A face box drawn by a human (no embedding), bound at once to the named person when one is
    given, under the same rule as `bind_face`. Faces belong to content: a file not hashed yet
    (`what` names it in the message) cannot have one."""
    box = check_box(box)
    if not content_hash:
        raise UsageError(f"{what!r} is not hashed yet; faces belong to content (try again after the next scan)")
    async with transaction(db):
        person = await get_person(db, person_name) if person_name is not None else None
        idx = await repo.next_idx(db, content_hash)
        face_id = await repo.insert_face(db, content_hash, idx, box, 1.0, b"", MANUAL_MODEL, utcnow())
        if person is not None:
            await _claim(db, content_hash, face_id, person.id)
    return await face_view(db, face_id)


async def delete_face(db: Connection, face_id: int) -> None:
    try:
        async with transaction(db):
            deleted = await repo.delete_face(db, face_id)
    except DriverError as exc:
        raise UsageError(f"cannot delete face {face_id}: {exc}") from None
    if deleted == 0:
        raise NotFoundError(f"no face with id {face_id}")


async def person_by_id(db: Connection, person_id: int) -> Person:
    found = await repo.person_by_id(db, person_id)
    if found is None:
        raise NotFoundError(f"no person with id {person_id}")
    return Person(*found)


class MeanCache:
    """Each person's mean face direction per model, read once and updated as faces are bound to them."""

    def __init__(self, db: Connection) -> None:
        self.db = db
        self._sums: dict[tuple[int, str], tuple[list[float], int]] = {}

    async def mean(self, person_id: int, model: str) -> list[float] | None:
        entry = self._sums.get((person_id, model))
        if entry is None:
            entry = await self._load(person_id, model)
            self._sums[(person_id, model)] = entry
        total, count = entry
        return [x / count for x in total] if count else None

    async def _load(self, person_id: int, model: str) -> tuple[list[float], int]:
        total: list[float] = []
        count = 0
        # Streamed, so a person with many faces costs time, not memory.
        async for blob in people_repo.embeddings_of(self.db, person_id, model):
            count = _accumulate(total, count, from_blob(blob))
        return total, count

    def added(self, person_id: int, model: str, embedding: array[float]) -> None:
        entry = self._sums.get((person_id, model))
        if entry is not None:
            total, count = entry
            self._sums[(person_id, model)] = (total, _accumulate(total, count, embedding))


def _accumulate(total: list[float], count: int, embedding: array[float]) -> int:
    if not embedding:
        return count  # a box drawn by hand has no embedding
    if not total:
        total.extend([0.0] * len(embedding))
    if len(embedding) != len(total):
        return count  # another model's embedding: not comparable
    for i, x in enumerate(normalized(embedding)):
        total[i] += x
    return count + 1


async def _person_tags(db: Connection, content_hash: str) -> list[Person]:
    return [Person(r.id, r.name) for r in await people_repo.person_tags(db, content_hash)]


async def autobind_photo(db: Connection, content_hash: str, min_cos: float,
                         means: MeanCache) -> list[Binding]:
    """Bind the faces of one photo by its person tags. Call inside the caller's transaction."""
    persons = await _person_tags(db, content_hash)
    if not persons:
        return []
    rows = await people_repo.photo_faces(db, content_hash)
    if not rows:
        return []
    rejected = await people_repo.rejections_in_content(db, content_hash)
    faces = [(f.id, from_blob(f.embedding), f.person_id) for f in rows]
    models = {f.id: f.model for f in rows}
    taken = {person_id for _, _, person_id in faces if person_id is not None}
    free_faces = [(fid, emb) for fid, emb, person_id in faces if person_id is None]
    free_persons = [p for p in persons if p.id not in taken]
    if not free_faces or not free_persons:
        return []
    chosen: list[Binding] = []
    if len(faces) == 1 and len(persons) == 1:
        fid, _ = free_faces[0]
        if (fid, free_persons[0].id) not in rejected:
            chosen.append(Binding(fid, free_persons[0].id, content_hash, "bootstrap", None))
    else:
        pairs: list[tuple[float, int, int]] = []
        for p in free_persons:
            for fid, emb in free_faces:
                if not emb or (fid, p.id) in rejected:
                    continue  # drawn by hand: nothing to compare; or the user said it is not them
                # Only with the person's faces of this face's model.
                m = await means.mean(p.id, models[fid])
                if m is None:
                    continue  # no bound face of this model yet: nothing to compare with
                sim = cosine(emb, m)
                if sim >= min_cos:
                    pairs.append((sim, fid, p.id))
        # Best matches first; a face and a person are each used once in this photo.
        used_faces: set[int] = set()
        used_persons: set[int] = set()
        for sim, fid, pid in sorted(pairs, key=lambda t: (-t[0], t[1], t[2])):
            if fid in used_faces or pid in used_persons:
                continue
            used_faces.add(fid)
            used_persons.add(pid)
            chosen.append(Binding(fid, pid, content_hash, "auto", sim))
    now = utcnow()
    embeddings = {fid: emb for fid, emb in free_faces}
    for b in chosen:
        await people_repo.bind_if_free(db, b.face_id, b.person_id, b.how, now)
        means.added(b.person_id, models[b.face_id], embeddings[b.face_id])
    return chosen


async def autobind_sweep(db: Connection, min_cos: float, *, incremental: bool,
                         means: MeanCache | None = None) -> int:
    """Autobind photos that have person tags and unbound faces, for tags added after detection
    and people who got a first face since. incremental: only tag links made since the last
    incremental sweep (cheap enough for every tick); otherwise every tagged photo. Returns the
    number of faces bound."""
    means = means or MeanCache(db)
    mark = None
    if incremental:
        mark = await people_repo.face_state(db, SWEEP_MARK) or ""
        # Read before the sweep: a link made while it runs is newer, so the next sweep sees it.
        newest = await people_repo.newest_tag_link(db) or mark
    photos = await people_repo.photos_to_autobind(db, mark)
    bound = 0
    for i in range(0, len(photos), SWEEP_BATCH):
        async with transaction(db):
            for content_hash in photos[i:i + SWEEP_BATCH]:
                bound += len(await autobind_photo(db, content_hash, min_cos, means))
    if mark is not None and newest and newest != mark:
        async with transaction(db):
            await people_repo.set_face_state(db, SWEEP_MARK, newest)
    return bound


@dataclass(frozen=True)
class FacesPage:
    faces: list[people_repo.PersonFace]
    next_cursor: str | None


async def faces_of_person(db: Connection, person_id: int, after: int, limit: int) -> FacesPage:
    """A page of the person's faces by id, after face id `after`."""
    await person_by_id(db, person_id)
    rows = await people_repo.faces_page(db, person_id, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return FacesPage(rows, str(rows[-1].id) if more and rows else None)
