"""The one error middleware: every failure becomes {"error": {"code", "message"}} with its status.

Handlers raise the core's exceptions (NotFoundError, UsageError, ...) or ApiError; aiohttp's own
HTTP exceptions (unknown route, wrong method, body too large) get the same shape. Anything else
is logged with its traceback and answered with a bare 500: never a traceback to the client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from imageapi.core import errors
from imageapi.core.db import database_error
from imageapi.core.tokens import TokenError

log = logging.getLogger("imageapi.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An HTTP-level error raised by a handler: status, a stable code and a message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# The core's errors by type, most specific first.
_CORE_STATUS: list[tuple[type[errors.ImageapiError], int]] = [
    (TokenError, 401),
    (errors.PathOutsideLibraryError, 400),
    (errors.NotFoundError, 404),
    (errors.UsageError, 400),
    (errors.LockedError, 409),
    (errors.UnsupportedMediaError, 415),
    (errors.MediaError, 422),
    (errors.ToolError, 502),
    (errors.ServiceError, 503),
    (errors.DatabaseError, 503),  # a full disk or a damaged database file
]

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "timeout", 409: "conflict",
    411: "length_required", 413: "body_too_large", 415: "unsupported_media_type",
    416: "range_not_satisfiable", 422: "unprocessable", 429: "too_many_requests",
    431: "headers_too_large", 500: "internal", 503: "unavailable",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    resp = web.Response(status=status, text=body, content_type="application/json")
    if headers:
        resp.headers.update(headers)
    if status == 401:
        resp.headers.setdefault("WWW-Authenticate", 'Bearer realm="imageapi"')
    return resp


class Gate(Protocol):
    """Authentication run by the error middleware before the handler: `fast` answers without an
    await when it can (a public route, a remembered token), `full` does the rest or raises."""

    def fast(self, request: web.Request) -> bool: ...

    async def full(self, request: web.Request) -> None: ...


def error_middleware(gate: Gate | None = None) -> Middleware:
    """The one error middleware (with the gate inside it: a middleware layer of its own measured
    at ~10% of the thumbnail rate, and auth failures are errors like any other)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if gate is not None and not gate.fast(request):
                await gate.full(request)
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except errors.ImageapiError as exc:
            return _core_error(request, exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # redirects and the like are not errors
            code = _HTTP_CODES.get(exc.status, "error")
            message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
            headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
            return error_response(exc.status, code, message or code, headers)
        except ConnectionResetError:
            raise  # the client went away: nothing to answer
        except Exception as exc:
            db_error = database_error(exc)
            if db_error is not None:  # SQLite's own error from a handler's query
                return _core_error(request, db_error)
            log.exception("%s %s failed", request.method, request.path_qs)
            return error_response(500, "internal", "internal server error")

    return middleware


def _core_error(request: web.Request, exc: errors.ImageapiError) -> web.Response:
    status = next((s for t, s in _CORE_STATUS if isinstance(exc, t)), 500)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    if isinstance(exc, errors.ConfigError):
        return error_response(500, exc.code, "server misconfigured: " + exc.message)
    return error_response(status, exc.code, exc.message)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if request.content_type not in ("application/json", "", "application/octet-stream", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    raw = await request.read()  # bounded by the application's client_max_size (413 beyond)
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True,
          nullable: bool = False) -> Any:
    """One field of a JSON body, checked: 400 naming the field when missing or of the wrong type.
    An absent optional field is None; an explicit null is accepted only where `nullable`."""
    if name not in body:
        if required:
            raise ApiError(400, "missing_field", f"field {name!r} is required")
        return None
    value = body[name]
    if value is None and nullable:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        want = " or ".join(_type_name(t) for t in _as_tuple(kind))
        raise ApiError(400, "bad_field", f"field {name!r} must be {want}")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
            bool: "true or false"}.get(t, t.__name__)
