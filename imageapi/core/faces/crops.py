"""A face as a small picture (the web client's people page): one face, or a person's best-scored
bound face, cut from the stored thumbnail of a file with that content (thumbnails are upright, and face
boxes are relative to the upright picture)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from imageapi.core.config import Config
from imageapi.core.db import Connection
from imageapi.core.errors import MediaError, NotFoundError
from imageapi.core.faces.people import person_by_id as person_by_id
from imageapi.core.libraries import thumbnail_path
from imageapi.core.repositories import faces as repo

CROP_SIZE = 160
MARGIN = 0.25  # of the box's size, on each side


@dataclass(frozen=True)
class FaceSource:
    thumbnail: Path
    box: tuple[float, float, float, float]  # x, y, w, h in 0..1
    face_id: int


async def face_source(db: Connection, config: Config, person_id: int) -> FaceSource:
    """The best-scored bound face of the person that has a stored thumbnail to cut it from."""
    await person_by_id(db, person_id)
    found = await repo.best_thumbnailed_face(db, person_id)
    if found is None:
        raise NotFoundError(f"person {person_id} has no face with a thumbnail yet")
    return FaceSource(thumbnail_path(config, found.library, found.rel_path), found.box, found.face_id)


async def face_source_of(db: Connection, config: Config, face_id: int) -> FaceSource:
    """One face (bound or not) and a stored thumbnail to cut it from."""
    found = await repo.thumbnailed_face(db, face_id)
    if found is None:
        if await repo.content_of_face(db, face_id) is None:
            raise NotFoundError(f"no face with id {face_id}")
        raise NotFoundError(f"face {face_id} has no photo with a thumbnail yet")
    return FaceSource(thumbnail_path(config, found.library, found.rel_path), found.box, found.face_id)


def crop_face(source: FaceSource, size: int = CROP_SIZE) -> bytes:
    """A square JPEG of the face with a margin around it (CPU and file work: run it in a thread)."""
    try:
        return _crop(source, size)
    except OSError as exc:  # the thumbnail went away or is not a picture
        raise MediaError(f"cannot cut the face from {source.thumbnail.name}: {exc}") from None


def _crop(source: FaceSource, size: int) -> bytes:
    with Image.open(source.thumbnail) as opened:
        im = opened.convert("RGB")
        width, height = im.size
        x, y, w, h = source.box
        side = max(w * width, h * height) * (1 + 2 * MARGIN)
        cx, cy = (x + w / 2) * width, (y + h / 2) * height
        left, top = max(0.0, cx - side / 2), max(0.0, cy - side / 2)
        right, bottom = min(float(width), left + side), min(float(height), top + side)
        face = im.crop((int(left), int(top), max(int(left) + 1, int(right)), max(int(top) + 1, int(bottom))))
        face.thumbnail((size, size))
        out = io.BytesIO()
        face.save(out, "JPEG", quality=85)
        return out.getvalue()
