"""AI insights: POST /insights/generate, GET /insights, GET /insights/openrouter/models,
POST /insights/chat, POST /insights/chat/stream (Server-Sent Events), GET /insights/chat/history,
POST /insights/chat/rewind. The protocol and settings are in docs/insights.md.

The model work is a task of its own: a streaming client that disconnects cancels it (aiohttp does
not cancel handlers by itself, so the connection is watched), and a cancelled or failed request
stores nothing. Errors before the first event are ordinary JSON errors (503 when no backend
answers, naming the URLs tried); after it, an `error` event ends the stream.

At start-up, when SUMMARIES_CONTACTS is set and this process runs the watcher (`serve` without
--no-watch, the first process), the daily summaries job runs once in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

from aiohttp import web

from imageapi.core.db import connect
from imageapi.core.errors import ImageapiError
from imageapi.core.insights.providers import ProviderRejected
from imageapi.core.insights.service import InsightService
from imageapi.core.insights.settings import InsightSettings
from imageapi.core.insights.summaries import SmsClient, build_summaries
from imageapi.core.insights.tools import Photo, RenderImage
from imageapi.core.libraries import resolve_in_library
from imageapi.server import workfns
from imageapi.server.keys import BACKGROUND, CONFIG, LIBRARIES, RENDERER
from imageapi.server.middlewares import ApiError, field, read_json
from imageapi.server.params import client_path, query_str

log = logging.getLogger("imageapi.server")

INSIGHTS: web.AppKey[InsightService] = web.AppKey("insights")
SUMMARY_JOB: web.AppKey[dict[str, Any]] = web.AppKey("summary_job")

VISION_BOX = 1024          # pixels: enough for a vision model, small enough to send quickly
DISCONNECT_POLL = 0.2      # seconds between checks that a streaming client is still there
KEEPALIVE = 15.0           # seconds of silence before an SSE comment line
PASSED_ON = (400, 404, 422)  # provider statuses passed on as they are; others become 502


def _service(request: web.Request) -> InsightService:
    service = request.app.get(INSIGHTS)
    if service is None:
        raise ApiError(503, "unavailable", "insights are not available")
    return service


async def _photo(request: web.Request, library: str | None, raw_path: Any) -> Photo:
    lib = await request.app[LIBRARIES].get(library)
    rel = client_path(raw_path)
    return await _service(request).photo(lib, rel)


def _renderer(request: web.Request, photo: Photo) -> RenderImage | None:
    if photo.row["kind"] not in ("image", "heic", "raw", "video"):
        return None
    renderer = request.app[RENDERER]

    async def render() -> bytes:
        src = resolve_in_library(photo.library, photo.rel_path)
        rendered = await renderer._run(workfns.preview, str(src), photo.row["kind"], VISION_BOX,
                                       photo.row["duration"])
        return rendered.jpeg

    return render


def _located(photo: Photo, doc: dict[str, Any]) -> dict[str, Any]:
    return {"library": photo.library.name, "path": photo.rel_path, **doc}


async def _guarded(work: Awaitable[Any]) -> Any:
    """A provider's 4xx passed on with its status (401/403/429... would read as ours: 502)."""
    try:
        return await work
    except ProviderRejected as exc:
        status = exc.status if exc.status in PASSED_ON else 502
        raise ApiError(status, exc.code, exc.message) from None


def _body_fields(body: dict[str, Any]) -> tuple[str | None, str | None]:
    backend = field(body, "backend", str, required=False, nullable=True)
    model = field(body, "model", str, required=False, nullable=True)
    if backend is not None and backend not in ("local", "hybrid"):
        raise ApiError(400, "bad_field", "field 'backend' must be 'local' or 'hybrid'")
    return backend, model


async def post_generate(request: web.Request) -> web.Response:
    body = await read_json(request)
    photo = await _photo(request, field(body, "library", str, required=False), field(body, "path", str))
    backend, model = _body_fields(body)
    insight = await _guarded(_service(request).generate(photo, backend=backend, model=model,
                                                        render_image=_renderer(request, photo)))
    return web.json_response(_located(photo, insight))


async def get_insights(request: web.Request) -> web.Response:
    photo = await _photo(request, query_str(request, "library"), request.query.get("path"))
    found = await _service(request).insights(photo)
    return web.json_response(_located(photo, {"insights": found}))


async def get_models(request: web.Request) -> web.Response:
    s = _service(request).settings
    return web.json_response({
        "enabled": s.hybrid_enabled,
        "default": s.openrouter_default_model if s.hybrid_enabled else None,
        "models": list(s.openrouter_allowed_models) if s.hybrid_enabled else [],
    })


def _chat_args(body: dict[str, Any]) -> dict[str, Any]:
    backend, model = _body_fields(body)
    message = field(body, "message", str)
    rounds = field(body, "max_iterations", int, required=False, nullable=True)
    if rounds is not None and rounds < 0:
        raise ApiError(400, "bad_field", "field 'max_iterations' must be 0 or more")
    amend = field(body, "amend", bool, required=False, nullable=True) or False
    return {"backend": backend, "model": model, "text": message, "max_iterations": rounds, "amend": amend}


async def post_chat(request: web.Request) -> web.Response:
    body = await read_json(request)
    photo = await _photo(request, field(body, "library", str, required=False), field(body, "path", str))
    args = _chat_args(body)
    result = await _guarded(_service(request).chat(photo, render_image=_renderer(request, photo), **args))
    return web.json_response(_located(photo, result))


