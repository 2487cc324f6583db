# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""Values at the ends of their range: forged or out-of-range cursors (GET /photos, /video/wall) and
dates at the ends of the calendar (GET /memories) get a 400 or a right answer, never a 500."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tests.test_server_support import Server, Template, assert_error, server, template  # noqa: F401


def forged(*parts: Any) -> str:
    raw = json.dumps(list(parts)).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [
    forged("taken_desc", "2020", 2**63), forged("taken_desc", "2020", 10**30), forged("taken_desc", "2020", -1),
    forged("mtime_desc", 2**64, 1), forged("mtime_desc", -(10**40), 1), forged("taken_desc", "\ud800", 1),
    forged("taken_desc", "2020", 1.5), forged("mtime_desc", 1e300, 1),
    base64.urlsafe_b64encode(b"[" * 5000).decode(), base64.urlsafe_b64encode(b'["taken_desc", NaN, 1]').decode(),
], ids=["id-2^63", "id-1e30", "id-negative", "mtime-2^64", "mtime-1e40", "surrogate", "id-float", "mtime-float",
        "nested", "nan"])
async def test_forged_cursor_is_a_400(server: Server, cursor: str) -> None:
    sort = "mtime_desc" if "bXRpbWV" in cursor else "taken_desc"
    for path in ("/photos", "/video/wall"):
        params = {"cursor": cursor, "recursive": "1"} | ({"sort": sort} if path == "/photos" else {})
        r = await server.client.get(path, params=params, headers=server.auth)
        body = await r.json()
        assert r.status == 400, (path, body)
        assert_error(body, "bad_request")
        assert "cursor" in body["error"]["message"]


@pytest.mark.parametrize("span", ["day", "week", "month"])
@pytest.mark.parametrize("day", ["0001-01-01", "0001-01-03", "9999-12-31", "9999-12-29"])
async def test_memories_at_the_ends_of_the_calendar(server: Server, span: str, day: str) -> None:
    r = await server.client.get("/memories", params={"date": day, "span": span}, headers=server.auth)
    body = await r.json()
    assert r.status == 200, body
    assert body["date"] == day


@pytest.mark.parametrize("day", ["10000-01-01", "0000-12-31", "2020-02-30", "-2020-01-01", "9" * 30])
async def test_memories_date_out_of_range_is_a_400(server: Server, day: str) -> None:
    r = await server.client.get("/memories", params={"date": day}, headers=server.auth)
    body = await r.json()
    assert r.status == 400, body
    assert_error(body, "bad_request")
