"""The HTTP client for Apollo, the face detection service (protocol: docs/apollo-faces.md).

httpx rather than aiohttp: aiohttp is the server's, the core keeps its own client. Every call has
a connect and a read timeout plus an overall deadline (a server that trickles bytes cannot hold a
request open), the answer's size is capped, and every failure is classified for the backlog:
`permanent` (this content will never work: a 4xx other than 408/429) or transient (timeouts,
408/429, 5xx, refused connections, unparsable answers). `connection` marks failures that say the
service itself is unreachable, which the backlog uses to stop a tick early.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import httpx

from imageapi.core.errors import ServiceError
from imageapi.core.faces.embeddings import MAX_DIM

DETECT_PATH = "/api/faces/detect"
HEALTH_PATH = "/api/health"
MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # 1000 faces x 4096 floats as JSON fit well below
MAX_FACES = 1000
CONNECT_TIMEOUT = 10.0
HEALTH_TIMEOUT = 10.0

# httpx logs every request at INFO: a drain would write one line per photo.
logging.getLogger("httpx").setLevel(logging.WARNING)


class ApolloError(ServiceError):
    """A detect or health call that failed. `permanent`: do not retry this content.
    `connection`: the service could not be reached at all (refused, DNS, connect timeout)."""

    def __init__(self, message: str, *, permanent: bool = False, connection: bool = False,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.connection = connection
        self.status = status


@dataclass(frozen=True)
class DetectedFace:
    bbox: tuple[float, float, float, float]  # x, y, w, h relative to the sent image (0..1)
    score: float
    embedding: tuple[float, ...]


@dataclass(frozen=True)
class Detection:
    model: str
    faces: list[DetectedFace]


class ApolloClient:
    """One connection pool, sized to the number of detect calls allowed in flight."""

    def __init__(self, base_url: str, *, timeout: float, concurrency: int,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            limits=limits,
            transport=transport,
            follow_redirects=False,
        )

    async def __aenter__(self) -> ApolloClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def detect(self, jpeg: bytes, content_hash: str) -> Detection:
        """POST the image; the parsed answer, or ApolloError."""
        files = {"image": (f"{content_hash}.jpg", jpeg, "image/jpeg")}
        data = {"content_hash": content_hash}
        status, body = await self._call("POST", DETECT_PATH, self.timeout, files=files, data=data)
        if status >= 400:
            raise _status_error(status, body)
        return parse_detection(body)

    async def health(self) -> dict[str, Any]:
        """GET /api/health: any HTTP answer means the service is reachable; its JSON when it has one."""
        status, body = await self._call("GET", HEALTH_PATH, min(HEALTH_TIMEOUT, self.timeout))
        try:
            value = json.loads(body) if body else {}
        except ValueError:
            value = {}
        out = value if isinstance(value, dict) else {}
        out.setdefault("http_status", status)
        return out

    async def _call(self, method: str, path: str, deadline: float, **kwargs: Any) -> tuple[int, bytes]:
        url = self.base_url + path
        try:
            async with asyncio.timeout(deadline + CONNECT_TIMEOUT):
                async with self._client.stream(method, url, **kwargs) as resp:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise ApolloError(f"{url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
                    return resp.status_code, bytes(body)
        except ApolloError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ApolloError(f"cannot connect to Apollo at {self.base_url}: {_describe(exc)}",
                              connection=True) from None
        except (TimeoutError, httpx.TimeoutException):
            raise ApolloError(f"{url}: no answer within {deadline:.0f} s") from None
        except httpx.HTTPError as exc:
            # The connection was dropped or the answer was not valid HTTP.
            raise ApolloError(f"{url}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _status_error(status: int, body: bytes) -> ApolloError:
    detail = body[:200].decode("utf-8", "replace").strip()
    message = f"Apollo answered HTTP {status}" + (f": {detail}" if detail else "")
    permanent = 400 <= status < 500 and status not in (408, 429)
    return ApolloError(message, permanent=permanent, status=status)


def _number(value: object, what: str) -> float:
    # bool is an int in Python, but never a valid coordinate.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} is not a finite number")
    return float(value)


def parse_detection(body: bytes) -> Detection:
    """Check the answer's shape strictly; anything unexpected is a transient ApolloError."""
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        model = doc.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("no model name")
        raw_faces = doc.get("faces")
        if not isinstance(raw_faces, list):
            raise ValueError("no faces list")
        if len(raw_faces) > MAX_FACES:
            raise ValueError(f"{len(raw_faces)} faces (at most {MAX_FACES})")
        faces: list[DetectedFace] = []
        dim: int | None = None
        for i, f in enumerate(raw_faces):
            if not isinstance(f, dict):
                raise ValueError(f"face {i} is not an object")
            bbox = f.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                raise ValueError(f"face {i}: bbox must be [x, y, w, h]")
            box = tuple(_number(v, f"face {i} bbox") for v in bbox)
            emb = f.get("embedding")
            if not isinstance(emb, list) or not emb or len(emb) > MAX_DIM:
                raise ValueError(f"face {i}: embedding must be a list of 1..{MAX_DIM} numbers")
            if dim is not None and len(emb) != dim:
                raise ValueError(f"face {i}: embedding of {len(emb)} numbers, others have {dim}")
            dim = len(emb)
            faces.append(DetectedFace(
                bbox=(box[0], box[1], box[2], box[3]),
                score=_number(f.get("score"), f"face {i} score"),
                embedding=tuple(_number(v, f"face {i} embedding") for v in emb),
            ))
        return Detection(model=model.strip(), faces=faces)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; deep nesting
        raise ApolloError(f"Apollo's answer is not a valid detection: {_describe(exc)}") from None
