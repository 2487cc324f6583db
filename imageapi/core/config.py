"""Settings from the environment, a `.env` file (the working directory or any parent), and overrides.

The names are the ones users of the original server know (DATABASE_URL, BASE_PATH, THUMBNAILS, ...).
Precedence: command-line overrides > process environment > `.env` > defaults. Every setting that
can have a sensible default has one, under a per-user data folder, so a first run needs only the
folder to scan.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values, find_dotenv

from imageapi.core.errors import ConfigError

LOG_LEVELS = ("off", "error", "warn", "info", "debug", "trace")

# NAS and OS clutter skipped by default (fnmatch patterns on a single path component).
# ".*" covers hidden folders and files, which includes .DS_Store and ._ AppleDouble files.
DEFAULT_IGNORE = ("@eaDir", "#recycle", "#snapshot", ".DS_Store", "._*", ".*", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class Config:
    data_dir: Path
    database_path: Path
    thumbnails: Path
    video_path: Path
    gifs_directory: Path
    preview_clips_directory: Path
    base_path: Path | None = None
    bind_url: str = "127.0.0.1:8080"
    secret_key: str | None = None
    log_level: str = "info"
    excluded_dirs: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = DEFAULT_IGNORE
    watch_quick_interval: float = 60.0
    watch_full_interval: float = 3600.0
    thumb_size: int = 400
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    ffmpeg: str | None = None      # IMAGEAPI_FFMPEG: this binary, not the one on PATH
    ffprobe: str | None = None     # IMAGEAPI_FFPROBE: this binary, or "none" to read ffmpeg's banner
    # The merged raw settings, for parts of imageapi that read settings of their own.
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.env.get(name)
        return value if value not in (None, "") else default


def default_data_dir(env: Mapping[str, str]) -> Path:
    if env.get("IMAGEAPI_DATA_DIR"):
        return Path(env["IMAGEAPI_DATA_DIR"]).expanduser()
    xdg = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg).expanduser() / "imageapi"


def read_env(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """The process environment over the nearest `.env` (working directory or any parent)."""
    merged: dict[str, str] = {}
    start = cwd or Path.cwd()
    dotenv_path = _find_dotenv(start)
    if dotenv_path:
        merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def _find_dotenv(start: Path) -> str | None:
    old = Path.cwd()
    try:
        os.chdir(start)
        return find_dotenv(usecwd=True) or None
    except OSError:
        return None
    finally:
        os.chdir(old)


def parse_database_url(value: str) -> Path:
    if value.startswith("sqlite:"):
        # sqlite:///abs/path and sqlite:////abs/path -> /abs/path; sqlite://rel/path or
        # sqlite:rel/path -> rel/path; a query string (?mode=rwc) is dropped.
        rest = value[len("sqlite:"):].split("?", 1)[0].removeprefix("//")
        value = "/" + rest.lstrip("/") if rest.startswith("/") else rest
        if not value.strip("/"):
            raise ConfigError("DATABASE_URL", "no path after sqlite://")
    elif "://" in value:
        raise ConfigError(
            "DATABASE_URL", f"only SQLite is supported (a path or sqlite:///path), got {value!r}"
        )
    return Path(value).expanduser()


def parse_log_level(value: str) -> str:
    """LOG_LEVEL or RUST_LOG: a bare level, or env_logger style 'imageapi=debug,other=warn'."""
    chosen = None
    for part in value.split(","):
        part = part.strip().lower()
        if not part:
            continue
        target, _, level = part.rpartition("=")
        if level == "warning":
            level = "warn"
        if level not in LOG_LEVELS:
            raise ConfigError("LOG_LEVEL", f"unknown level {level!r} (one of {', '.join(LOG_LEVELS)})")
        if not target or target.startswith("imageapi") or chosen is None:
            chosen = level
    if chosen is None:
        raise ConfigError("LOG_LEVEL", "empty value")
    return chosen


def _positive_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, f"must be greater than 0, got {raw!r}")
    return value


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole-number setting greater than 0; unset or blank gives the default."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(name, f"must be greater than 0, got {raw!r}")
    return value


def _csv(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(p.strip().strip("/") for p in raw.split(",") if p.strip().strip("/"))


def load_config(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, **overrides: Any
) -> Config:
    """Read and check every setting. Raises ConfigError naming the first bad one."""
    env = read_env(environ, cwd)
    data_dir = default_data_dir(env)

    def path_setting(name: str, default: Path) -> Path:
        raw = env.get(name)
        return Path(raw).expanduser() if raw else default

    db_raw = env.get("DATABASE_URL")
    database_path = parse_database_url(db_raw) if db_raw else data_dir / "imageapi.db"

    base_path = None
    if env.get("BASE_PATH"):
        base_path = Path(env["BASE_PATH"]).expanduser()
        check_library_root("BASE_PATH", base_path)

    log_raw = env.get("LOG_LEVEL") or env.get("RUST_LOG") or "info"
    ignore_raw = env.get("IGNORE_PATTERNS")
    config = Config(
        data_dir=data_dir,
        database_path=database_path,
        thumbnails=path_setting("THUMBNAILS", data_dir / "thumbnails"),
        video_path=path_setting("VIDEO_PATH", data_dir / "video"),
        gifs_directory=path_setting("GIFS_DIRECTORY", data_dir / "gifs"),
        preview_clips_directory=path_setting("PREVIEW_CLIPS_DIRECTORY", data_dir / "preview_clips"),
        base_path=base_path,
        bind_url=env.get("BIND_URL") or "127.0.0.1:8080",
        secret_key=env.get("SECRET_KEY") or None,
        log_level=parse_log_level(log_raw),
        excluded_dirs=_csv(env.get("EXCLUDED_DIRS")),
        ignore_patterns=_csv(ignore_raw) if ignore_raw is not None else DEFAULT_IGNORE,
        watch_quick_interval=_positive_number(env, "WATCH_QUICK_INTERVAL_SECONDS", 60.0),
        watch_full_interval=_positive_number(env, "WATCH_FULL_INTERVAL_SECONDS", 3600.0),
        thumb_size=positive_int(env, "THUMBNAIL_SIZE", 400),
        workers=positive_int(env, "WORKERS", os.cpu_count() or 1),
        ffmpeg=tool_setting(env, "IMAGEAPI_FFMPEG"),
        ffprobe=tool_setting(env, "IMAGEAPI_FFPROBE", allow_none=True),
        env=env,
    )
    return config.with_overrides(**overrides)


def tool_setting(env: Mapping[str, str], name: str, *, allow_none: bool = False) -> str | None:
    """An external binary chosen by a setting: an executable file (a path, or a name on PATH),
    returned as an absolute path; with `allow_none`, "none" means "do without it"."""
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if allow_none and raw.lower() == "none":
        return "none"
    found = shutil.which(os.path.expanduser(raw))
    if found is None:
        what = ("is not on PATH" if os.sep not in raw else "does not exist"
                if not os.path.lexists(os.path.expanduser(raw)) else "is not an executable file")
        hint = ' (or "none")' if allow_none else ""
        raise ConfigError(name, f"{raw} {what}{hint}")
    return os.path.abspath(found)


def check_library_root(setting: str, path: Path) -> None:
    if not path.is_dir():
        raise ConfigError(setting, f"{path} is not a readable directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(setting, f"{path} is not readable")


def ensure_dir(setting: str, path: Path) -> Path:
    """Create a folder imageapi writes to, or fail with the setting's name."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(setting, f"cannot create {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(setting, f"{path} is not writable")
    return path


def ensure_dirs(config: Config) -> None:
    """The folders every job needs: the database's and the thumbnails'."""
    ensure_dir("DATABASE_URL", config.database_path.parent)
    ensure_dir("THUMBNAILS", config.thumbnails)
