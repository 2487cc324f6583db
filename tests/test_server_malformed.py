# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""Malformed requests, one test per kind: what aiohttp's parser refuses (over raw sockets), and
bodies that cannot be read or are hostile JSON. Each gets a 4xx in the error shape, never a 500
or plain text."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest

from tests.test_server_support import (  # noqa: F401
    AiohttpClient,
    Server,
    Template,
    assert_error,
    server,
    start_server,
    template,
)


async def raw_exchange(server: Server, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; the one response (the server closes after an error)."""
    host = server.client.server.host
    port = server.client.server.port
    assert port is not None
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
        return status, headers, body
    finally:
        writer.close()


def shaped(status: int, headers: dict[str, str], body: bytes, want: int, code: str) -> None:
    assert status == want, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    assert_error(json.loads(body), code)


def post(path: str, body: bytes, *extra: str, token: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {token}",
            "Content-Type: application/json", *extra]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in extra):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


# ----------------------------------------------------------------- refused by aiohttp's parser


async def test_long_request_line_gets_the_error_shape(server: Server) -> None:
    data = b"GET /photos?tag=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    shaped(*await raw_exchange(server, data), 400, "line_too_long")


async def test_too_many_headers_get_the_error_shape(server: Server) -> None:
    extra = b"".join(b"X-H%d: 1\r\n" % i for i in range(300))
    data = b"GET /health HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
    shaped(*await raw_exchange(server, data), 431, "headers_too_large")


async def test_over_long_header_gets_the_error_shape(server: Server) -> None:
    data = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    shaped(*await raw_exchange(server, data), 400, "line_too_long")


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",      # TLS to the HTTP port
    b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\n\r\n",                                # no Host
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
], ids=["tls", "version", "no-host", "negative-length", "length-and-chunked"])
async def test_unparseable_request_gets_the_error_shape(server: Server, data: bytes) -> None:
    shaped(*await raw_exchange(server, data), 400, "bad_request")


async def test_bad_chunked_body_gets_the_error_shape(server: Server) -> None:
    data = post("/image/tags", b"zz\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked", token=server.token)
    shaped(*await raw_exchange(server, data), 400, "bad_request")


# ----------------------------------------------------------------- bodies that cannot be read


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
async def test_body_that_does_not_decompress_is_a_400(server: Server, coding: str) -> None:
    data = post("/image/tags", b"0123456789", f"Content-Encoding: {coding}", token=server.token)
    shaped(*await raw_exchange(server, data), 400, "bad_body")


async def test_gzip_body_is_read(server: Server) -> None:
    body = gzip.compress(json.dumps({"path": "2020/a.jpg", "tag": "zipped"}).encode())
    status, _, answer = await raw_exchange(server, post("/image/tags", body, "Content-Encoding: gzip",
                                                        "Connection: close", token=server.token))
    assert status == 200, answer
    assert json.loads(answer)["files"][0]["tags"] == ["zipped"]


@pytest.mark.parametrize("coding", ["foo", "gzip, compress", "br;q=1"])
async def test_unknown_content_encoding_is_a_415(server: Server, coding: str) -> None:
    """An unknown coding is not passed through as if the bytes were plain."""
    body = json.dumps({"path": "2020/a.jpg", "tag": "x"}).encode()
    data = post("/image/tags", body, f"Content-Encoding: {coding}", "Connection: close", token=server.token)
    shaped(*await raw_exchange(server, data), 415, "unsupported_encoding")


# ----------------------------------------------------------------- hostile JSON


async def _json_status(server: Server, path: str, raw: bytes, method: str = "POST") -> tuple[int, Any]:
    r = await server.client.request(method, path, data=raw,
                                    headers={**server.auth, "Content-Type": "application/json"})
    return r.status, await r.json()


@pytest.mark.parametrize("raw", [
    b'{"path": "2020/a.jpg", "tag": "\\ud800"}',
    b'{"path": "2020/a.jpg", "tags": ["ok", "x\\udfff"]}',
    b'{"path": "\\ud83d", "tag": "x"}',
    b'{"path": "2020/a.jpg", "tag": "x", "\\udc00": 1}',
], ids=["tag", "tags", "path", "key"])
async def test_lone_surrogates_in_json_are_a_400(server: Server, raw: bytes) -> None:
    status, body = await _json_status(server, "/image/tags", raw)
    assert status == 400, body
    assert_error(body, "bad_json")
    assert "surrogate" in body["error"]["message"]


@pytest.mark.parametrize("raw", [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,
                                 b"[" * 40 + b"]" * 40],
                         ids=["array-100000", "object-50000", "array-40"])
async def test_deeply_nested_json_is_a_400(server: Server, raw: bytes) -> None:
    status, body = await _json_status(server, "/image/tags", raw)
    assert status == 400, body
    assert_error(body, "bad_json")
    assert "nested" in body["error"]["message"]


async def test_moderately_nested_json_is_read() -> None:
    from imageapi.server.middlewares import MAX_JSON_DEPTH, parse_json

    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deep) == json.loads(deep)


@pytest.mark.parametrize("raw", [b'{"person": NaN}', b'{"person": -Infinity}', b'{"person": 1e400}'])
async def test_non_finite_numbers_are_a_400(server: Server, raw: bytes) -> None:
    status, body = await _json_status(server, "/faces/1", raw, "PATCH")
    assert status == 400, body
    assert_error(body, "bad_json")


@pytest.mark.parametrize("index", [2**63, -(2**63) - 1, 10**30])
async def test_integers_out_of_range_are_a_400(aiohttp_client: AiohttpClient, template: Template,
                                               env_dirs: dict[str, Any], index: int) -> None:
    srv = await start_server(aiohttp_client, template, env_dirs["tmp"], OLLAMA_PRIMARY_URL="http://127.0.0.1:9")
    status, body = await _json_status(srv, "/insights/chat/rewind",
                                      json.dumps({"path": "2020/a.jpg", "index": index}).encode())
    assert status == 400, body
    assert_error(body, "bad_field")


@pytest.mark.parametrize("target", [b"/health", b"/no/such/route"])
@pytest.mark.parametrize("expect", [b"foo", b"bytes=0-0", b"\xff\xfe-continue"], ids=["word", "range", "not-utf8"])
async def test_unknown_expect_is_a_417_in_the_error_shape(server: Server, expect: bytes, target: bytes) -> None:
    data = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: " + expect + b"\r\n\r\n"
    shaped(*await raw_exchange(server, data), 417, "expectation_failed")


async def test_expect_100_continue_still_works(server: Server) -> None:
    body = json.dumps({"path": "2020/a.jpg", "tag": "continued"}).encode()
    data = post("/image/tags", body, "Expect: 100-continue", "Connection: close", token=server.token)
    host, port = server.client.server.host, server.client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head, _, rest = data.partition(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(rest)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b'"continued"' in answer
