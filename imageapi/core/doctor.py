"""`imageapi doctor`: what is available, what is missing, and how to fix it."""

from __future__ import annotations

import os
import shutil
import sqlite3
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
    try:
        conn = sqlite3.connect(config.database_path)
        conn.execute("PRAGMA user_version").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        conn.close()
    except sqlite3.Error as exc:
        return Check("database", False, f"{config.database_path}: {exc}",
                     "check the file's permissions or set DATABASE_URL")
    return Check("database", True, f"{config.database_path} is writable")


def run_checks(config: Config) -> list[Check]:
    return [
        *_ffmpeg(),
        _heif(),
        _exiftool(),
        _database(config),
        _writable("thumbnails", config.thumbnails, "set THUMBNAILS to a writable folder"),
    ]
