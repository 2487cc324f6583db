"""Face settings: where Apollo is, and how much one tick may do.

Faces are disabled when neither APOLLO_FACE_API_BASE_URL nor APOLLO_API_BASE_URL is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageapi.core.errors import ConfigError
from imageapi.core.parsers import env_int, env_number, parse_url, raw_value

if TYPE_CHECKING:
    from imageapi.core.config import Config

DEFAULT_HASH_BACKFILL_MAX_PER_TICK = 2000
DEFAULT_BACKLOG_MAX_PER_TICK = 64
DEFAULT_DETECT_CONCURRENCY = 8
DEFAULT_DETECT_TIMEOUT_SEC = 60.0
DEFAULT_AUTOBIND_MIN_COS = 0.4


@dataclass(frozen=True)
class FaceSettings:
    base_url: str | None  # one URL, or several separated by commas (the client spreads requests)
    hash_backfill_max_per_tick: int = DEFAULT_HASH_BACKFILL_MAX_PER_TICK
    backlog_max_per_tick: int = DEFAULT_BACKLOG_MAX_PER_TICK
    detect_concurrency: int = DEFAULT_DETECT_CONCURRENCY
    detect_timeout: float = DEFAULT_DETECT_TIMEOUT_SEC
    autobind_min_cos: float = DEFAULT_AUTOBIND_MIN_COS

    @property
    def enabled(self) -> bool:
        return self.base_url is not None

    @property
    def base_urls(self) -> tuple[str, ...]:
        return tuple(self.base_url.split(",")) if self.base_url else ()


DISABLED_MESSAGE = (
    "face detection is disabled: set APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL) to Apollo's address"
)


def face_settings_from_env(env: Mapping[str, str]) -> FaceSettings:
    """Read and check the face settings (load_config does, once). Raises ConfigError naming the first bad one."""
    return FaceSettings(
        base_url=env_urls_or_none(env, "APOLLO_FACE_API_BASE_URL", "APOLLO_API_BASE_URL"),
        hash_backfill_max_per_tick=env_int(env, "FACE_HASH_BACKFILL_MAX_PER_TICK",
                                           DEFAULT_HASH_BACKFILL_MAX_PER_TICK, maximum=1_000_000),
        backlog_max_per_tick=env_int(env, "FACE_BACKLOG_MAX_PER_TICK", DEFAULT_BACKLOG_MAX_PER_TICK,
                                     maximum=100_000),
        detect_concurrency=env_int(env, "FACE_DETECT_CONCURRENCY", DEFAULT_DETECT_CONCURRENCY, maximum=256),
        detect_timeout=env_number(env, "FACE_DETECT_TIMEOUT_SEC", DEFAULT_DETECT_TIMEOUT_SEC, minimum=0.0,
                                  maximum=86400.0, above=True, unit=" of seconds"),
        autobind_min_cos=env_number(env, "FACE_AUTOBIND_MIN_COS", DEFAULT_AUTOBIND_MIN_COS, minimum=-1.0,
                                    maximum=1.0),
    )


def env_urls_or_none(env: Mapping[str, str], *names: str) -> str | None:
    """Comma-separated http(s) URLs (each checked, repeats dropped), joined by commas; None when unset."""
    found = raw_value(env, *names)
    if found is None:
        return None
    name, raw = found
    urls = [parse_url(name, part) for part in raw.split(",") if part.strip()]
    if not urls:
        raise ConfigError(name, f"must be one or more http(s) URLs separated by commas, got {raw[:40]!r}")
    return ",".join(dict.fromkeys(urls))


def face_settings(config: Config) -> FaceSettings:
    """The face settings load_config read."""
    return config.faces
