"""The one error middleware: every failure becomes {"error": {"code", "message"}} with its status.

Handlers raise the core's exceptions (NotFoundError, UsageError, ...) or ApiError; aiohttp's own
HTTP exceptions (unknown route, wrong method, body too large) get the same shape, and so do the
requests aiohttp refuses before any middleware runs (ShapedErrors). Anything else is logged with
its traceback and answered with a bare 500: never a traceback to the client. JSON bodies are read
and checked in one place (read_json). Tokens in query strings (`mt=`) are never written to a log:
this log or aiohttp's access log.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, ContentEncodingError, LineTooLong
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

from imageapi.core import errors
from imageapi.core.db import database_error
from imageapi.core.tokens import TokenError

log = logging.getLogger("imageapi.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Query parameters that carry credentials: media tokens (and names a client might use for others).
_TOKEN_PARAM = re.compile(r"([?&](?:mt|token|access_token)=)[^&\s\"'#]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` (a URL, a request line, a log line) with the values of token parameters replaced."""
    return _TOKEN_PARAM.sub(r"\1<redacted>", text) if "=" in text else text


class RedactTokens(logging.Filter):
    """Redacts token parameters in a log record: its message, its arguments, and the request line
    and headers aiohttp's access logger attaches to it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        line = getattr(record, "first_request_line", None)
        if isinstance(line, str):
            record.first_request_line = redact(line)
        headers = getattr(record, "request_header", None)
        if isinstance(headers, dict):
            record.request_header = {k: redact(v) if isinstance(v, str) else v for k, v in headers.items()}
        return True


def redact_logs() -> None:
    """Install RedactTokens on the loggers that can see a request's URL (once)."""
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web", log.name):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


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
    (errors.ConflictError, 409),
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
    redact_logs()

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
            log.exception("%s %s failed", request.method, redact(request.path_qs))
            return error_response(500, "internal", "internal server error")

    return middleware


class ShapedErrors(RequestHandler):
    """aiohttp's connection handler, answering in the error shape what it refuses itself before
    any middleware runs: a request line or header that is too long, too many headers, a request
    that does not parse (aiohttp answers these in plain text), and the last-resort 500."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if a response was already sent
        status, code, text = _protocol_error(status, exc)
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


def _protocol_error(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    if isinstance(exc, ContentEncodingError):
        return 415, "unsupported_encoding", f"the body's Content-Encoding is not supported: {exc.message[:200]}"
    if isinstance(exc, LineTooLong):
        return 400, "line_too_long", f"the request line or a header is longer than {exc.args[1]} bytes"
    if isinstance(exc, BadHttpMessage):
        if "too many headers" in exc.message.lower():
            return 431, "headers_too_large", "too many headers"
        return 400, "bad_request", f"malformed HTTP request: {exc.message[:200]}"
    if status == 500:
        return 500, "internal", "internal server error"
    return status, _HTTP_CODES.get(status, "error"), _HTTP_CODES.get(status, "error").replace("_", " ")


def _expect_checked(handle: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
                    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """aiohttp checks `Expect` before any middleware, answers anything but 100-continue in plain
    text, and fails with a 500 when the header is not UTF-8: answer those here first."""

    async def checked(request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get("Expect")
        if expect is not None and request.version >= (1, 1) and expect.lower() != "100-continue":
            return error_response(417, "expectation_failed", "the only Expect supported is 100-continue")
        return await handle(request)

    return checked


class _ShapedServer(web.Server):
    def __call__(self) -> RequestHandler:
        proto = super().__call__()
        if type(proto) is RequestHandler:
            proto.__class__ = ShapedErrors  # same slots: only handle_error differs
        return proto


def shape_protocol_errors(app: web.Application) -> None:
    """Make the servers aiohttp builds for `app` (web.AppRunner, the test client) answer their own
    refusals in the error shape, and an unknown `Expect` too (_expect_checked). aiohttp has no
    setting for its connection handler's class, so the app's server factory is wrapped; an aiohttp
    whose server is another class is left alone (plain-text refusals then, never a failure)."""
    make = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        server = make(**kwargs)
        if type(server) is web.Server:
            server.__class__ = _ShapedServer
            server.request_handler = _expect_checked(server.request_handler)
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]


def _core_error(request: web.Request, exc: errors.ImageapiError) -> web.Response:
    status = next((s for t, s in _CORE_STATUS if isinstance(exc, t)), 500)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.path, exc.message)
    if isinstance(exc, errors.ConfigError):
        return error_response(500, exc.code, "server misconfigured: " + exc.message)
    return error_response(status, exc.code, exc.message)


MAX_JSON_DEPTH = 32  # arrays and objects inside one another; the API's bodies need 3
# Content codings aiohttp decodes (br and zstd when their library is installed: without it,
# aiohttp refuses the request itself, see ShapedErrors).
DECODED = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br", "zstd"})


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it. Every handler
    reads its body here, so a body that cannot be read (bad chunked framing, a compressed body that
    does not decompress) or is hostile JSON is refused the same way everywhere."""
    if request.content_type not in ("application/json", "", "application/octet-stream", "text/plain"):
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    for coding in ",".join(request.headers.getall("Content-Encoding", ())).split(","):
        if coding.strip().lower() not in DECODED:  # aiohttp would hand over the bytes as they came
            raise ApiError(415, "unsupported_encoding",
                           f"Content-Encoding {coding.strip()[:40]!r} is not supported (use gzip or deflate)")
    try:
        raw = await request.read()  # bounded by the application's client_max_size (413 beyond)
    except web.RequestPayloadError as exc:
        raise ApiError(400, "bad_body", f"the body cannot be read: {_payload_reason(exc)}") from None
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def parse_json(raw: bytes | str) -> Any:
    """JSON as the API accepts it: UTF-8 (or -16/-32), nested at most MAX_JSON_DEPTH deep, numbers
    finite (no NaN, Infinity, or 1e400), strings that can be stored (no lone surrogates such as
    "\\ud800", which json accepts and SQLite cannot encode). Anything else is a 400."""
    try:
        value = json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, "bad_json", f"the body is nested more than {MAX_JSON_DEPTH} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    _check_json(value)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def _check_json(value: Any) -> None:
    """Depth and strings of parsed JSON, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ApiError(400, "bad_json", f"the body is nested more than {MAX_JSON_DEPTH} deep")
            if isinstance(item, dict):
                for key in item:
                    _check_text(key)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "bad_json", "the body holds a string that is not valid Unicode "
                                            "(a lone surrogate such as \\ud800)") from None


def _payload_reason(exc: web.RequestPayloadError) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ContentEncodingError) or "encod" in str(exc).lower():
        return "it does not decode with its Content-Encoding"
    return "its framing is broken (chunked encoding or length)"


MAX_INT = 2**63 - 1  # what SQLite stores: a larger integer can only be a mistake


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
    if isinstance(value, int) and not isinstance(value, bool) and not -MAX_INT <= value <= MAX_INT:
        raise ApiError(400, "bad_field", f"field {name!r} is out of range")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _type_name(t: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object",
            bool: "true or false"}.get(t, t.__name__)
