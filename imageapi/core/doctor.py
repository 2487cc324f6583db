"""`imageapi doctor`: what is available, what is missing, and how to fix it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass

from imageapi.core.config import Config
from imageapi.core.errors import ImageapiError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    required: bool = True


def _ffmpeg() -> list[Check]:
    """The ffmpeg and ffprobe in use with their versions, and a real run of each kind of ffmpeg
    command imageapi builds (core.video_check): a binary that runs is not one that works."""
    from imageapi.core import video_check

    try:
        ffmpeg_line, probe_line = video_check.describe()
    except ImageapiError as exc:
        return [Check("ffmpeg", False, exc.message,
                      "install ffmpeg (apt install ffmpeg), `pip install imageio-ffmpeg`, or set IMAGEAPI_FFMPEG")]
    checks = [Check("ffmpeg", True, ffmpeg_line)]
    has_probe = not probe_line.startswith(("none", "not found"))
    checks.append(Check("ffprobe", has_probe, probe_line, None if has_probe else "optional: apt install ffmpeg",
                        required=False))
    smoke = video_check.smoke_test()
    if smoke.ok:
        checks.append(Check("video smoke test", True, "; ".join(smoke.steps)))
    else:
        checks.append(Check("video smoke test", False, f"{smoke.failed}: failed: {smoke.message}",
                            "use another ffmpeg build (IMAGEAPI_FFMPEG), e.g. the imageio-ffmpeg package's"))
    return checks


def _heif() -> Check:
    try:
        import pillow_heif

        return Check("HEIF support", True, f"pillow-heif {pillow_heif.__version__}, "
                     f"libheif {pillow_heif.libheif_version()}")
    except Exception as exc:  # an import failure of a binary wheel can be anything
        return Check("HEIF support", False, str(exc), "pip install pillow-heif")


def _exiftool() -> Check:
    path = shutil.which("exiftool")
    return Check(
        "exiftool", path is not None, path or "not found (optional: a last resort for RAW previews)",
        None if path else "optional: apt install libimage-exiftool-perl", required=False,
    )


def _writable(name: str, folder: os.PathLike[str] | str, fix: str) -> Check:
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
        return Check(name, True, f"{folder} is writable")
    except OSError as exc:
        return Check(name, False, f"{folder}: {exc.strerror or exc}", fix)


def _database(config: Config) -> Check:
    folder_check = _writable("database", config.database_path.parent,
                             "set DATABASE_URL to a path in a writable folder")
    if not folder_check.ok:
        return folder_check
    from imageapi.core.db import DriverError, probe_writable

    try:
        probe_writable(config.database_path)
    except DriverError as exc:
        return Check("database", False, f"{config.database_path}: {exc}",
                     "check the file's permissions or set DATABASE_URL")
    return Check("database", True, f"{config.database_path} is writable")


# Less free space than this on the database's disk is reported: a write that finds the disk full
# stops the run (exit code 6; nothing committed is lost).
DB_FREE_MIN = 16 * 1024 * 1024


def _database_integrity(config: Config) -> list[Check]:
    """The database file is an SQLite database whose pages are sound (PRAGMA quick_check), and
    its disk has room to grow."""
    from imageapi.core.db import DriverError, check_header, database_error, quick_check, recover_commands
    from imageapi.core.errors import DatabaseCorruptError

    path = config.database_path
    checks: list[Check] = []
    if not path.exists():
        checks.append(Check("database integrity", True, f"{path} does not exist yet (made on first use)"))
    else:
        fix = recover_commands(path)
        try:
            check_header(path)
            problems = quick_check(path, 20)
        except DatabaseCorruptError as exc:  # the header: not a database at all, nothing to recover
            checks.append(Check("database integrity", False, exc.message,
                                "set DATABASE_URL to the imageapi database, or restore it from a backup"))
        except (DriverError, ImageapiError) as exc:
            corrupt = isinstance(database_error(exc), DatabaseCorruptError)
            detail = f"{path} is damaged: {exc}" if corrupt else f"cannot check {path}: {exc}"
            checks.append(Check("database integrity", False, detail,
                                fix if corrupt else "check the file's permissions or set DATABASE_URL"))
        else:
            if problems:
                shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} problems)" if len(problems) > 3 else "")
                checks.append(Check("database integrity", False, f"{path} is damaged: {shown}", fix))
            else:
                checks.append(Check("database integrity", True, f"{path}: quick_check ok"))
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError as exc:
        return checks + [Check("database disk", False, f"{path.parent}: {exc.strerror or exc}",
                               "set DATABASE_URL to a path in a folder that exists")]
    detail = f"{free / 1024 / 1024:,.1f} MB free on the disk holding {path.parent}"
    if free < DB_FREE_MIN:
        checks.append(Check("database disk", False, f"nearly full: {detail}",
                            "free some space there; a run that finds the disk full stops with exit code 6 "
                            "and keeps everything written before, and the next run finishes the job"))
    else:
        checks.append(Check("database disk", True, detail))
    return checks


def _postgres(config: Config) -> list[Check]:
    """A PostgreSQL DATABASE_URL: the server answers, a write can begin, the schema's version
    (migrated on the next start when behind, refused when a newer imageapi made it), where
    embeddings are kept, and the database's size."""
    import concurrent.futures

    from imageapi.core.postgres.migrations import PG_MIGRATIONS
    from imageapi.core.postgres.probe import ProbeError, probe

    assert config.postgres is not None
    shown = config.postgres.shown
    fix = "check DATABASE_URL, that the server runs and that the user may connect (docs/postgresql.md)"
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as ex:  # doctor may be called inside a running loop
            found = ex.submit(asyncio.run, probe(config.postgres.url)).result()
    except ProbeError as exc:
        return [Check("database", False, f"{shown}: {exc}", fix)]
    latest = max(m.version for m in PG_MIGRATIONS)
    checks = [Check("database", True, f"{shown}: PostgreSQL {found.version}, writable, "
                    f"{found.size_bytes / 1024 / 1024:,.1f} MB; embeddings as {found.embeddings}")]
    if found.schema > latest:
        checks.append(Check("database schema", False, f"version {found.schema} was made by a newer imageapi "
                            f"(this one knows {latest})", "upgrade imageapi on this host"))
    else:
        state = ("current" if found.schema == latest
                 else f"version {found.schema}, migrated to {latest} on the next start")
        checks.append(Check("database schema", True, state))
    return checks


def _faces(config: Config) -> Check:
    """Which face backend runs and why (FACE_BACKEND, or the default it fell to)."""
    from imageapi.core.faces.embedded import available

    faces = config.faces
    fix = None
    if not faces.enabled:
        missing = available()
        fix = ("optional: pip install 'imageapi[faces]' (the embedded detector) or set APOLLO_FACE_API_BASE_URL"
               if missing is not None else "optional: unset FACE_BACKEND (the embedded detector is installed)")
    return Check("face detection", faces.enabled, f"{faces.active}: {faces.backend_reason}", fix, required=False)


def run_checks(config: Config) -> list[Check]:
    database = _postgres(config) if config.postgres is not None else [_database(config), *_database_integrity(config)]
    return [
        *_ffmpeg(),
        _heif(),
        _exiftool(),
        *database,
        _writable("thumbnails", config.thumbnails, "set THUMBNAILS to a writable folder"),
        _faces(config),
    ]
