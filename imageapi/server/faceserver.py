"""`imageapi faces serve`: the embedded face detector over the Apollo protocol (docs/apollo-faces.md).

POST /api/faces/detect (multipart: image, content_hash) and GET /api/health. Detection runs in the
worker processes of core.faces.faceserve.FaceDetectors, never in this event loop, so health answers
while every worker is busy. Statuses follow the client's classification: 400 (malformed multipart),
413 (body too large), 415 (not a picture) are permanent for that picture; 429 (queue full, with
Retry-After), 503 (a worker died) and 504 (detection ran past the timeout) are transient. With
FACE_SERVE_TOKEN set, a detect call without that bearer token gets 401 (health stays open).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import BodyPartReader, web

from imageapi.core.faces.apollo import Detection
from imageapi.core.faces.faceserve import (
    DetectorBusy,
    DetectorFailed,
    FaceDetectors,
    ServeSettings,
    looks_like_a_picture,
)
from imageapi.core.tokens import same_secret
from imageapi.server.middlewares import ApiError, error_middleware, shape_protocol_errors

DETECTORS = web.AppKey("face_detectors", FaceDetectors)
SETTINGS = web.AppKey("face_serve_settings", ServeSettings)
MAX_TEXT_PART = 1024  # content_hash and any other small field


def create_face_app(settings: ServeSettings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body, middlewares=[error_middleware()])
    shape_protocol_errors(app)
    app[SETTINGS] = settings
    app.router.add_post("/api/faces/detect", detect)
    app.router.add_get("/api/health", health)

    async def detectors(app: web.Application) -> AsyncIterator[None]:
        pool = FaceDetectors(settings)
        app[DETECTORS] = pool
        starting = asyncio.get_running_loop().create_task(pool.start())  # health says "starting" meanwhile
        try:
            yield
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await pool.close()

    app.cleanup_ctx.append(detectors)
    return app


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[DETECTORS].health())


async def detect(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.token is not None and not bearer_matches(request, settings.token):
        # Before the body is read: a caller without the token costs nothing but this answer.
        raise ApiError(401, "unauthorized", "a bearer token is needed (FACE_SERVE_TOKEN; the client's "
                       "APOLLO_FACE_API_TOKEN)", {"WWW-Authenticate": 'Bearer realm="imageapi faces"'})
    try:
        image = await asyncio.wait_for(read_image(request, settings.max_body), settings.timeout)
    except TimeoutError:
        raise ApiError(408, "timeout", f"the body did not arrive within {settings.timeout:g} s") from None
    try:
        result = await request.app[DETECTORS].detect(image)
    except DetectorBusy as exc:
        raise ApiError(429, exc.code, exc.message, {"Retry-After": str(exc.retry_after)}) from None
    except DetectorFailed as exc:
        raise ApiError(504 if exc.timed_out else 503, exc.code, exc.message) from None
    return web.json_response(detection_json(result))


def bearer_matches(request: web.Request, token: str) -> bool:
    """Whether `Authorization: Bearer TOKEN` was sent, compared in constant time."""
    return same_secret(request.headers.get("Authorization", ""), f"Bearer {token}")


def detection_json(result: Detection) -> dict[str, Any]:
    return {"model": result.model, "faces": [
        {"bbox": list(f.bbox), "score": f.score, "embedding": list(f.embedding)} for f in result.faces
    ]}


async def read_image(request: web.Request, max_body: int) -> bytes:
    """The `image` part of a multipart/form-data body, at most `max_body` bytes in all."""
    if request.content_length is not None and request.content_length > max_body:
        raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=request.content_length)
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type",
                       f"send multipart/form-data with an image part, not {request.content_type[:80]!r}")
    image: bytes | None = None
    total = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "bad_multipart", "nested multipart bodies are not read")
            limit = max_body if part.name == "image" else MAX_TEXT_PART
            data = bytearray()
            while chunk := await part.read_chunk():
                data += chunk
                total += len(chunk)
                if total > max_body:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_body, actual_size=total)
                if len(data) > limit:
                    raise ApiError(400, "bad_multipart", f"the {part.name!r} part is longer than {limit} bytes")
            if part.name == "image" and image is None:
                image = bytes(data)
    except (ApiError, web.HTTPException, asyncio.CancelledError, TimeoutError):
        raise
    except Exception as exc:  # whatever the parser trips on in an untrusted body is the client's
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {type(exc).__name__}: "
                                             f"{str(exc)[:200]}") from None
    if image is None:
        raise ApiError(400, "bad_multipart", "the body has no image part")
    if not looks_like_a_picture(image):
        raise ApiError(415, "not_a_picture", "the image part is not a JPEG, PNG, WebP, GIF, BMP or TIFF picture")
    return image


def run(settings: ServeSettings, host: str, port: int, on_started: Any = None) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting, let requests in flight finish (up to the
    call timeout), and stop the workers."""
    from imageapi.server.runner import new_loop

    web.run_app(create_face_app(settings), host=host, port=port, shutdown_timeout=settings.timeout,
                handle_signals=True, loop=new_loop(), access_log=None,
                print=(lambda _: on_started()) if on_started else None)
