"""Face settings: where Apollo is, and how much one tick may do.

Faces are disabled when neither APOLLO_FACE_API_BASE_URL nor APOLLO_API_BASE_URL is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageapi.core.parsers import env_flag, env_int, env_number, env_url_or_none, raw_value

if TYPE_CHECKING:
    from imageapi.core.config import Config

DEFAULT_HASH_BACKFILL_MAX_PER_TICK = 2000
DEFAULT_BACKLOG_MAX_PER_TICK = 64
DEFAULT_DETECT_CONCURRENCY = 8
DEFAULT_DETECT_TIMEOUT_SEC = 60.0
DEFAULT_AUTOBIND_MIN_COS = 0.4
DEFAULT_CLUSTER_MIN_FACES = 3
DEFAULT_CLUSTER_HOUR = 3


@dataclass(frozen=True)
class FaceSettings:
    base_url: str | None
    hash_backfill_max_per_tick: int = DEFAULT_HASH_BACKFILL_MAX_PER_TICK
    backlog_max_per_tick: int = DEFAULT_BACKLOG_MAX_PER_TICK
    detect_concurrency: int = DEFAULT_DETECT_CONCURRENCY
    detect_timeout: float = DEFAULT_DETECT_TIMEOUT_SEC
    autobind_min_cos: float = DEFAULT_AUTOBIND_MIN_COS
    # Clustering (imageapi.core.faces.cluster): on after each batch and nightly, cosine distance
    # (None: the model family's default), faces a new unnamed person needs, the local hour of the
    # nightly full pass (None: off).
    cluster_enabled: bool = True
    cluster_max_distance: float | None = None
    cluster_min_faces: int = DEFAULT_CLUSTER_MIN_FACES
    cluster_hour: int | None = DEFAULT_CLUSTER_HOUR

    @property
    def enabled(self) -> bool:
        return self.base_url is not None


DISABLED_MESSAGE = (
    "face detection is disabled: set APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL) to Apollo's address"
)


def face_settings_from_env(env: Mapping[str, str]) -> FaceSettings:
    """Read and check the face settings (load_config does, once). Raises ConfigError naming the first bad one."""
    return FaceSettings(
        base_url=env_url_or_none(env, "APOLLO_FACE_API_BASE_URL", "APOLLO_API_BASE_URL"),
        hash_backfill_max_per_tick=env_int(env, "FACE_HASH_BACKFILL_MAX_PER_TICK",
                                           DEFAULT_HASH_BACKFILL_MAX_PER_TICK, maximum=1_000_000),
        backlog_max_per_tick=env_int(env, "FACE_BACKLOG_MAX_PER_TICK", DEFAULT_BACKLOG_MAX_PER_TICK,
                                     maximum=100_000),
        detect_concurrency=env_int(env, "FACE_DETECT_CONCURRENCY", DEFAULT_DETECT_CONCURRENCY, maximum=256),
        detect_timeout=env_number(env, "FACE_DETECT_TIMEOUT_SEC", DEFAULT_DETECT_TIMEOUT_SEC, minimum=0.0,
                                  maximum=86400.0, above=True, unit=" of seconds"),
        autobind_min_cos=env_number(env, "FACE_AUTOBIND_MIN_COS", DEFAULT_AUTOBIND_MIN_COS, minimum=-1.0,
                                    maximum=1.0),
        cluster_enabled=env_flag(env, "FACE_CLUSTER", True),
        cluster_max_distance=(env_number(env, "FACE_CLUSTER_MAX_DISTANCE", 0.0, minimum=0.0, maximum=2.0, above=True)
                              if raw_value(env, "FACE_CLUSTER_MAX_DISTANCE") else None),
        cluster_min_faces=env_int(env, "FACE_CLUSTER_MIN_FACES", DEFAULT_CLUSTER_MIN_FACES, minimum=1, maximum=10_000),
        cluster_hour=_cluster_hour(env),
    )


def _cluster_hour(env: Mapping[str, str]) -> int | None:
    found = raw_value(env, "FACE_CLUSTER_HOUR")
    if found is not None and found[1].strip().lower() == "off":
        return None
    return env_int(env, "FACE_CLUSTER_HOUR", DEFAULT_CLUSTER_HOUR, minimum=0, maximum=23)


def face_settings(config: Config) -> FaceSettings:
    """The face settings load_config read."""
    return config.faces
