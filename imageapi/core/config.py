"""Settings from the environment, a `.env` file (the working directory or any parent), and overrides.

The names are the ones users of the original server know (DATABASE_URL, BASE_PATH, THUMBNAILS, ...).
Precedence: command-line overrides > process environment > `.env` > defaults. Every setting that
can have a sensible default has one, under a per-user data folder, so a first run needs only the
folder to scan.

load_config reads and checks every setting once, into one typed Config (with its sections: video,
server, faces, insights), through the parsers of imageapi.core.parsers. Nothing else parses a
setting: a bad value is a ConfigError naming it before any command starts anything.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values, find_dotenv

from imageapi.core.errors import ConfigError
from imageapi.core.faces.serve_settings import ServeSettings, serve_settings_from_env
from imageapi.core.faces.settings import FaceSettings, face_settings_from_env
from imageapi.core.insights.settings import InsightSettings, insight_settings_from_env
from imageapi.core.parsers import (
    env_duration,
    env_flag,
    env_int,
    env_number,
    parse_bind,
    parse_header_text,
    parse_list,
    parse_url,
    shown,
)
from imageapi.core.postgres.url import DatabaseSetting, is_postgres_url, parse_postgres_url, redact

DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "© OpenStreetMap contributors"
LOG_LEVELS = ("off", "error", "warn", "info", "debug", "trace")

# NAS and OS clutter skipped by default (fnmatch patterns on a single path component).
# ".*" covers hidden folders and files, which includes .DS_Store and ._ AppleDouble files.
DEFAULT_IGNORE = ("@eaDir", "#recycle", "#snapshot", ".DS_Store", "._*", ".*", "Thumbs.db", "desktop.ini")

# Watcher intervals: at least a second, so that no value makes the loop spin; at most a year
# (longer timers overflow the event loop's clock arithmetic).
MIN_INTERVAL = 1.0
MAX_INTERVAL = 366 * 86400.0
MAX_WORKERS = 256
MAX_THUMB_SIZE = 10_000
MIN_SECRET_BYTES = 32  # the length tokens.check_secret asks for
DEFAULT_TOKEN_TTL = 7 * 86400.0
MAX_TOKEN_TTL = 10 * 365 * 86400.0
DEFAULT_LEASE_SECONDS = 60.0
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _default_transcodes() -> int:
    return max(1, (os.cpu_count() or 1) // 2)


@dataclass(frozen=True)
class VideoSettings:
    max_transcodes: int = field(default_factory=_default_transcodes)  # VIDEO_MAX_TRANSCODES
    previews_max_per_tick: int = 8                                    # VIDEO_PREVIEWS_MAX_PER_TICK (0: off)


@dataclass(frozen=True)
class ServerSettings:
    token_ttl: float = DEFAULT_TOKEN_TTL  # TOKEN_TTL, seconds
    processes: int = 1                    # SERVE_PROCESSES
    # TRUSTED_PROXIES: reverse proxies whose X-Forwarded-Proto is believed (the cookie's Secure flag)
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class WorkerSettings:
    """`imageapi worker` (imageapi.core.drainer)."""

    lease_seconds: float = DEFAULT_LEASE_SECONDS  # WORKER_LEASE_SECONDS
    # LIBRARY_PATH_MAP: (library root or name as the database knows it, where this host sees it)
    path_map: tuple[tuple[str, Path], ...] = ()

    def local_root(self, name: str, root: Path | str) -> Path:
        """Where this host finds a library: a mapping for its name, else for the longest prefix of
        its root (whole folder names only), else the root itself."""
        text = str(root)
        best: tuple[int, Path] | None = None
        for source, local in self.path_map:
            if source == name:
                return local
            if source.startswith("/") and (text == source or text.startswith(source.rstrip("/") + "/")):
                if best is None or len(source) > best[0]:
                    best = (len(source), local / text[len(source):].lstrip("/") if text != source else local)
        return best[1] if best else Path(text)


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
    # WATCH_DRAINS=false: the watcher scans but leaves the face passes and video previews to
    # `imageapi worker` processes (whose row leases it does not take).
    watch_drains: bool = True
    job_lease: float = 30.0  # JOB_LEASE_SECONDS: a dead job lock holder's lock is free after this
    thumb_size: int = 400
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    video: VideoSettings = field(default_factory=VideoSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    faces: FaceSettings = field(default_factory=lambda: FaceSettings(base_url=None))
    face_serve: ServeSettings = field(default_factory=ServeSettings)  # imageapi faces serve
    insights: InsightSettings = field(default_factory=lambda: insight_settings_from_env({}))
    ffmpeg: str | None = None      # IMAGEAPI_FFMPEG: this binary, not the one on PATH
    ffprobe: str | None = None     # IMAGEAPI_FFPROBE: this binary, or "none" to read ffmpeg's banner
    # DATABASE_URL=postgresql://...: until the store layer speaks PostgreSQL, only `imageapi db
    # copy` uses it; every other command refuses it (database_path is then the default SQLite file).
    postgres: DatabaseSetting | None = None
    # MAP_TILE_URL / MAP_TILE_ATTRIBUTION: the web client's map background; None: no tiles (the
    # clusters on a plain background).
    map_tile_url: str | None = DEFAULT_TILE_URL
    map_tile_attribution: str = DEFAULT_TILE_ATTRIBUTION

    @property
    def database(self) -> DatabaseSetting:
        return self.postgres or DatabaseSetting("sqlite", path=self.database_path)

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


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
    if "\x00" in value:
        raise ConfigError("DATABASE_URL", "must be a path or sqlite:///path (it holds a NUL character)")
    if value.startswith("sqlite:"):
        # sqlite:///abs/path and sqlite:////abs/path -> /abs/path; sqlite://rel/path or
        # sqlite:rel/path -> rel/path; a query string (?mode=rwc) is dropped.
        rest = value[len("sqlite:"):].split("?", 1)[0].removeprefix("//")
        value = "/" + rest.lstrip("/") if rest.startswith("/") else rest
        if not value.strip("/"):
            raise ConfigError("DATABASE_URL", "no path after sqlite://")
    elif "://" in value:
        raise ConfigError("DATABASE_URL", "must be a path, sqlite:///path or postgresql://user:pass@host/db, "
                          f"got {shown(redact(value))}")
    return expand_user("DATABASE_URL", value)


def expand_user(setting: str, raw: str) -> Path:
    """~ and ~user expanded; a ~user that does not exist is the setting's error, not a crash."""
    try:
        return Path(raw).expanduser()
    except RuntimeError:
        raise ConfigError(setting, f"{shown(raw)}: no such user's home folder") from None


