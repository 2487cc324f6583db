# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The thumbnail fast path (imageapi/server/fastpath.py): repeats of a thumbnail request on a
keep-alive connection are answered from the connection's parser. Checked over raw sockets: the
bytes are the full path's, auth is exactly as strict, responses stay in order, and anything the
fast path does not know goes the full way."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from PIL import Image

from imageapi.core.tokens import TokenService
from imageapi.server.app import create_app
from imageapi.server.cache import ByteCache
from imageapi.server.fastpath import _PROTOCOL_ATTRS, MAX_PENDING, MAX_TARGET, FastThumbs, _FastParser
from imageapi.server.keys import FAST_THUMBS, LIBRARIES, RENDERER, THUMB_CACHE, TOKENS
from tests.test_server_auth import _add_user, _bad_tokens, _remove_user
from tests.test_server_media import TRAVERSALS
from tests.test_server_support import (  # noqa: F401  (fixtures)
    SECRET,
    AiohttpClient,
    Server,
    Template,
    assert_error,
    server,
    start_server,
    template,
)

THUMB = "/image?path=2020%2Fa.jpg"
Response = tuple[int, list[tuple[str, str]], bytes]


def request(target: str, headers: dict[str, str] | None = None, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: test", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Conn:
    """One keep-alive connection, raw requests in, raw responses out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *raw: bytes) -> None:
        self.writer.write(b"".join(raw))
        await self.writer.drain()

    async def response(self, method: str = "GET") -> Response:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers = [(k, v) for k, _, v in (line.partition(": ") for line in lines)]
        status = int(status_line.split(" ")[1])
        length = int(dict(headers).get("Content-Length", "0"))
        body = b"" if method == "HEAD" or status == 304 else await self.reader.readexactly(length)
        return status, headers, body

    async def get(self, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
        await self.send(request(target, headers, method))
        return await self.response(method)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture()
async def conn(server: Server) -> AsyncIterator[Conn]:
    c = await _connect(server)
    yield c
    c.close()


async def _connect(server: Server) -> Conn:
    reader, writer = await asyncio.open_connection(server.client.host, server.client.port)
    return Conn(reader, writer)


def _answered(server: Server) -> int:
    return server.app[FAST_THUMBS].answered


def _without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    assert [k for k, _ in headers].count("Date") == 1
    return [(k, v) for k, v in headers if k != "Date"]


async def test_a_repeat_takes_the_fast_path_with_the_same_bytes(server: Server, conn: Conn) -> None:
    full = await conn.get(THUMB, server.auth)
    assert full[0] == 200 and _answered(server) == 0
    fast = await conn.get(THUMB, server.auth)
    assert _answered(server) == 1
    assert fast[0] == 200 and _without_date(fast[1]) == _without_date(full[1]) and fast[2] == full[2]
    assert fast[2] == (server.config.thumbnails / "main" / "2020" / "a.jpg").read_bytes()
    etag, modified = dict(full[1])["ETag"], dict(full[1])["Last-Modified"]
    # 304s: the full path's (first request on a fresh connection) against the fast path's.
    for cond in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'}, {"If-Modified-Since": modified}):
        other = await _connect(server)
        try:
            slow304 = await other.get(THUMB, {**server.auth, **cond})
        finally:
            other.close()
        before = _answered(server)
        fast304 = await conn.get(THUMB, {**server.auth, **cond})
        assert _answered(server) == before + 1, cond
        assert slow304[0] == fast304[0] == 304, cond
        assert _without_date(fast304[1]) == _without_date(slow304[1]) and fast304[2] == b"", cond
    # A stale validator gets the whole thumbnail again.
    stale = await conn.get(THUMB, {**server.auth, "If-None-Match": '"stale"', "If-Modified-Since": "garbage"})
    assert stale[0] == 200 and stale[2] == full[2]


@pytest.mark.parametrize("kind", ["missing", "basic", "empty_bearer", "expired", "tampered_payload",
                                  "tampered_signature", "alg_none", "wrong_key", "unknown_user", "no_key",
                                  "other_key", "future_nbf", "nbf_not_a_number", "sub_not_ascii_digits",
                                  "sub_other_digits", "sub_huge", "sub_int", "exp_not_a_number", "exp_float",
                                  "iat_bool", "garbage", "huge"])
async def test_the_fast_path_refuses_what_the_gate_refuses(server: Server, conn: Conn, kind: str) -> None:
    await conn.get(THUMB, server.auth)
    assert (await conn.get(THUMB, server.auth))[0] == 200 and _answered(server) == 1
    headers = {"missing": {}, "basic": {"Authorization": "Basic YWxpY2U6eA=="},
               "empty_bearer": {"Authorization": "Bearer "}}.get(kind)
    if headers is None:
        headers = {"Authorization": f"Bearer {_bad_tokens(server)[kind]}"}
    status, hdrs, body = await conn.get(THUMB, headers)
    assert status == 401, kind
    assert dict(hdrs)["Content-Type"].startswith("application/json")
    assert_error(json.loads(body), "unauthorized")
    assert _answered(server) == 1
    assert (await conn.get(THUMB, server.auth))[0] == 200  # the good token still works after


@pytest.mark.parametrize("value", [b"Bearer \xff\xfe", "Bearer t\u00f6k\u00e9n".encode(), "B\u00e9arer x".encode(),
                                   b"Bearer \xe2\x80\xae" + b"a" * 40, "Bearer \u0661".encode()])
async def test_a_non_ascii_authorization_header_is_401(server: Server, conn: Conn, value: bytes) -> None:
    def raw(target: str) -> bytes:
        return f"GET {target} HTTP/1.1\r\nHost: test\r\n".encode() + b"Authorization: " + value + b"\r\n\r\n"

    for target in (THUMB, "/libraries", "/image?path=2021%2Fc.jpg"):
        other = await _connect(server)  # the full path
        try:
            await other.send(raw(target))
            status, hdrs, body = await other.response()
        finally:
            other.close()
        assert status == 401, (target, value)
        assert dict(hdrs)["Content-Type"].startswith("application/json")
        assert_error(json.loads(body), "unauthorized")
    await conn.get(THUMB, server.auth)
    assert (await conn.get(THUMB, server.auth))[0] == 200 and _answered(server) == 1
    await conn.send(raw(THUMB))  # on a connection the fast path answers
    status, hdrs, body = await conn.response()
    assert status == 401
    assert_error(json.loads(body), "unauthorized")
    assert _answered(server) == 1
    assert (await conn.get(THUMB, server.auth))[0] == 200


async def test_expiry_is_rechecked_on_the_fast_path(
    aiohttp_client: AiohttpClient, template: Template, tmp_path: Path
) -> None:
    srv = await start_server(aiohttp_client, template, tmp_path)
    app = create_app(srv.config)
    now = [time.time()]
    svc = TokenService(SECRET, clock=lambda: now[0])
    app[TOKENS] = svc
    client = await aiohttp_client(app)
    token = svc.issue(srv.user, 60).token
    reader, writer = await asyncio.open_connection(client.host, client.port)
    c = Conn(reader, writer)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert (await c.get(THUMB, auth))[0] == 200
        assert (await c.get(THUMB, auth))[0] == 200 and app[FAST_THUMBS].answered == 1
        now[0] += 61
        status, _, body = await c.get(THUMB, auth)
        assert status == 401 and b"expired" in body
        assert app[FAST_THUMBS].answered == 1
    finally:
        c.close()


async def test_a_removed_users_token_stops_on_the_fast_path(server: Server, conn: Conn) -> None:
    bob = await _add_user(server, "bob")
    auth = {"Authorization": f"Bearer {server.app[TOKENS].issue(bob, 3600).token}"}
    await conn.get(THUMB, auth)
    assert (await conn.get(THUMB, auth))[0] == 200 and _answered(server) == 1
    await _remove_user(server, "bob")
    carol = await _add_user(server, "carol")
    assert carol.id != bob.id
    server.app[TOKENS].forget_user(bob.id)  # as after the user re-check period
    status, _, body = await conn.get(THUMB, auth)
    assert status == 401
    assert_error(json.loads(body), "unauthorized")
    assert _answered(server) == 1


async def test_media_tokens_take_the_full_path_and_stay_scoped(server: Server, conn: Conn) -> None:
    r = await server.client.post("/media-token", json={"path": "2021"}, headers=server.auth)
    mt = (await r.json())["token"]
    await conn.get(THUMB, server.auth)
    await conn.get(THUMB, server.auth)
    assert _answered(server) == 1
    # The same target with a media token for another folder: refused, by the full path.
    status, _, body = await conn.get(f"{THUMB}&mt={mt}")
    assert status == 401 and b"does not cover" in body
    assert (await conn.get(f"/image?path=2021%2Fc.jpg&mt={mt}"))[0] == 200
    assert (await conn.get(f"/image?path=2021%2Fc.jpg&mt={mt}"))[0] == 200
    assert _answered(server) == 1


async def test_pipelined_requests_are_answered_in_order(server: Server, conn: Conn) -> None:
    await conn.get(THUMB, server.auth)
    thumb = (server.config.thumbnails / "main" / "2020" / "a.jpg").read_bytes()
    await conn.send(request(THUMB, server.auth), request("/libraries", server.auth), request(THUMB, server.auth),
                    request(THUMB, server.auth, method="HEAD"), request("/nope", server.auth),
                    request("/image?path=2021%2Fc.jpg", server.auth), request(THUMB, server.auth))
    got = [await conn.response(), await conn.response(), await conn.response(), await conn.response("HEAD"),
           await conn.response(), await conn.response(), await conn.response()]
    assert [g[0] for g in got] == [200, 200, 200, 200, 404, 200, 200]
    assert got[0][2] == got[2][2] == got[6][2] == thumb
    assert b'"main"' in got[1][2]
    assert dict(got[3][1])["Content-Type"] == "image/jpeg" and got[3][2] == b""
    assert got[5][2] == (server.config.thumbnails / "main" / "2021" / "c.jpg").read_bytes()
    # The first was answered at once; from /libraries on, the batch was aiohttp's.
    assert _answered(server) == 1


async def test_a_request_in_flight_keeps_the_next_one_behind_it(server: Server, conn: Conn) -> None:
    """A preview still being rendered (the full path, awaiting) when a thumbnail request arrives
    in a later packet: the thumbnail's response must come second."""
    renderer = server.app[RENDERER]
    render = renderer.preview
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_preview(*args: Any) -> Any:
        entered.set()
        await release.wait()
        return await render(*args)

    renderer.preview = slow_preview  # type: ignore[method-assign]
    await conn.get(THUMB, server.auth)
    await conn.send(request("/image?path=2021%2Fc.jpg&size=preview", server.auth))
    await asyncio.wait_for(entered.wait(), 5)
    await conn.send(request(THUMB, server.auth))
    with pytest.raises(asyncio.TimeoutError):  # nothing may come before the preview
        await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), 0.2)
    release.set()
    first, second = await conn.response(), await conn.response()
    assert first[0] == second[0] == 200
    assert Image.open(io.BytesIO(first[2])).size[0] > Image.open(io.BytesIO(second[2])).size[0]
    assert second[2] == (server.config.thumbnails / "main" / "2020" / "a.jpg").read_bytes()


