"""The HTTP client for Apollo, the face detection service (protocol: docs/apollo-faces.md).

httpx rather than aiohttp: aiohttp is the server's, the core keeps its own client. Every call has
a connect and a read timeout plus an overall deadline (a server that trickles bytes cannot hold a
request open), the answer's size is capped, and every failure is classified for the backlog:
`permanent` (this content will never work: a 4xx other than 408/429 and those below) or transient
(timeouts, 408/429, 5xx, refused connections, unparsable answers). `connection` marks failures that
say the service itself cannot be used (unreachable; or 401/403/404/405: a token refused, a wrong
address), which the backlog uses to stop a tick early.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Sequence
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
RETRY_AFTER_MAX = 10.0  # a busy service's Retry-After the client waits out itself (longer: backoff)

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


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    down_until: float = 0.0  # monotonic time; a refused connection marks it down until then


class ApolloClient:
    """One connection pool, sized to the number of detect calls allowed in flight.

    `base_url` is one URL, several separated by commas, or a list: each detect call goes to the
    address with the fewest calls in flight (in turn when equal). One that refuses the connection
    is marked down for DOWN_FOR seconds and the call goes on to the next; one that answers 429
    (busy) passes the call on too. A connection failure is reported only when every address
    failed, so the backlog's "service down" means all of them are."""

    DOWN_FOR = 30.0

    def __init__(self, base_url: str | Sequence[str], *, timeout: float, concurrency: int,
                 transport: httpx.AsyncBaseTransport | None = None, token: str | None = None) -> None:
        parts = base_url.split(",") if isinstance(base_url, str) else list(base_url)
        urls = list(dict.fromkeys(u.strip().rstrip("/") for u in parts if u.strip()))
        if not urls:
            raise ValueError("ApolloClient needs at least one base URL")
        self._endpoints = [_Endpoint(u) for u in urls]
        self._turn = 0
        self.base_urls = tuple(urls)
        self.base_url = ",".join(urls)
        self.timeout = timeout
        limits = httpx.Limits(max_connections=concurrency * len(urls),
                              max_keepalive_connections=concurrency * len(urls))
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            limits=limits,
            transport=transport,
            follow_redirects=False,
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )

    async def __aenter__(self) -> ApolloClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def down(self) -> list[str]:
        """The addresses marked down now."""
        now = time.monotonic()
        return [e.url for e in self._endpoints if e.down_until > now]

    def _order(self) -> list[_Endpoint]:
        """The addresses to try for one call: those up, fewest in flight first (ties in turn);
        when all are down, every one, the one marked down longest ago first."""
        now = time.monotonic()
        n = len(self._endpoints)
        self._turn = (self._turn + 1) % n
        rotated = self._endpoints[self._turn:] + self._endpoints[:self._turn]
        up = [e for e in rotated if e.down_until <= now]
        if up:
            return sorted(up, key=lambda e: e.in_flight)  # stable: ties keep the turn order
        return sorted(rotated, key=lambda e: e.down_until)

    async def detect(self, jpeg: bytes, content_hash: str) -> Detection:
        """POST the image; the parsed answer, or ApolloError. When every address is busy (429)
        and one says when to come back (Retry-After, at most RETRY_AFTER_MAX s) within this
        call's deadline, the call waits that long and tries again."""
        files = {"image": (f"{content_hash}.jpg", jpeg, "image/jpeg")}
        data = {"content_hash": content_hash}
        deadline = time.monotonic() + self.timeout
        while True:
            error: ApolloError | None = None
            wait: float | None = None
            for endpoint in self._order():
                endpoint.in_flight += 1
                try:
                    status, body, headers = await self._call(endpoint, "POST", DETECT_PATH, self.timeout,
                                                             files=files, data=data)
                except ApolloError as exc:
                    if not exc.connection:
                        raise
                    # Keep a busy answer from another address over a refusal: the service is up.
                    error = error if error is not None and not error.connection else exc
                    continue
                finally:
                    endpoint.in_flight -= 1
                if status == 429:
                    error = _status_error(status, body)
                    after = _retry_after(headers.get("retry-after"))
                    if after is not None:
                        wait = after if wait is None else min(wait, after)
                    continue
                if status >= 400:
                    raise _status_error(status, body)
                return parse_detection(body)
            assert error is not None
            if error.status != 429 or wait is None or wait > RETRY_AFTER_MAX or time.monotonic() + wait > deadline:
                raise error
            await asyncio.sleep(wait)

    async def health(self) -> dict[str, Any]:
        """GET /api/health of every address: any HTTP answer means that one is reachable (and no
        longer marked down). The JSON of the first that answered, with `http_status`, and with
        `endpoints` (url, up) when there are several; ApolloError when none answered."""
        probes = await asyncio.gather(
            *(self._call(e, "GET", HEALTH_PATH, min(HEALTH_TIMEOUT, self.timeout)) for e in self._endpoints),
            return_exceptions=True)
        answered: dict[str, Any] | None = None
        errors: list[BaseException] = []
        for endpoint, probe in zip(self._endpoints, probes, strict=True):
            if isinstance(probe, BaseException):
                if not isinstance(probe, ApolloError):
                    raise probe
                errors.append(probe)
                endpoint.down_until = time.monotonic() + self.DOWN_FOR
                continue
            endpoint.down_until = 0.0
            if answered is None:
                status, body, _ = probe
                try:
                    value = json.loads(body) if body else {}
                except ValueError:
                    value = {}
                answered = value if isinstance(value, dict) else {}
                answered.setdefault("http_status", status)
        if answered is None:
            if len(errors) == 1:
                raise errors[0]
            raise ApolloError("; ".join(str(e) for e in errors),
                              connection=all(isinstance(e, ApolloError) and e.connection for e in errors))
        if len(self._endpoints) > 1:
            down = set(self.down())
            answered["endpoints"] = [{"url": e.url, "up": e.url not in down} for e in self._endpoints]
        return answered

    async def _call(self, endpoint: _Endpoint, method: str, path: str, deadline: float,
                    **kwargs: Any) -> tuple[int, bytes, httpx.Headers]:
        url = endpoint.url + path
        try:
            async with asyncio.timeout(deadline + CONNECT_TIMEOUT):
                async with self._client.stream(method, url, **kwargs) as resp:
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE_BYTES:
                            raise ApolloError(f"{url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
                    endpoint.down_until = 0.0
                    return resp.status_code, bytes(body), resp.headers
        except ApolloError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            endpoint.down_until = time.monotonic() + self.DOWN_FOR
            raise ApolloError(f"cannot connect to Apollo at {endpoint.url}: {_describe(exc)}",
                              connection=True) from None
        except (TimeoutError, httpx.TimeoutException):
            raise ApolloError(f"{url}: no answer within {deadline:.0f} s") from None
        except httpx.HTTPError as exc:
            # The connection was dropped or the answer was not valid HTTP.
            raise ApolloError(f"{url}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not waited for)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


# Answers about the service as configured, not about the picture: a token refused (401, 403) or
# an address that is not the detect endpoint (404, 405). Counted as the service being unreachable
# (the backlog stops after a few), never as a permanent failure of each photo sent.
SERVICE_STATUSES = {401: "check APOLLO_FACE_API_TOKEN", 403: "check APOLLO_FACE_API_TOKEN",
                    404: "check APOLLO_FACE_API_BASE_URL", 405: "check APOLLO_FACE_API_BASE_URL"}


def _status_error(status: int, body: bytes) -> ApolloError:
    detail = body[:200].decode("utf-8", "replace").strip()
    message = f"Apollo answered HTTP {status}" + (f": {detail}" if detail else "")
    if status in SERVICE_STATUSES:
        return ApolloError(f"{message} ({SERVICE_STATUSES[status]})", connection=True, status=status)
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
