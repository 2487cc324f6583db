"""The settings of `imageapi faces serve` (read with every other setting by load_config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from imageapi.core.parsers import env_int, env_number, env_token

DEFAULT_QUEUE_PER_WORKER = 8   # a client's default 8 requests in flight fit one worker's queue
DEFAULT_MAX_BODY_MB = 20      # the pictures imageapi sends are <=1600 px JPEGs: well under 2 MiB
DEFAULT_TIMEOUT_SEC = 60.0    # waiting for a worker plus detection


@dataclass(frozen=True)
class ServeSettings:
    workers: int = 1
    queue_per_worker: int = DEFAULT_QUEUE_PER_WORKER
    max_body: int = DEFAULT_MAX_BODY_MB * 1024 * 1024
    timeout: float = DEFAULT_TIMEOUT_SEC
    token: str | None = None   # FACE_SERVE_TOKEN: detect calls must carry it as a bearer token

    @property
    def queue_limit(self) -> int:
        return self.workers * self.queue_per_worker


def serve_settings_from_env(env: Mapping[str, str]) -> ServeSettings:
    """FACE_SERVE_QUEUE_PER_WORKER, FACE_SERVE_MAX_BODY_MB, FACE_SERVE_TIMEOUT_SEC, FACE_SERVE_TOKEN
    (the number of workers comes from --workers or WORKERS). Raises ConfigError naming the first
    bad one."""
    return ServeSettings(
        token=env_token(env, "FACE_SERVE_TOKEN"),
        queue_per_worker=env_int(env, "FACE_SERVE_QUEUE_PER_WORKER", DEFAULT_QUEUE_PER_WORKER,
                                 minimum=0, maximum=10_000),
        max_body=env_int(env, "FACE_SERVE_MAX_BODY_MB", DEFAULT_MAX_BODY_MB, maximum=1024) * 1024 * 1024,
        timeout=env_number(env, "FACE_SERVE_TIMEOUT_SEC", DEFAULT_TIMEOUT_SEC, minimum=0.0, maximum=86400.0,
                           above=True, unit=" of seconds"),
    )