async def test_many_pipelined_requests_do_not_stall(server: Server, conn: Conn) -> None:
    """More than aiohttp's parser queue holds at once, in one write: all answered."""
    await conn.get(THUMB, server.auth)
    count = 3 * 32 + 5
    await conn.send(*(request(THUMB, server.auth) for _ in range(count)))
    bodies = [(await conn.response())[2] for _ in range(count)]
    assert len(set(bodies)) == 1 and len(bodies[0]) > 1000
    assert _answered(server) == count


async def test_a_replaced_thumbnail_is_noticed(server: Server, conn: Conn) -> None:
    first = (await conn.get(THUMB, server.auth))[2]
    server.app[THUMB_CACHE].recheck = 0.0  # every hit stats the file
    assert (await conn.get(THUMB, server.auth))[2] == first and _answered(server) == 1
    stored = server.config.thumbnails / "main" / "2020" / "a.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), (1, 2, 3)).save(buf, "JPEG")
    tmp = stored.with_name(".replacement")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, stored)
    assert (await conn.get(THUMB, server.auth))[2] == buf.getvalue()
    assert (await conn.get(THUMB, server.auth))[2] == buf.getvalue()
    stored.unlink()
    # Gone: the full path makes it again (a new thumbnail from the original).
    status, _, body = await conn.get(THUMB, server.auth)
    assert status == 200 and body == stored.read_bytes() != buf.getvalue()


