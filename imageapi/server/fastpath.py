"""The thumbnail fast path: a repeat of a thumbnail request the full path already answered is
answered from the connection's parser, without aiohttp's per-request machinery.

Why: measured with py-spy under bench/bench_serve.py, our own handler (auth, query, cache lookup)
was ~15% of a cached thumbnail's time and aiohttp's per-request machinery most of the rest: on
Python 3.11 every request is a new Task, a Request, a route resolution, the middleware chain, a
Response whose headers are built and serialised, and three turns of the event loop. A bare aiohttp
handler returning 12 KB does ~35k req/s per process here; a protocol writing the same bytes after
aiohttp's own C parser does ~100k.

How: once the full path (routes_media.serve_thumb) has answered a thumbnail request on a
connection, the connection's parser is wrapped (`attach`): after aiohttp's C parser has produced a
request, a GET of /image for a stored thumbnail is answered right there when everything the full
path would check holds:

- the Bearer token is one the token cache vouches for without an await (`remembered_bearer`: the
  same check, expiry included, as the auth gate's own await-free step; anything else -> full path);
- the request target maps to a thumbnail the way the full path maps it: remembered per exact
  target ("/image?library=..&path=..") once worked out, by the same functions (the size choice,
  LibraryCache.fresh, params.client_path: any refusal is left to the full path to give);
- the library is still known under the same name (LibraryCache.fresh);
- the bytes are the stored file's (ByteCache.current: checked less than a second ago or stat'ed
  now; or a small file read now, as serve_thumb reads it); a missing thumbnail is the full path's;
- If-None-Match / If-Modified-Since give the same 304 as respond_cached.

Everything else (another method or route, HTTP/1.0, `Connection: close`, `Expect`, a body, a
media token, a request behind one still being handled, a full send buffer, access logging on,
middlewares or response signals other than the ones this app was built with) goes to aiohttp
untouched, in order. The bytes written are the ones aiohttp writes for the same response
(tests/test_server_fastpath.py compares them).

This reads a few private attributes of aiohttp's RequestHandler (the parser, the waiter of its
request loop, its message queue, the keep-alive deadline); `attach` checks they are all there and
leaves the connection alone otherwise, so a different aiohttp is slower, never wrong.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.typedefs import Middleware

from imageapi.server.auth import remembered_bearer
from imageapi.server.cache import ByteCache, CachedBody, not_modified
from imageapi.server.libcache import LibraryCache
from imageapi.server.params import client_path
from imageapi.server.routes_media import load_small_thumb, thumb_dest
from imageapi.server.sessions import SESSIONS, remembered_session

log = logging.getLogger("imageapi.server")

MAX_ROUTES = 16_384          # remembered request targets (oldest forgotten first) ...
MAX_TARGET = 1024            # ... of at most this many characters (a bound on the memory they take)
MAX_PENDING = 256 * 1024     # bytes the connection may have unsent before the full path (which
#                              waits for the client) takes over again

# What attach() needs from aiohttp's RequestHandler.
_PROTOCOL_ATTRS = ("_parser", "_waiter", "_messages", "_close", "_force_close", "_payload_parser",
                   "_logging_enabled", "_next_keepalive_close_time", "_keepalive_timeout", "_loop")


@dataclass(frozen=True)
class Route:
    library: str | None   # the query's library parameter (None: the default library)
    lib_name: str         # the library it named when remembered
    dest: str             # the thumbnail's file: its key in the thumbnail cache


class FastThumbs:
    """Per application: the remembered thumbnail targets, and the answering."""

    def __init__(self, app: web.Application, cache: ByteCache, middleware: Middleware) -> None:
        """`middleware`: the app's one middleware, whose work for a cached thumbnail (the auth
        gate's await-free step) this path repeats; with any other, it stays off."""
        self._app = app
        self._cache = cache
        self._routes: OrderedDict[str, Route] = OrderedDict()
        self._tokens: Any = None
        self._libs: LibraryCache | None = None
        self._thumbnails = Path()
        self._middlewares = (middleware,)
        self._warned = False
        self._date = ""
        self._tail = b""
        self._wire: dict[str, tuple[CachedBody, bytes]] = {}  # dest -> (entry, response), this second
        self.answered = 0   # requests answered here (for tests and the curious)

    # -- filled by the full path ---------------------------------------------------------------

    def remember(self, request: web.Request, lib_name: str, dest: str) -> None:
        """Called by serve_thumb when it answers `request` with the cached thumbnail `dest` of
        library `lib_name`."""
        if request.method == "GET":
            self._remember(request.raw_path, Route(request.query.get("library") or None, lib_name, dest))
            self.attach(request)

    def _remember(self, target: str, route: Route) -> None:
        """(Re)place the route of a target: one that went stale (the default library changed)
        is replaced by the full path's next answer."""
        routes = self._routes
        if len(target) > MAX_TARGET:
            return
        if target not in routes and len(routes) >= MAX_ROUTES:
            routes.popitem(last=False)  # O(1); a dict's next(iter()) walks the holes left in front
        routes[target] = route

    def attach(self, request: web.Request) -> None:
        """Wrap the parser of the request's connection (once per connection)."""
        proto: Any = request.protocol
        parser = getattr(proto, "_parser", None)
        if parser is None or isinstance(parser, _FastParser) or not self._eligible(proto):
            return
        if self._libs is None:
            from imageapi.server.keys import CONFIG, LIBRARIES, TOKENS

            self._tokens = self._app[TOKENS]
            self._libs = self._app[LIBRARIES]
            self._thumbnails = self._app[CONFIG].thumbnails
        proto._parser = _FastParser(parser, proto, self)

    def _eligible(self, proto: Any) -> bool:
        app = self._app
        if tuple(app.middlewares) != self._middlewares or len(app.on_response_prepare) > 0:
            return self._off("the app has middlewares or response signals it does not know")
        if not all(hasattr(proto, name) for name in _PROTOCOL_ATTRS):
            return self._off("this aiohttp's RequestHandler is not the one it knows")
        parser = proto._parser
        if not (hasattr(parser, "feed_data") and hasattr(parser, "message_consumed")):
            return self._off("this aiohttp's request parser is not the one it knows")
        return True

    def _off(self, why: str) -> bool:
        if not self._warned:
            self._warned = True
            log.warning("thumbnail fast path off (%s): every request takes the full path", why)
        return False

    # -- the fast path -------------------------------------------------------------------------

    def answer(self, msg: Any, payload: Any) -> bytes | None:
        """The response to one parsed request, or None: let aiohttp handle it."""
        if (payload is not EMPTY_PAYLOAD or msg.method != "GET" or msg.version != HttpVersion11
                or msg.should_close or msg.upgrade):
            return None
        target = msg.path
        route = self._routes.get(target)
        if route is None and not target.startswith("/image?"):
            return None
        headers = msg.headers
        if "Expect" in headers or (remembered_bearer(self._tokens, headers) is None
                                   and remembered_session(self._app[SESSIONS], headers) is None):
            return None
        if route is None:
            route = self._resolve(msg)
            if route is None:
                return None
        assert self._libs is not None
        lib = self._libs.fresh(route.library)
        if lib is None or lib.name != route.lib_name:
            return None
        entry = self._cache.current(route.dest) or load_small_thumb(self._cache, route.dest)
        if entry is None:
            return None
        tail = self._date_server()
        if not_modified(headers, entry.etag, entry.mtime_s):
            return entry.head_304 + tail
        # The whole response, kept until the Date changes: written as one buffer, never copied
        # again (a 12 KB join per request measured ~5% of the process's time).
        hit = self._wire.get(route.dest)
        if hit is not None and hit[0] is entry:
            return hit[1]
        wire = b"".join((entry.head_200, tail, entry.body))
        self._wire[route.dest] = (entry, wire)
        return wire

    def _resolve(self, msg: Any) -> Route | None:
        """A thumbnail target seen for the first time: the full path's own steps (get_image's
        size choice, _target's library and client_path, serve_thumb's file), None wherever it
        would do anything but serve a stored thumbnail (its errors are its own to give)."""
        url = msg.url
        if url.raw_path != "/image":  # what the router sends to get_image, and nothing else
            return None
        query = url.query  # what request.query is for this message
        if query.get("size") not in (None, "", "thumb"):
            return None
        library = query.get("library") or None
        assert self._libs is not None
        lib = self._libs.fresh(library)
        if lib is None:
            return None
        try:
            rel = client_path(query.get("path"))
        except Exception:
            return None
        route = Route(library, lib.name, thumb_dest(self._thumbnails, lib.name, rel))
        self._remember(msg.path, route)
        return route

    def _date_server(self) -> bytes:
        date = rfc822_formatted_time()  # aiohttp's own, cached per second
        if date is not self._date:
            self._date = date
            self._tail = f"Date: {date}\r\nServer: {SERVER_SOFTWARE}\r\n\r\n".encode("latin-1")
            self._wire = {}  # at most a second's worth of responses is kept
        return self._tail


