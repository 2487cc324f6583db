"""Face settings: where Apollo is, and how much one tick may do.

Faces are disabled when neither APOLLO_FACE_API_BASE_URL nor APOLLO_API_BASE_URL is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from imageapi.core.config import Config, positive_int
from imageapi.core.errors import ConfigError

DEFAULT_HASH_BACKFILL_MAX_PER_TICK = 2000
DEFAULT_BACKLOG_MAX_PER_TICK = 64
DEFAULT_DETECT_CONCURRENCY = 8
DEFAULT_DETECT_TIMEOUT_SEC = 60.0
DEFAULT_AUTOBIND_MIN_COS = 0.4


@dataclass(frozen=True)
class FaceSettings:
    base_url: str | None
    hash_backfill_max_per_tick: int = DEFAULT_HASH_BACKFILL_MAX_PER_TICK
    backlog_max_per_tick: int = DEFAULT_BACKLOG_MAX_PER_TICK
    detect_concurrency: int = DEFAULT_DETECT_CONCURRENCY
    detect_timeout: float = DEFAULT_DETECT_TIMEOUT_SEC
    autobind_min_cos: float = DEFAULT_AUTOBIND_MIN_COS

    @property
    def enabled(self) -> bool:
        return self.base_url is not None


DISABLED_MESSAGE = (
    "face detection is disabled: set APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL) to Apollo's address"
)


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value is not None and value.strip() else None


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float | None) -> float:
    raw = _raw(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if value != value or value < lo or (hi is not None and value > hi) or value == float("inf"):
        bound = f"{lo}..{hi}" if hi is not None else f"greater than {lo}"
        raise ConfigError(name, f"must be {bound}, got {raw!r}")
    return value


def parse_base_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, f"must be an http(s) URL such as http://apollo:8000, got {raw!r}")
    return raw.rstrip("/")


def face_settings_from_env(env: Mapping[str, str]) -> FaceSettings:
    """Read and check the face settings. Raises ConfigError naming the first bad one."""
    base_url = None
    for name in ("APOLLO_FACE_API_BASE_URL", "APOLLO_API_BASE_URL"):
        raw = _raw(env, name)
        if raw is not None:
            base_url = parse_base_url(name, raw)
            break
    timeout = _float(env, "FACE_DETECT_TIMEOUT_SEC", DEFAULT_DETECT_TIMEOUT_SEC, 0.0, None)
    if timeout == 0:
        raise ConfigError("FACE_DETECT_TIMEOUT_SEC", "must be greater than 0")
    return FaceSettings(
        base_url=base_url,
        hash_backfill_max_per_tick=positive_int(
            env, "FACE_HASH_BACKFILL_MAX_PER_TICK", DEFAULT_HASH_BACKFILL_MAX_PER_TICK),
        backlog_max_per_tick=positive_int(env, "FACE_BACKLOG_MAX_PER_TICK", DEFAULT_BACKLOG_MAX_PER_TICK),
        detect_concurrency=positive_int(env, "FACE_DETECT_CONCURRENCY", DEFAULT_DETECT_CONCURRENCY),
        detect_timeout=timeout,
        autobind_min_cos=_float(env, "FACE_AUTOBIND_MIN_COS", DEFAULT_AUTOBIND_MIN_COS, -1.0, 1.0),
    )


def face_settings(config: Config) -> FaceSettings:
    return face_settings_from_env(config.env)