async def test_what_the_fast_path_does_not_know_goes_the_full_way(server: Server, conn: Conn) -> None:
    await conn.get(THUMB, server.auth)
    before = _answered(server)
    server.app[LIBRARIES].ttl = -1.0  # the library cache is always stale: the full path reloads it
    assert (await conn.get(THUMB, server.auth))[0] == 200
    server.app[LIBRARIES].ttl = 5.0
    # Expect: aiohttp's expect handler answers 100 Continue first.
    assert (await conn.get(THUMB, {**server.auth, "Expect": "100-continue"}))[0] == 100
    assert (await conn.response())[0] == 200
    await conn.send(request(THUMB, {**server.auth, "Content-Length": "5"}) + b"hello")  # a body
    assert (await conn.response())[0] == 200
    assert _answered(server) == before
    # HTTP/1.0 and Connection: close are answered, then the connection is closed.
    for raw in (request(THUMB, server.auth, version="1.0"), request(THUMB, {**server.auth, "Connection": "close"})):
        c = await _connect(server)
        try:
            await c.get(THUMB, server.auth)
            await c.send(raw)
            status, headers, body = await c.response()
            assert status == 200 and len(body) > 1000
            assert await asyncio.wait_for(c.reader.read(), 5) == b""
        finally:
            c.close()
    assert _answered(server) == before