class _FastParser:
    """aiohttp's request parser with the fast path after it: feed_data answers what it can and
    returns the rest (in order) to the RequestHandler."""

    __slots__ = ("_parser", "_proto", "_fast", "_queue_limit")

    def __init__(self, parser: Any, proto: Any, fast: FastThumbs) -> None:
        self._parser = parser
        self._proto = proto
        self._fast = fast
        # The parser stops after this many unconsumed requests (0: unknown, always parse on).
        self._queue_limit: int = getattr(proto, "_max_msg_queue_size", 0) or 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

    def message_consumed(self) -> None:
        self._parser.message_consumed()

    def feed_data(self, data: bytes) -> tuple[Sequence[Any], bool, bytes]:
        messages, upgraded, tail = self._parser.feed_data(data)
        proto = self._proto
        while messages and not upgraded:
            # Only when nothing is in flight on this connection (its request loop waits for the
            # next request), so responses stay in order.
            waiter = proto._waiter
            transport = proto.transport
            if (waiter is None or waiter.done() or proto._messages or proto._close or proto._force_close
                    or proto._payload_parser is not None or proto._logging_enabled or transport is None
                    or transport.is_closing()):
                break
            done = self._answer(messages, transport)
            if done == 0:
                break
            if done < len(messages):
                return messages[done:], upgraded, tail
            if done < self._queue_limit:
                return (), False, b""
            # All answered, and the parser stopped at its queue limit with more requests
            # buffered: it would only go on at the next read, so parse on now.
            messages, upgraded, tail = self._parser.feed_data(b"")
        return messages, upgraded, tail

    def _answer(self, messages: Sequence[Any], transport: Any) -> int:
        """Answer messages from the first on while the fast path can; how many it answered."""
        fast = self._fast
        done = 0
        try:
            for msg, payload in messages:
                if transport.get_write_buffer_size() > MAX_PENDING:
                    break
                wire = fast.answer(msg, payload)
                if wire is None:
                    break
                transport.write(wire)
                self._parser.message_consumed()
                done += 1
        except Exception:  # never break the connection: what is left goes the full way
            log.exception("thumbnail fast path failed; the full path answers")
        if done:
            fast.answered += done
            proto = self._proto
            proto._next_keepalive_close_time = proto._loop.time() + proto._keepalive_timeout
        return done
