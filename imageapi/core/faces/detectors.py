"""The detect interface both face backends implement, and the two implementations.

The backlog (imageapi.core.faces.backlog) runs `worker_fn` in the worker pool on each candidate
(read the file, check its hash, render the upright <=1600 px picture: one code path,
prepare_for_detection) and then awaits `detect` on what came back:
- Apollo: the worker sends back the JPEG, `detect` POSTs it (ApolloError on failure);
- embedded: the worker also runs the detector on that JPEG, so only the faces travel back and
  `detect` just hands them over. It is never "down": a worker process that crashes fails that
  one photo transiently (the pool retries it alone), an undecodable file fails permanently.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from imageapi.core.faces.apollo import ApolloClient, ApolloError, Detection
from imageapi.core.faces.settings import FaceSettings

WorkItem = tuple[str, str, str]   # path, kind, content hash


class Detector(Protocol):
    kind: str            # apollo or embedded
    description: str     # for messages: "Apollo at URL", "the embedded detector (model)"
    base_url: str        # where it is ("embedded" for the in-process one)

    @property
    def worker_fn(self) -> Callable[[list[WorkItem]], list[Any]]:
        """The picklable function the worker pool runs on a batch: a Prepared per item."""
        ...

    async def detect(self, prepared: Any, content_hash: str) -> Detection:
        """The faces of one prepared picture; ApolloError (permanent or not) when it failed."""
        ...

    async def health(self) -> dict[str, Any]:
        """Raises ApolloError(connection=True) when the backend cannot be reached."""
        ...

    async def aclose(self) -> None: ...


class ApolloDetector:
    """Apollo over HTTP (imageapi.core.faces.apollo.ApolloClient)."""

    kind = "apollo"

    def __init__(self, client: ApolloClient) -> None:
        self.client = client
        self.base_url = client.base_url
        self.description = f"Apollo at {client.base_url}"

    @property
    def worker_fn(self) -> Callable[[list[WorkItem]], list[Any]]:
        from imageapi.core.faces.backlog import prepare_batch

        return prepare_batch

    async def detect(self, prepared: Any, content_hash: str) -> Detection:
        assert prepared.jpeg is not None
        return await self.client.detect(prepared.jpeg, content_hash)

    async def health(self) -> dict[str, Any]:
        return await self.client.health()

    async def aclose(self) -> None:
        await self.client.aclose()


class EmbeddedDetector:
    """dlib in the worker processes (imageapi.core.faces.embedded)."""

    kind = "embedded"
    base_url = "embedded"

    def __init__(self, *, upsample: int, min_size_px: int, min_score: float) -> None:
        from imageapi.core.faces.embedded import MODEL

        self.model = MODEL
        self.description = f"the embedded detector ({MODEL})"
        self._fn = functools.partial(detect_batch, upsample=upsample, min_size_px=min_size_px, min_score=min_score)

    @property
    def worker_fn(self) -> Callable[[list[WorkItem]], list[Any]]:
        return self._fn

    async def detect(self, prepared: Any, content_hash: str) -> Detection:
        if prepared.detection is None:  # the worker made a picture but no detection: a bug, retried later
            raise ApolloError("the embedded detector gave no answer")
        detection: Detection = prepared.detection
        return detection

    async def health(self) -> dict[str, Any]:
        return {"model": self.model}

    async def aclose(self) -> None:
        return None


def detect_batch(items: list[WorkItem], *, upsample: int, min_size_px: int, min_score: float) -> list[Any]:
    """In a worker process: prepare each picture as for Apollo, then detect its faces here."""
    from dataclasses import replace

    from imageapi.core.errors import UnsupportedMediaError
    from imageapi.core.faces.backlog import prepare_for_detection
    from imageapi.core.faces.embedded import detect_jpeg

    out = []
    for item in items:
        prep = prepare_for_detection(*item)
        if prep.jpeg is not None:
            try:
                detection = detect_jpeg(prep.jpeg, upsample=upsample, min_score=min_score, min_face_px=min_size_px)
            except UnsupportedMediaError as exc:
                prep = replace(prep, jpeg=None, error=exc.message, permanent=True)
            except MemoryError:
                prep = replace(prep, jpeg=None, error="out of memory while detecting faces")
            except Exception as exc:  # a dlib error costs this file a retry later, not the tick
                prep = replace(prep, jpeg=None, error=f"face detector: {type(exc).__name__}: {exc}")
            else:
                # The faces travel back, not the picture.
                prep = replace(prep, jpeg=None, detection=detection)
        out.append(prep)
    return out


def make_detector(settings: FaceSettings, client: ApolloClient | Detector | None = None) -> Detector:
    """The detector of the configured backend; `client` (an ApolloClient or a Detector) when given."""
    if isinstance(client, ApolloClient):
        return ApolloDetector(client)
    if client is not None:
        return client
    if settings.active == "embedded":
        return EmbeddedDetector(upsample=settings.upsample, min_size_px=settings.min_size_px,
                                min_score=settings.min_score)
    if settings.active == "apollo" and settings.base_url is not None:
        return ApolloDetector(ApolloClient(settings.base_url, timeout=settings.detect_timeout,
                                           concurrency=settings.detect_concurrency, token=settings.api_token))
    raise ValueError("face detection is off")
