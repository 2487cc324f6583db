"""Face settings: which detector (FACE_BACKEND), where Apollo is, and how much one tick may do.

FACE_BACKEND=apollo|embedded|off. Unset: `apollo` when APOLLO_FACE_API_BASE_URL (or
APOLLO_API_BASE_URL) is set, else `embedded` when its packages are installed
(`pip install 'imageapi[faces]'`), else off. `backend_reason` says which and why, in one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imageapi.core.errors import ConfigError
from imageapi.core.parsers import env_flag, env_int, env_number, env_token, parse_url, raw_value

if TYPE_CHECKING:
    from imageapi.core.config import Config

DEFAULT_HASH_BACKFILL_MAX_PER_TICK = 2000
DEFAULT_BACKLOG_MAX_PER_TICK = 64
DEFAULT_DETECT_CONCURRENCY = 8
DEFAULT_DETECT_TIMEOUT_SEC = 60.0
DEFAULT_AUTOBIND_MIN_COS = 0.4
DEFAULT_CLUSTER_MIN_FACES = 3
DEFAULT_CLUSTER_HOUR = 3
DEFAULT_EMBEDDED_MIN_COS = 0.9   # dlib descriptors share a common direction: see bench/faces_quality.py
BACKENDS = ("embedded", "apollo", "off")
# The embedded detector on the <=1600 px picture: see bench/bench_faces_embedded.py for the figures.
DEFAULT_UPSAMPLE = 1
DEFAULT_MIN_SIZE_PX = 40
DEFAULT_MIN_SCORE = 0.0


@dataclass(frozen=True)
class FaceSettings:
    base_url: str | None  # one URL, or several separated by commas (the client spreads requests)
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
    backend: str | None = None     # None: apollo when a base URL is set, else off
    backend_reason: str = ""
    upsample: int = DEFAULT_UPSAMPLE
    min_size_px: int = DEFAULT_MIN_SIZE_PX
    min_score: float = DEFAULT_MIN_SCORE
    api_token: str | None = None   # APOLLO_FACE_API_TOKEN: sent as a bearer token (imageapi faces serve's)

    @property
    def active(self) -> str:
        """embedded, apollo or off."""
        if self.backend is not None:
            return self.backend
        return "apollo" if self.base_url is not None else "off"

    @property
    def enabled(self) -> bool:
        return self.active != "off"

    @property
    def disabled_message(self) -> str:
        return f"face detection is disabled: {self.backend_reason}" if self.backend_reason else DISABLED_MESSAGE

    @property
    def base_urls(self) -> tuple[str, ...]:
        return tuple(self.base_url.split(",")) if self.base_url else ()


DISABLED_MESSAGE = (
    "face detection is disabled: set APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL) to Apollo's address"
)


def _backend(env: Mapping[str, str], base_url: str | None) -> tuple[str, str]:
    """(backend, why), checked: FACE_BACKEND=embedded needs its packages, apollo needs a URL."""
    from imageapi.core.faces.embedded import available

    found = raw_value(env, "FACE_BACKEND")
    if found is not None:
        value = found[1].lower()
        if value not in BACKENDS:
            raise ConfigError("FACE_BACKEND", f"{found[1]!r} is not one of {', '.join(BACKENDS)}")
        if value == "embedded":
            missing = available()
            if missing is not None:
                raise ConfigError("FACE_BACKEND", f"embedded: {missing}")
            return value, "FACE_BACKEND=embedded: the embedded detector in the worker processes"
        if value == "apollo":
            if base_url is None:
                raise ConfigError("FACE_BACKEND", "apollo needs APOLLO_FACE_API_BASE_URL (or APOLLO_API_BASE_URL)")
            return value, f"FACE_BACKEND=apollo: Apollo at {base_url}"
        return value, ("FACE_BACKEND=off (FACE_BACKEND=embedded for the embedded detector, or "
                       "APOLLO_FACE_API_BASE_URL with FACE_BACKEND unset for Apollo)")
    if base_url is not None:
        return "apollo", f"Apollo at {base_url} (APOLLO_FACE_API_BASE_URL is set; FACE_BACKEND unset)"
    missing = available()
    if missing is None:
        return "embedded", ("the embedded detector in the worker processes (its packages are installed, "
                            "no Apollo URL is set; FACE_BACKEND unset)")
    return "off", (f"FACE_BACKEND unset, no Apollo URL (APOLLO_FACE_API_BASE_URL) and {missing}")


def face_settings_from_env(env: Mapping[str, str]) -> FaceSettings:
    """Read and check the face settings (load_config does, once). Raises ConfigError naming the first bad one."""
    base_url = env_urls_or_none(env, "APOLLO_FACE_API_BASE_URL", "APOLLO_API_BASE_URL")
    backend, reason = _backend(env, base_url)
    return FaceSettings(
        base_url=base_url,
        api_token=env_token(env, "APOLLO_FACE_API_TOKEN"),
        backend=backend,
        backend_reason=reason,
        upsample=env_int(env, "FACE_UPSAMPLE", DEFAULT_UPSAMPLE, minimum=0, maximum=3),
        min_size_px=env_int(env, "FACE_MIN_SIZE_PX", DEFAULT_MIN_SIZE_PX, minimum=1, maximum=1600),
        min_score=env_number(env, "FACE_MIN_SCORE", DEFAULT_MIN_SCORE, minimum=-10.0, maximum=10.0),
        hash_backfill_max_per_tick=env_int(env, "FACE_HASH_BACKFILL_MAX_PER_TICK",
                                           DEFAULT_HASH_BACKFILL_MAX_PER_TICK, maximum=1_000_000),
        backlog_max_per_tick=env_int(env, "FACE_BACKLOG_MAX_PER_TICK", DEFAULT_BACKLOG_MAX_PER_TICK,
                                     maximum=100_000),
        detect_concurrency=env_int(env, "FACE_DETECT_CONCURRENCY", DEFAULT_DETECT_CONCURRENCY, maximum=256),
        detect_timeout=env_number(env, "FACE_DETECT_TIMEOUT_SEC", DEFAULT_DETECT_TIMEOUT_SEC, minimum=0.0,
                                  maximum=86400.0, above=True, unit=" of seconds"),
        # dlib's descriptors all lie in a narrow cone: its own default (about its Euclidean 0.6).
        autobind_min_cos=env_number(env, "FACE_AUTOBIND_MIN_COS", DEFAULT_EMBEDDED_MIN_COS if backend == "embedded"
                                    else DEFAULT_AUTOBIND_MIN_COS, minimum=-1.0, maximum=1.0),
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