class EventStream:
    """text/event-stream, prepared at the first event: until then an error is a plain JSON one."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.last_write = time.monotonic()

    async def _open(self) -> web.StreamResponse:
        if self.response is None:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
            await resp.prepare(self.request)
            self.response = resp
        return self.response

    async def send(self, event: str, data: dict[str, Any]) -> None:
        resp = await self._open()
        payload = json.dumps(data, ensure_ascii=False, default=str)
        await resp.write(f"event: {event}\ndata: {payload}\n\n".encode())
        self.last_write = time.monotonic()

    async def keepalive(self) -> None:
        if self.response is not None and time.monotonic() - self.last_write > KEEPALIVE:
            await self.response.write(b": keep-alive\n\n")
            self.last_write = time.monotonic()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def post_chat_stream(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    photo = await _photo(request, field(body, "library", str, required=False), field(body, "path", str))
    args = _chat_args(body)
    service = _service(request)
    stream = EventStream(request)
    work = asyncio.create_task(service.chat(photo, render_image=_renderer(request, photo), emit=stream.send, **args))
    gone = False
    try:
        while not work.done():
            await asyncio.wait({work}, timeout=DISCONNECT_POLL)
            if work.done():
                break
            if client_gone(request):
                gone = True
                break
            await stream.keepalive()
    except ConnectionResetError:  # the keep-alive line found the client gone
        gone = True
    finally:
        if not work.done():  # the client left, or this handler was cancelled (shutdown)
            work.cancel()
    if gone:
        log.info("insights chat stream: the client left; the model call was cancelled")
        await asyncio.wait({work})  # let the provider close its connection before we return
        return stream.response or web.Response(status=499)
    try:
        result = await work
    except ConnectionResetError:
        log.info("insights chat stream: the client left while an event was written")
        return stream.response or web.Response(status=499)
    except ProviderRejected as exc:
        if stream.response is None:
            raise ApiError(exc.status if exc.status in PASSED_ON else 502, exc.code, exc.message) from None
        return await _stream_error(stream, exc.code, exc.message)
    except ImageapiError as exc:
        if stream.response is None:
            raise
        return await _stream_error(stream, exc.code, exc.message)
    await stream.send("done", _located(photo, result))
    assert stream.response is not None
    await stream.response.write_eof()
    return stream.response


async def _stream_error(stream: EventStream, code: str, message: str) -> web.StreamResponse:
    await stream.send("error", {"error": {"code": code, "message": message}})
    assert stream.response is not None
    await stream.response.write_eof()
    return stream.response


async def get_history(request: web.Request) -> web.Response:
    photo = await _photo(request, query_str(request, "library"), request.query.get("path"))
    return web.json_response(await _service(request).history(photo))


async def post_rewind(request: web.Request) -> web.Response:
    body = await read_json(request)
    photo = await _photo(request, field(body, "library", str, required=False), field(body, "path", str))
    index = field(body, "index", int)
    return web.json_response(await _service(request).rewind(photo, index))


# ---------------------------------------------------------------------------- start-up and job


async def _run_summaries(service: InsightService, settings: InsightSettings, state: dict[str, Any]) -> None:
    start, end = settings.summary_range()
    sms = SmsClient(settings.sms_api_url, settings.sms_api_token)
    state.update(running=True, started_at=time.time(), range=[start.isoformat(), end.isoformat()])
    try:
        report = await build_summaries(service.store, service.backends, sms, settings.summaries_contacts, start, end)
        state["report"] = report.to_json()
        log.warning("summaries: %d written, %d already done, %d days without messages, %d failed%s",
                    report.written, report.skipped, report.empty, report.failed,
                    f"; stopped: {report.stopped}" if report.stopped else "")
    except ImageapiError as exc:
        state["error"] = exc.message
        log.warning("summaries job failed: %s", exc.message)
    except Exception as exc:  # the server keeps serving
        state["error"] = f"{type(exc).__name__}: {exc}"
        log.exception("summaries job failed")
    finally:
        state["running"] = False
        await sms.aclose()


async def _insights_ctx(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    settings = config.insights
    # A connection of its own: insight writes are transactions that must not meet another area's.
    db = await connect(config.database, migrate=False)
    try:
        service = InsightService(config, db, settings)
    except BaseException:
        await db.close()  # its thread would keep the process alive
        raise
    app[INSIGHTS] = service
    job: asyncio.Task[None] | None = None
    state: dict[str, Any] = {"running": False}
    app[SUMMARY_JOB] = state
    background = app.get(BACKGROUND)
    if settings.summaries_contacts and background is not None and background.watcher is not None:
        job = asyncio.create_task(_run_summaries(service, settings, state), name="imageapi-summaries")
    try:
        yield
    finally:
        if job is not None and not job.done():
            job.cancel()  # each summary is written whole after its model call: nothing half-done
            try:
                await job
            except asyncio.CancelledError:
                pass
        await service.aclose()
        await db.close()


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_insights_ctx)
    app.router.add_post("/insights/generate", post_generate)
    app.router.add_get("/insights", get_insights)
    app.router.add_get("/insights/openrouter/models", get_models)
    app.router.add_post("/insights/chat", post_chat)
    app.router.add_post("/insights/chat/stream", post_chat_stream)
    app.router.add_get("/insights/chat/history", get_history)
    app.router.add_post("/insights/chat/rewind", post_rewind)