async def test_other_thumbnails_take_the_fast_path_the_first_time_too(server: Server, conn: Conn) -> None:
    await conn.get(THUMB, server.auth)  # the full path, once per connection
    thumbs = server.config.thumbnails / "main"
    for target, stored in [
        ("/image?path=2021%2Fc.jpg", "2021/c.jpg"),
        ("/image?library=main&size=thumb&path=2021%2Fsub%2Fd.jpg", "2021/sub/d.jpg"),
        ("/image?size=&path=name%20with%20spaces%20%26%20%C3%BCn%C3%AFcode.jpg", "name with spaces & ünïcode.jpg"),
        ("/image?path=2020/b.jpg", "2020/b.jpg"),
    ]:
        before = _answered(server)
        other = await _connect(server)
        try:
            slow = await other.get(target, server.auth)
        finally:
            other.close()
        server.app[THUMB_CACHE]._items.clear()  # a thumbnail not read yet: read from its file
        fast = await conn.get(target, server.auth)
        assert _answered(server) == before + 1, target
        assert fast[0] == slow[0] == 200 and fast[2] == slow[2] == (thumbs / stored).read_bytes(), target
        assert _without_date(fast[1]) == _without_date(slow[1]), target


@pytest.mark.parametrize("path", [*TRAVERSALS, "", "nope.jpg", "bad.jpg", "2020", "../main/2020/a.jpg",
                                  "..%2Fmain%2F2020%2Fa.jpg", "./2020/a.jpg", "2020//a.jpg", "2020/./a.jpg",
                                  "2020/a.jpg/", "2020/A.JPG"])
async def test_what_the_full_path_refuses_it_still_refuses(server: Server, conn: Conn, path: str) -> None:
    """Targets the fast path works out for itself: every refusal is the full path's, the same
    as on a fresh connection (the traversal list, some leading back to a real thumbnail, unknown
    files, no thumbnail, a folder)."""
    await conn.get(THUMB, server.auth)
    other = await _connect(server)
    for extra in ("", "&size=huge", "&library=nope"):
        target = f"/image?path={quote(path, safe='')}{extra}"
        before = _answered(server)
        try:
            slow = await other.get(target, server.auth)
        except (asyncio.IncompleteReadError, ConnectionError):
            other.close()
            other = await _connect(server)
            continue
        fast = await conn.get(target, server.auth)
        assert fast[0] == slow[0], (target, fast[0], slow[0])
        if slow[0] == 200:  # normalised by client_path to a real thumbnail: the same one
            assert fast[2] == slow[2], target
            continue
        assert _answered(server) == before, target
        assert json.loads(fast[2]) == json.loads(slow[2]), target
        assert_error(json.loads(fast[2]))
    other.close()


async def test_long_targets_are_not_remembered(server: Server, conn: Conn) -> None:
    """They are worked out again each time (the memory of targets stays bounded)."""
    routes = server.app[FAST_THUMBS]._routes
    long = f"{THUMB}&pad={'x' * (MAX_TARGET + 1)}"
    for _ in range(3):
        assert (await conn.get(long, server.auth))[0] == 200
    assert _answered(server) == 2 and long not in routes
    short = f"{THUMB}&pad=x"
    assert (await conn.get(short, server.auth))[0] == 200
    assert _answered(server) == 3 and short in routes


