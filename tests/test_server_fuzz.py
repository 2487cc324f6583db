"""Hostile input at every endpoint, from the server's own /openapi.json: for every operation,
generated values for every path and query parameter and every JSON body field (lone surrogates,
control characters, invalid UTF-8, huge strings, huge, negative, fractional and non-finite
numbers, out-of-range dates, forged cursors, deep nesting, wrong types, missing fields) and whole
bodies that are not JSON objects at all, sent authenticated to a real server over a small indexed
library. Whatever comes in, the answer is never a 500 (or another 5xx than an honest 502/503), and
every error has the one error shape.

This complements the schemathesis run (test_server_openapi.py), which keeps to values the schema
allows. Bounded: MAX_EXAMPLES per operation keeps the file well under a minute on two cores."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageapi.core.config import load_config
from imageapi.server.app import create_app
from imageapi.server.openapi import SPEC
from tests.test_server_openapi import LiveServer
from tests.test_server_support import Template, environ, stored_user_token, template  # noqa: F401

MAX_EXAMPLES = int(os.environ.get("IMAGEAPI_FUZZ_EXAMPLES", "50"))  # more for a deeper run by hand
NAME_MAX = 255  # bytes in one file name component (Linux)
REFUSED = "http://127.0.0.1:9"  # nothing listens there: every outside service is down, fast
HONEST_5XX = {502, 503}         # an outside service or a stream not ready: said as such


@pytest.fixture(scope="module")
def live(template: Template, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("fuzz")
    data = tmp / "data"
    shutil.copytree(template.data, data, symlinks=True)
    for lock in data.glob("*.lock"):
        lock.unlink()
    env = environ(template, data, APOLLO_FACE_API_BASE_URL=REFUSED, APOLLO_API_BASE_URL=REFUSED,
                  OLLAMA_PRIMARY_URL=REFUSED, NOMINATIM_URL=REFUSED, SMS_API_URL=REFUSED,
                  OLLAMA_CONNECT_TIMEOUT_SEC="1", INSIGHTS_REQUEST_TIMEOUT_SEC="2")
    config = load_config(environ=env, cwd=tmp)
    server = LiveServer(create_app(config))
    server.start()
    token = stored_user_token(config)
    try:
        yield server.port, token
    finally:
        server.stop()


# ------------------------------------------------------------------------------------ values

# Values the library really has, so that generated requests also get past the first checks.
KNOWN = ["main", "2020/a.jpg", "clip.mp4", "name with spaces & ünïcode.jpg", "2020", "", "x", "1",
         "taken_desc", "mtime_asc", "week", "month", "true", "thumb", "preview", "full", "seg00000.m4s",
         "init.mp4", "Europe/Paris", "2020-06-01"]

NASTY = [
    "\ud800", "a\udfffb", "\x00", "\x7f", "\x1b[31m", "\u202e", "\ufeff", "\uffff", "\U0010ffff",
    "..", "../../etc/passwd", "/", "//", "\\", "%00", "%2e%2e", "%ff", "%ud800", "é", "e\u0301",
    "ÉTÉ", "ﬁ", "İ", "ß", " ", "\t", "\n", "\r\n", "a" * 300, "a/" * 200, "é" * 3000,
    "-1", "0", "-0", "1e400", "-1e400", "nan", "NaN", "inf", "-inf", "Infinity", "1.5", "0x10", "1_000",
    "9" * 30, "-" + "9" * 30, str(2**63), str(-(2**63) - 1), str(2**64), "٣", "１２",
    "0000-00-00", "0001-01-01", "0001-01-03", "9999-12-31", "9999-12-29", "10000-01-01", "2020-02-30",
    "2020-W01-1", "20200101", "-2020-01-01", "2020-13-01",
    "UTC", "../../../../etc/localtime", "Europe/../../../etc/passwd", "America", "a" * 1000, "\x00UTC",
    "GMT+5", "posix/Europe/Paris", "Etc", "right/UTC",
]


def _cursor(payload: Any) -> str:
    raw = json.dumps(payload, allow_nan=True).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30),
    st.sampled_from(NASTY + KNOWN),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)), max_leaves=10)

cursors = st.one_of(
    st.builds(_cursor, st.tuples(st.sampled_from(["taken_desc", "name_asc", "mtime_desc", "x"]), json_values,
                                 json_values)),
    st.builds(_cursor, st.tuples(st.just("taken_desc"), st.text(st.characters(codec=None), max_size=5),
                                 st.sampled_from([2**63, -(2**63) - 1, 10**30, 1.5, -1, 0]))),
    st.builds(_cursor, st.tuples(st.just("mtime_desc"), st.sampled_from([2**63, 10**30, -(10**30), 1e300]),
                                 st.integers())),
    st.builds(_cursor, json_values),
    st.just(_cursor([["taken_desc"] * 3]) + "A" * 10),
    st.just(base64.urlsafe_b64encode(b"[" * 5000).decode()),
    st.just(base64.urlsafe_b64encode(b"[\"taken_desc\", \"\\ud800\", 1]").decode()),
)

# A query or path value: text (surrogates included: sent as their UTF-8-ish bytes), raw bytes
# (invalid UTF-8), numbers, dates, cursors, or what the library has.
raw_values = st.one_of(
    st.sampled_from(KNOWN), st.sampled_from(NASTY),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),
    st.binary(max_size=40),
    st.integers().map(str), st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.dates().map(lambda d: d.isoformat()), cursors,
    st.integers(1000, 6000).map(lambda n: "é" * n),
)


# Request headers the handlers or aiohttp read (Authorization is the auth tests' own).
HEADER_NAMES = ["Range", "If-Range", "If-None-Match", "If-Modified-Since", "Accept", "Accept-Encoding",
                "Expect", "Origin", "Cookie", "X-Forwarded-For", "Forwarded", "Content-Type", "Upgrade",
                "Connection", "Transfer-Encoding", "Content-Encoding", "Host"]
header_values = st.one_of(
    st.sampled_from(["bytes=0-0", "bytes=-1", "bytes=5-1", "bytes=0-0,1-1,2-2", "bytes=99999999999999999999-",
                     "bytes=a-b", "items=0-1", "*", "W/\"x\"", "\"\"", "Thu, 01 Jan 1970 00:00:00 GMT",
                     "Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 99 Foo 0000 99:99:99 XYZ", "0", "-1", "nan",
                     "100-continue", "foo", "websocket", "h2c", "close", "keep-alive, Upgrade", "chunked",
                     "gzip", "identity", "application/json; charset=latin-1", "multipart/form-data", ""]),
    st.binary(max_size=60).filter(lambda b: b"\r" not in b and b"\n" not in b).map(
        lambda b: b.decode("latin-1").strip()),
    st.integers(100, 7000).map(lambda n: "x" * n),
)
# Query text beyond name=value pairs: broken percent-encoding, empty names, repeats.
raw_query = st.sampled_from(["", "", "", "&%zz=1", "&path=%ff%fe", "&=", "&&&", "&library", "&%00=%00",
                             "&path=a&path=b", "&tag=%ED%A0%80", "&cursor=%ED%A0%80", "&date=%ED%A0%80",
                             "&limit=1&limit=x", "&path=2020%2Fa.jpg%00", "&%", "&a=%2"])


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


# ------------------------------------------------------------------------------------ requests


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                ops.append((method.upper(), path, op))
    return ops


OPERATIONS = _operations()


def _body_fields(op: dict[str, Any]) -> list[str]:
    body = op.get("requestBody")
    if not body:
        return []
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return list(schema.get("properties", {}))


@st.composite
def requests(draw: st.DrawFn, method: str, path: str, op: dict[str, Any]) -> tuple[str, str, bytes | None,
                                                                                    dict[str, str]]:
    params = op.get("parameters", []) + SPEC["paths"][path].get("parameters", [])
    target = path
    query: list[str] = []
    for p in params:
        if p["in"] == "path":
            value = draw(raw_values)
            target = target.replace("{" + p["name"] + "}", quote_from_bytes(_bytes(value), safe="") or "x")
        elif p["in"] == "query" and p["name"] != "mt" and (p.get("required") or draw(st.booleans())):
            value = draw(raw_values)
            query.append(f"{p['name']}={quote_from_bytes(_bytes(value), safe='')}")
    extra = draw(raw_query)
    if query or extra:
        target += "?" + "&".join(query) + extra
    headers = {"Content-Type": "application/json"}
    for name in draw(st.lists(st.sampled_from(HEADER_NAMES), max_size=3, unique=True)):
        if name in ("Transfer-Encoding", "Content-Encoding", "Connection", "Host") and draw(st.integers(0, 3)):
            continue  # mostly left alone: they change how the message is framed, tested one by one
        headers[name] = draw(header_values)
    body: bytes | None = None
    fields = _body_fields(op)
    if fields:
        shape = draw(st.sampled_from(["fields", "fields", "fields", "raw"]))
        if shape == "fields":
            doc = {}
            for name in fields:
                if draw(st.integers(0, 4)):  # most fields present, some missing
                    doc[name] = draw(st.one_of(json_values, st.sampled_from(KNOWN)))
            body = json.dumps(doc, allow_nan=True).encode()
        else:
            body = draw(st.sampled_from([
                b"", b"null", b"[]", b"1", b'"x"', b"{", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b'{"a": NaN}',
                b"[" * 100_000 + b"]" * 100_000, b'{"path": ' * 5000 + b"1" + b"}" * 5000,
                b'{"path": "\\ud800", "tag": "\\udfff", "name": "\\ud800", "message": "\\ud800"}',
                b'{"tag": "x", "tags": ["\\ud83d"], "path": "2020/a.jpg", "paths": ["\\udc00"]}',
                b'{"index": 1e400, "max_iterations": 99999999999999999999999, "box": {"x": NaN}}',
                b'{"index": -Infinity, "person": 1e999, "ttl": 1e999}',
                b'{"ttl": 99999999999999999999999999, "library": "main", "path": "2020/a.jpg"}',
            ]))
            if draw(st.booleans()):
                headers["Content-Type"] = draw(st.sampled_from(["text/plain", "application/xml", "", "a/b; x"]))
    return method, target, body, headers


def _send(port: int, token: str, method: str, target: str, body: bytes | None,
          headers: dict[str, str]) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        if not target.startswith("/login"):
            conn.putheader("Authorization", f"Bearer {token}")
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or None)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()


def check_answer(status: int, data: bytes, ctype: str, what: str) -> None:
    assert status < 500 or status in HONEST_5XX, f"{what} -> {status}: {data[:300]!r}"
    if status >= 400:
        assert ctype.startswith("application/json"), f"{what} -> {status} {ctype}: {data[:300]!r}"
        doc = json.loads(data)
        assert set(doc) == {"error"} and set(doc["error"]) == {"code", "message"}, f"{what}: {doc}"
        assert doc["error"]["code"] != "internal", f"{what}: {doc}"
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]


def test_every_operation_is_fuzzed() -> None:
    """The fuzzing follows the document: every operation, every parameter and body field."""
    assert len(OPERATIONS) >= 30
    assert {(m, p) for m, p, _ in OPERATIONS} >= {("POST", "/image/tags"), ("GET", "/photos"),
                                                  ("GET", "/memories"), ("PATCH", "/faces/{id}")}


def test_served_document_is_the_fuzzed_one(live: tuple[int, str]) -> None:
    port, token = live
    status, data, _ = _send(port, token, "GET", "/openapi.json", None, {})
    assert status == 200 and json.loads(data) == json.loads(json.dumps(SPEC))


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_hostile_input_gets_a_clear_answer(live: tuple[int, str], method: str, path: str,
                                           op: dict[str, Any]) -> None:
    port, token = live

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(requests(method, path, op))
    def run(req: tuple[str, str, bytes | None, dict[str, str]]) -> None:
        m, target, body, headers = req
        status, data, ctype = _send(port, token, m, target, body, headers)
        check_answer(status, data, ctype, f"{m} {target[:200]} body={(body or b'')[:200]!r}")

    run()


@pytest.mark.parametrize("size", ["thumb", "preview", "full"])
def test_over_long_file_name_is_a_4xx(live: tuple[int, str], size: str) -> None:
    port, token = live
    target = f"/image?size={size}&path=" + "a" * (NAME_MAX + 1)
    status, data, ctype = _send(port, token, "GET", target, None, {})
    check_answer(status, data, ctype, target)
    assert 400 <= status < 500
