"""Libraries: named roots. Every file row belongs to one; its path is stored relative to the root,
in the stored form of imageapi.core.names."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from imageapi.core.config import Config, check_library_root
from imageapi.core.database import transaction
from imageapi.core.db import Connection, utcnow
from imageapi.core.errors import ConfigError, NotFoundError, PathOutsideLibraryError, UsageError
from imageapi.core.names import check_length, on_disk, safe_text, stored
from imageapi.core.repositories import libraries as repo
from imageapi.core.repositories.libraries import LibraryRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Library:
    id: int
    name: str
    root: Path


def _row(row: LibraryRow) -> Library:
    return Library(id=row.id, name=row.name, root=Path(row.root))


async def list_libraries(db: Connection) -> list[Library]:
    return [_row(r) for r in await repo.all_libraries(db)]


async def get_library(db: Connection, name: str) -> Library:
    row = await repo.by_name(db, name)
    if row is None:
        known = ", ".join(lib.name for lib in await list_libraries(db)) or "none yet"
        raise NotFoundError(f"no library named {name!r} (known: {known})")
    return _row(row)


async def add_library(db: Connection, name: str, path: Path) -> Library:
    if not NAME_RE.match(name):
        raise UsageError(f"library name {name!r} must be letters, digits, '.', '_' or '-'")
    root = Path(os.path.abspath(path.expanduser()))
    try:
        check_library_root("PATH", root)
    except ConfigError as exc:
        raise UsageError(f"cannot add library {name!r}: {root} is not a readable directory") from exc
    if safe_text(str(root)) != str(root):
        # Names inside a library may be any bytes; its root is kept as text in the database.
        raise UsageError(f"cannot add library {name!r}: its path is not valid UTF-8: {safe_text(str(root))}")
    async with transaction(db):  # the checks and the insert as one: no other writer in between
        existing = {lib.name: lib for lib in await list_libraries(db)}
        if name in existing:
            if existing[name].root == root:
                return existing[name]
            raise UsageError(f"library {name!r} already exists at {existing[name].root}")
        for lib in existing.values():
            if _overlaps(lib.root, root):
                raise UsageError(f"{root} overlaps library {lib.name!r} at {lib.root}")
        new_id = await repo.insert_library(db, name, str(root), utcnow())
    return Library(id=new_id, name=name, root=root)


def _overlaps(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


async def remove_library(db: Connection, name: str) -> Library:
    lib = await get_library(db, name)
    async with transaction(db):
        await repo.delete_library(db, lib.id)
    return lib


async def sync_base_path(db: Connection, config: Config) -> None:
    """BASE_PATH is the library `main`: create it, or move it when the setting changed."""
    if config.base_path is None:
        return
    root = Path(os.path.abspath(config.base_path))
    row = await repo.by_name(db, "main")
    if row is None:
        await add_library(db, "main", root)
    elif Path(row.root) != root:
        async with transaction(db):
            await repo.set_root(db, row.id, str(root))


def locate(libraries: list[Library], path: Path) -> tuple[Library, str]:
    """The library holding an absolute path and the path relative to its root ('' for the root),
    in the stored form."""
    absolute = Path(os.path.abspath(path.expanduser()))
    for lib in libraries:
        if absolute == lib.root or lib.root in absolute.parents:
            rel = absolute.relative_to(lib.root).as_posix()
            return lib, "" if rel == "." else stored(rel)
    raise NotFoundError(f"{absolute} is in no library")


def clean_relative(rel: str) -> str:
    """Check a client-supplied relative path (in the stored form) and normalise it. Refuses
    anything that could leave the root (absolute paths, '..', NUL), a text that is the stored form
    of no name, and a path too long for any filesystem (UsageError). Every other character,
    control characters and backslashes included, can be part of a POSIX file name, and is."""
    if rel is None:
        raise PathOutsideLibraryError("path is required")
    if "\x00" in rel:
        raise PathOutsideLibraryError("path contains NUL")
    if rel.startswith("/") or (os.sep == "\\" and ("\\" in rel or re.match(r"^[A-Za-z]:", rel))):
        raise PathOutsideLibraryError("path must be relative to the library root")
    parts = [p for p in PurePosixPath(rel).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise PathOutsideLibraryError("path must not contain '..'")
    clean = "/".join(parts)
    check_length(on_disk(clean))
    return clean


def resolve_in_library(lib: Library, rel: str) -> Path:
    """The real path of `rel` inside the library; refuses symlinks that point outside the root."""
    clean = clean_relative(rel)
    candidate = lib.root / on_disk(clean) if clean else lib.root
    real = Path(os.path.realpath(candidate))
    root_real = Path(os.path.realpath(lib.root))
    if real != root_real and root_real not in real.parents:
        raise PathOutsideLibraryError("path leads outside the library")
    return candidate


def thumbnail_path(config: Config, library: str, rel_path: str) -> Path:
    """THUMBNAILS/<library>/<relative path>, keeping the source's name (bytes are always JPEG),
    the very bytes of it when it is not valid UTF-8 (rel_path is in the stored form)."""
    return config.thumbnails / library / on_disk(rel_path)


def sentinel_path(thumb: Path) -> Path:
    return thumb.with_name(thumb.name + ".unsupported")


def cache_folders(config: Config, name: str) -> list[Path]:
    """Every cache imageapi keeps per library, mirroring its tree."""
    return [base / name for base in (config.thumbnails, config.video_path, config.gifs_directory,
                                     config.preview_clips_directory)]


def drop_caches(config: Config, name: str) -> None:
    """Delete a removed library's caches: a new library of the same name must not inherit them."""
    import shutil

    for folder in cache_folders(config, name):
        shutil.rmtree(folder, ignore_errors=True)