async def test_off_when_the_app_has_other_middlewares(
    aiohttp_client: AiohttpClient, template: Template, tmp_path: Path, env_dirs: dict[str, Path]
) -> None:
    srv = await start_server(aiohttp_client, template, tmp_path / "a")
    app = create_app(srv.config)
    seen: list[str] = []

    @web.middleware
    async def extra(request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await handler(request)
        seen.append(request.path)
        return resp

    app.middlewares.append(extra)
    client = await aiohttp_client(app)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    c = Conn(reader, writer)
    try:
        for _ in range(3):
            assert (await c.get(THUMB, srv.auth))[0] == 200
    finally:
        c.close()
    assert seen == ["/image"] * 3 and app[FAST_THUMBS].answered == 0


def test_a_full_send_buffer_hands_requests_back() -> None:
    """A client that does not read: the fast path stops writing and leaves the requests to
    aiohttp, whose writer waits for the client."""
    messages = [(SimpleNamespace(), EMPTY_PAYLOAD), (SimpleNamespace(), EMPTY_PAYLOAD)]
    buffered = [0]
    written: list[bytes] = []

    class Transport:
        def get_write_buffer_size(self) -> int:
            return buffered[0]

        def is_closing(self) -> bool:
            return False

        def write(self, data: bytes) -> None:
            written.append(data)
            buffered[0] += MAX_PENDING + 1  # the client reads nothing

    class Parser:
        consumed = 0

        def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
            return list(messages), False, b""

        def message_consumed(self) -> None:
            Parser.consumed += 1

    loop = asyncio.new_event_loop()
    try:
        waiter = loop.create_future()
        proto = SimpleNamespace(_waiter=waiter, _messages=[], _close=False, _force_close=False, _payload_parser=None,
                                _logging_enabled=False, transport=Transport(), _loop=loop,
                                _next_keepalive_close_time=0.0, _keepalive_timeout=75.0, _max_msg_queue_size=32)
        fast = SimpleNamespace(answer=lambda msg, payload: b"response", answered=0)
        parser = _FastParser(Parser(), proto, fast)  # type: ignore[arg-type]
        left, upgraded, _ = parser.feed_data(b"two requests")
        assert written == [b"response"] and Parser.consumed == 1
        assert list(left) == messages[1:] and not upgraded
        buffered[0] = 0
        waiter.set_result(None)  # the request loop is busy now: nothing is answered here
        left, _, _ = parser.feed_data(b"two requests")
        assert list(left) == messages and written == [b"response"]
    finally:
        loop.close()


def test_a_failing_answer_leaves_the_request_to_aiohttp(caplog: pytest.LogCaptureFixture) -> None:
    messages = [(SimpleNamespace(), EMPTY_PAYLOAD)]

    class Parser:
        def feed_data(self, data: bytes) -> tuple[Any, bool, bytes]:
            return list(messages), False, b""

        def message_consumed(self) -> None:
            raise AssertionError("nothing was answered")

    def broken(msg: Any, payload: Any) -> bytes:
        raise KeyError("boom")

    loop = asyncio.new_event_loop()
    try:
        transport = SimpleNamespace(get_write_buffer_size=lambda: 0, is_closing=lambda: False)
        proto = SimpleNamespace(_waiter=loop.create_future(), _messages=[], _close=False, _force_close=False,
                                _payload_parser=None, _logging_enabled=False, transport=transport, _loop=loop)
        parser = _FastParser(Parser(), proto, SimpleNamespace(answer=broken, answered=0))  # type: ignore[arg-type]
        left, _, _ = parser.feed_data(b"x")
        assert list(left) == messages
        assert "fast path failed" in caplog.text
    finally:
        loop.close()


def test_off_with_an_aiohttp_it_does_not_know(caplog: pytest.LogCaptureFixture) -> None:
    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request)

    app = web.Application(middlewares=[mw])
    fast = FastThumbs(app, ByteCache(1 << 20), mw)
    parser = SimpleNamespace(feed_data=lambda data: ((), False, b""), message_consumed=lambda: None)
    known = SimpleNamespace(**{name: None for name in _PROTOCOL_ATTRS})
    known._parser = parser
    assert fast._eligible(known)
    other = SimpleNamespace(_parser=parser, _waiter=None)  # a RequestHandler without the rest
    assert not fast._eligible(other)
    assert "not the one it knows" in caplog.text