def parse_log_level(value: str, setting: str = "LOG_LEVEL") -> str:
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
            raise ConfigError(setting, f"unknown level {shown(level)} (one of {', '.join(LOG_LEVELS)})")
        if not target or target.startswith("imageapi") or chosen is None:
            chosen = level
    if chosen is None:
        raise ConfigError(setting, "empty value")
    return chosen


def _interval(env: Mapping[str, str], name: str, default: float) -> float:
    return env_number(env, name, default, minimum=MIN_INTERVAL, maximum=MAX_INTERVAL, unit=" of seconds")


def load_config(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None, **overrides: Any
) -> Config:
    """Read and check every setting. Raises ConfigError naming the first bad one."""
    # A blank value is an unset one (the default), except IGNORE_PATTERNS= which ignores nothing.
    env = {k: v for k, v in read_env(environ, cwd).items() if v.strip() or k == "IGNORE_PATTERNS"}
    data_dir = default_data_dir(env)

    def path_setting(name: str, default: Path) -> Path:
        raw = env.get(name)
        if not raw:
            return default
        if "\x00" in raw:
            raise ConfigError(name, "must be a path (it holds a NUL character)")
        return expand_user(name, raw)

    db_raw = env.get("DATABASE_URL")
    postgres = parse_postgres_url(db_raw) if db_raw and is_postgres_url(db_raw) else None
    if overrides.get("database_path") is not None:
        postgres = None  # --database: this SQLite file, whatever DATABASE_URL says
    database_path = parse_database_url(db_raw) if db_raw and not is_postgres_url(db_raw) else data_dir / "imageapi.db"

    base_path = path_setting("BASE_PATH", Path()) if env.get("BASE_PATH") else None
    if base_path is not None:
        check_library_root("BASE_PATH", base_path)

    log_name = "LOG_LEVEL" if env.get("LOG_LEVEL") else "RUST_LOG"
    log_raw = env.get(log_name) or "info"
    ignore_raw = env.get("IGNORE_PATTERNS")
    bind_url = (env.get("BIND_URL") or "").strip() or "127.0.0.1:8080"
    parse_bind("BIND_URL", bind_url)
    secret_key = parse_header_text("SECRET_KEY", env["SECRET_KEY"]) if env.get("SECRET_KEY") else None
    if secret_key is not None and len(secret_key.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigError("SECRET_KEY", f"is too short ({len(secret_key.encode('utf-8'))} bytes): use at least "
                          f"{MIN_SECRET_BYTES} random bytes")
    config = Config(
        data_dir=data_dir,
        database_path=database_path,
        thumbnails=path_setting("THUMBNAILS", data_dir / "thumbnails"),
        video_path=path_setting("VIDEO_PATH", data_dir / "video"),
        gifs_directory=path_setting("GIFS_DIRECTORY", data_dir / "gifs"),
        preview_clips_directory=path_setting("PREVIEW_CLIPS_DIRECTORY", data_dir / "preview_clips"),
        base_path=base_path,
        bind_url=bind_url,
        secret_key=secret_key,
        log_level=parse_log_level(log_raw, log_name),
        excluded_dirs=parse_list(env.get("EXCLUDED_DIRS"), strip="/"),
        ignore_patterns=parse_list(ignore_raw, strip="/") if ignore_raw is not None else DEFAULT_IGNORE,
        watch_quick_interval=_interval(env, "WATCH_QUICK_INTERVAL_SECONDS", 60.0),
        watch_full_interval=_interval(env, "WATCH_FULL_INTERVAL_SECONDS", 3600.0),
        watch_drains=env_flag(env, "WATCH_DRAINS", True),
        job_lease=env_number(env, "JOB_LEASE_SECONDS", 30.0, minimum=1.0, maximum=3600.0, unit=" of seconds"),
        thumb_size=env_int(env, "THUMBNAIL_SIZE", 400, maximum=MAX_THUMB_SIZE),
        workers=env_int(env, "WORKERS", os.cpu_count() or 1, maximum=MAX_WORKERS),
        video=VideoSettings(
            max_transcodes=env_int(env, "VIDEO_MAX_TRANSCODES", _default_transcodes(), maximum=64),
            previews_max_per_tick=env_int(env, "VIDEO_PREVIEWS_MAX_PER_TICK", 8, minimum=0, maximum=10_000),
        ),
        server=ServerSettings(
            token_ttl=env_duration(env, "TOKEN_TTL", DEFAULT_TOKEN_TTL, minimum=1.0, maximum=MAX_TOKEN_TTL),
            processes=env_int(env, "SERVE_PROCESSES", 1, maximum=64),
            trusted_proxies=_networks(env, "TRUSTED_PROXIES"),
        ),
        worker=WorkerSettings(
            lease_seconds=env_number(env, "WORKER_LEASE_SECONDS", DEFAULT_LEASE_SECONDS, minimum=1.0,
                                     maximum=86400.0, unit=" of seconds"),
            path_map=parse_path_map(env.get("LIBRARY_PATH_MAP")),
        ),
        faces=face_settings_from_env(env),
        face_serve=serve_settings_from_env(env),
        insights=insight_settings_from_env(env),
        ffmpeg=tool_setting(env, "IMAGEAPI_FFMPEG"),
        ffprobe=tool_setting(env, "IMAGEAPI_FFPROBE", allow_none=True),
        postgres=postgres,
        map_tile_url=map_tile_url(env.get("MAP_TILE_URL", DEFAULT_TILE_URL)),
        map_tile_attribution=parse_header_text("MAP_TILE_ATTRIBUTION", env.get("MAP_TILE_ATTRIBUTION")
                                               or DEFAULT_TILE_ATTRIBUTION),
    )
    return config.with_overrides(**overrides)


def map_tile_url(raw: str) -> str | None:
    """MAP_TILE_URL: an http(s) URL template with {z}, {x} and {y} (Leaflet's); "none": no tiles
    (blank is the default, as for every setting)."""
    if raw.strip().lower() == "none":
        return None
    url = parse_url("MAP_TILE_URL", raw, "https://tile.openstreetmap.org/{z}/{x}/{y}.png")
    missing = [p for p in ("{z}", "{x}", "{y}") if p not in url]
    if missing:
        raise ConfigError("MAP_TILE_URL", f"must hold {', '.join(missing)} (a tile URL template), got {shown(raw)}")
    return url


def parse_path_map(raw: str | None, setting: str = "LIBRARY_PATH_MAP") -> tuple[tuple[str, Path], ...]:
    """Comma-separated FROM=TO: FROM a library's root as the database holds it (or a folder above
    it), or a library's name; TO where this host sees it, a readable folder."""
    out: list[tuple[str, Path]] = []
    for part in parse_list(raw):
        source, sep, local = part.partition("=")
        source, local = source.strip(), local.strip()
        if not sep or not source or not local or "\x00" in part:
            raise ConfigError(setting, f"{shown(part)} must be FROM=TO (e.g. /mnt/nas/photos=/Volumes/photos)")
        if not local.startswith(("/", "~")):
            raise ConfigError(setting, f"{shown(local)} must be an absolute path")
        if source in {s for s, _ in out}:
            raise ConfigError(setting, f"{shown(source)} is mapped twice")
        target = expand_user(setting, local)
        check_library_root(setting, target)
        out.append((source.rstrip("/") or "/" if source.startswith("/") else source, target))
    return tuple(out)


def _networks(env: Mapping[str, str], name: str) -> tuple[Network, ...]:
    """Comma-separated IP addresses or networks (127.0.0.1, 10.0.0.0/8, ::1)."""
    nets: list[Network] = []
    for part in parse_list(env.get(name)):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(name, f"{part!r} is not an IP address or network") from None
    return tuple(nets)


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
        raise ConfigError(name, f"{raw!r} {what}{hint}")
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
