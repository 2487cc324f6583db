# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""The web client's server side: the shell and its assets (caching, CSP), browser sessions over a
cookie (login, every route and the thumbnail fast path, logout, cross-site refusals), and the
timeline endpoints."""

from __future__ import annotations

import gzip
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from imageapi.core.config import load_config
from imageapi.core.db import connect
from imageapi.core.errors import ConfigError
from imageapi.core.sessions import create_session, find_session
from imageapi.core.users import add_user, get_user, remove_user, set_password
from imageapi.server.keys import FAST_THUMBS
from imageapi.server.sessions import COOKIE, SESSIONS, SessionCache, WebSettings, parse_cookie
from imageapi.server.webapp import WEB_FILES
from tests.test_server_fastpath import THUMB, Conn, _connect
from tests.test_server_support import (  # noqa: F401  (fixtures)
    PASSWORD,
    SECRET,
    USER,
    AiohttpClient,
    Server,
    Template,
    assert_error,
    server,
    start_server,
    template,
)

SAME = {"Sec-Fetch-Site": "same-origin"}


async def _login(server: Server, **headers: str) -> tuple[str, str]:
    """(the cookie's value, the whole Set-Cookie header)."""
    resp = await server.client.post("/login", json={"username": USER, "password": PASSWORD, "session": True},
                                    headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["user"] == USER and body["session"] is True and "token" not in body
    raw = resp.headers["Set-Cookie"]
    value = re.match(rf"{COOKIE}=([^;]+);", raw)
    assert value is not None, raw
    server.client.session.cookie_jar.clear()  # each test sends the cookie itself
    return value.group(1), raw


def _cookie(value: str, **more: str) -> dict[str, str]:
    return {"Cookie": f"other=1; {COOKIE}={value}", **more}


# -- the shell and its assets ------------------------------------------------------------------

async def test_shell_is_served_at_root_and_client_pages_with_security_headers(server: Server) -> None:
    files = server.app[WEB_FILES]
    for path in ("/", "/web/login", "/web/view/main/2020/a.jpg"):
        resp = await server.client.get(path)
        assert resp.status == 200 and resp.content_type == "text/html", path
        csp = resp.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-cache"
        html = await resp.text()
        assert f"/assets/{files.version}/" in html
    etag = resp.headers["ETag"]
    again = await server.client.get("/", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag


async def test_shell_has_no_inline_script_and_every_asset_it_names_is_immutable(server: Server) -> None:
    html = await (await server.client.get("/")).text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    names = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert any(n.endswith(".js") for n in names) and any(n.endswith(".css") for n in names)
    for name in names:
        resp = await server.client.get(name)
        assert resp.status == 200, name
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        if name.endswith(".js"):
            assert resp.content_type == "text/javascript"
    stale = await server.client.get(names[0].replace(server.app[WEB_FILES].version, "0" * 16))
    assert stale.status == 404
    for other in ("index.html", "nope.js"):  # only the client's files, by exact name
        assert (await server.client.get(f"/assets/{server.app[WEB_FILES].version}/{other}")).status == 404, other


async def test_text_assets_are_sent_gzipped_to_clients_that_accept_it(server: Server) -> None:
    files = server.app[WEB_FILES]
    name = next(n for n in files.assets if n.endswith(".js"))
    url = f"/assets/{files.version}/{name}"
    plain = await server.client.get(url, headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    packed = await server.client.get(url, headers={"Accept-Encoding": "gzip, deflate"}, auto_decompress=False)
    assert "Content-Encoding" not in plain.headers and packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await packed.read()) == await plain.read() == files.assets[name].body
    assert plain.headers["Vary"] == packed.headers["Vary"] == "Accept-Encoding"
    assert plain.headers["ETag"] != packed.headers["ETag"]
    again = await server.client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["ETag"]})
    assert again.status == 304
    shell = await server.client.get("/", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert shell.headers["Content-Encoding"] == "gzip" and b"/assets/" in gzip.decompress(await shell.read())


# -- sessions ----------------------------------------------------------------------------------

async def test_login_sets_an_httponly_strict_cookie_that_authenticates_requests(server: Server) -> None:
    value, raw = await _login(server)
    attrs = {a.strip().split("=")[0].lower() for a in raw.split(";")[1:]}
    assert {"httponly", "path", "max-age"} <= attrs and "secure" not in attrs  # plain HTTP here
    assert "samesite=strict" in raw.lower()
    # Only a digest is stored.
    with sqlite3.connect(server.config.database_path) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM sessions")]
    assert len(ids) == 1 and value not in ids[0]
    for path in ("/libraries", "/photos", "/image/metadata?path=2020/a.jpg", "/timeline/buckets"):
        resp = await server.client.get(path, headers=_cookie(value, **SAME))
        assert resp.status == 200, path
        resp = await server.client.get(path)  # without the cookie
        assert resp.status == 401, path
    img = await server.client.get(THUMB, headers=_cookie(value))  # a browser's <img>, no Sec-Fetch-Site
    assert img.status == 200 and img.content_type == "image/jpeg"
    bad = await server.client.get("/libraries", headers=_cookie(value[:-2] + "xx"))
    assert bad.status == 401
    assert_error(await bad.json(), "unauthorized")


async def test_cookie_is_secure_over_https_from_a_trusted_proxy_only(
    aiohttp_client: AiohttpClient, template: Template, tmp_path: Path
) -> None:
    trusted = await start_server(aiohttp_client, template, tmp_path / "a", TRUSTED_PROXIES="127.0.0.1, ::1")
    _, raw = await _login(trusted, **{"X-Forwarded-Proto": "https"})
    assert "secure" in raw.lower()
    _, raw = await _login(trusted)
    assert "secure" not in raw.lower()
    untrusted = await start_server(aiohttp_client, template, tmp_path / "b", TRUSTED_PROXIES="10.0.0.0/8")
    _, raw = await _login(untrusted, **{"X-Forwarded-Proto": "https"})
    assert "secure" not in raw.lower()


def test_bad_trusted_proxies_setting_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_config(environ={"IMAGEAPI_DATA_DIR": str(tmp_path), "SECRET_KEY": SECRET,
                             "TRUSTED_PROXIES": "127.0.0.1, not-an-address"}, cwd=tmp_path)


async def test_cookie_takes_the_thumbnail_fast_path_and_it_refuses_what_the_gate_refuses(server: Server) -> None:
    value, _ = await _login(server)
    conn: Conn = await _connect(server)
    try:
        full = await conn.get(THUMB, _cookie(value))
        assert full[0] == 200 and server.app[FAST_THUMBS].answered == 0
        fast = await conn.get(THUMB, _cookie(value, **{"Sec-Fetch-Site": "same-origin"}))
        assert fast[0] == 200 and fast[2] == full[2] and server.app[FAST_THUMBS].answered == 1
        # Cross-site (a page elsewhere embedding our thumbnail): refused, fast path or not.
        for site in ("cross-site", "same-site"):
            refused = await conn.get(THUMB, _cookie(value, **{"Sec-Fetch-Site": site}))
            assert refused[0] == 403 and server.app[FAST_THUMBS].answered == 1, site
        wrong = await conn.get(THUMB, _cookie(value + "x"))
        assert wrong[0] == 401
        # Revoked: the fast path stops at once in this process.
        assert (await server.client.post("/logout", headers=_cookie(value, **SAME))).status == 200
        after = await conn.get(THUMB, _cookie(value))
        assert after[0] == 401 and server.app[FAST_THUMBS].answered == 1
    finally:
        conn.close()


async def test_logout_revokes_the_session_and_clears_the_cookie(server: Server) -> None:
    value, _ = await _login(server)
    resp = await server.client.post("/logout", headers=_cookie(value, **SAME))
    assert resp.status == 200 and (await resp.json()) == {"ended": True}
    cleared = resp.headers["Set-Cookie"]
    assert cleared.startswith(f'{COOKIE}="";') or cleared.startswith(f"{COOKIE}=;"), cleared
    assert "max-age=0" in cleared.lower()
    with sqlite3.connect(server.config.database_path) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0
    server.app[SESSIONS].forget(value)
    assert (await server.client.get("/libraries", headers=_cookie(value))).status == 401
    # Bearer clients have no session to end; logging out does not touch their token.
    resp = await server.client.post("/logout", headers=server.auth)
    assert resp.status == 200 and (await resp.json()) == {"ended": False}
    assert (await server.client.get("/libraries", headers=server.auth)).status == 200


@pytest.mark.parametrize("headers,ok", [
    ({"Sec-Fetch-Site": "same-origin"}, True),
    ({"Sec-Fetch-Site": "same-origin", "Origin": "http://elsewhere.example"}, True),  # Sec-Fetch-Site decides
    ({"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),
    ({"Sec-Fetch-Site": "none"}, False),
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "null"}, False),
    ({}, False),  # neither header: not a request this server's pages make
    ({"Origin": "SELF"}, True),  # an older browser without Sec-Fetch-Site, from our own page
])
async def test_state_changing_requests_with_the_cookie_must_be_same_origin(
    server: Server, headers: dict[str, str], ok: bool
) -> None:
    value, _ = await _login(server)
    if headers.get("Origin") == "SELF":
        headers = {"Origin": f"http://{server.client.host}:{server.client.port}"}
    resp = await server.client.post("/image/tags", json={"path": "2020/a.jpg", "tag": "csrf"},
                                    headers=_cookie(value, **headers))
    with sqlite3.connect(server.config.database_path) as db:
        tagged = db.execute("SELECT COUNT(*) FROM tags WHERE name = 'csrf'").fetchone()[0]
    if ok:
        assert resp.status == 200 and tagged == 1
    else:
        assert resp.status == 403 and tagged == 0
        assert_error(await resp.json(), "cross_site")
    # A Bearer client is not a browser: no such check.
    resp = await server.client.post("/image/tags", json={"path": "2020/a.jpg", "tag": "bearer"},
                                    headers={**server.auth, "Origin": "http://evil.example"})
    assert resp.status == 200


async def test_a_password_change_or_a_removed_user_ends_sessions(tmp_path: Path) -> None:
    db = await connect(tmp_path / "db.sqlite")
    try:
        await add_user(db, "bob", "x")
        bob = await get_user(db, "bob")
        secret, _ = await create_session(db, bob.id, bob.token_key, 3600, now=1000)
        assert (await find_session(db, secret, now=1001)) is not None
        assert await find_session(db, secret, now=1000 + 3600) is None  # expired
        # A password change in the same second as the session began still ends it (a new token key).
        began = int(time.time())
        secret, _ = await create_session(db, bob.id, bob.token_key, 3600, now=began)
        await set_password(db, "bob", "y")
        assert await find_session(db, secret, now=began + 1) is None
        bob = await get_user(db, "bob")
        secret, _ = await create_session(db, bob.id, bob.token_key, 3600)
        assert await find_session(db, secret) is not None
        await remove_user(db, "bob")
        assert await find_session(db, secret) is None
        assert (await (await db.execute("SELECT COUNT(*) FROM sessions")).fetchone())[0] == 0
    finally:
        await db.close()


# -- the timeline ------------------------------------------------------------------------------

@pytest.fixture()
async def timeline(server: Server) -> AsyncIterator[tuple[Server, list[sqlite3.Row]]]:
    with server.db() as db:
        rows = list(db.execute("SELECT rel_path, taken_at FROM files"))
    yield server, rows


async def test_buckets_count_every_file_by_month_and_day_newest_first(timeline: tuple[Server, list]) -> None:
    server, rows = timeline
    resp = await server.client.get("/timeline/buckets", headers=server.auth)
    body = await resp.json()
    assert resp.status == 200 and body["libraries"] == ["main"]
    months = body["months"]
    dated = [m for m in months if m["month"] != "undated"]
    assert [m["month"] for m in dated] == sorted({r["taken_at"][:7] for r in rows if r["taken_at"]}, reverse=True)
    assert sum(m["count"] for m in months) == len(rows)
    for m in dated:
        assert m["count"] == sum(d["count"] for d in m["days"])
        assert [d["day"] for d in m["days"]] == sorted((d["day"] for d in m["days"]), reverse=True)
        assert all(d["day"].startswith(m["month"]) for d in m["days"])
    undated = [r for r in rows if not r["taken_at"]]
    assert (months[-1]["month"] == "undated" and months[-1]["count"] == len(undated)) if undated else True
    one = await server.client.get("/timeline/buckets?library=main", headers=server.auth)
    assert (await one.json())["months"] == months
    missing = await server.client.get("/timeline/buckets?library=nope", headers=server.auth)
    assert missing.status == 404


async def test_items_of_a_month_in_timeline_order(timeline: tuple[Server, list]) -> None:
    server, rows = timeline
    months = (await (await server.client.get("/timeline/buckets", headers=server.auth)).json())["months"]
    seen = []
    for m in months:
        resp = await server.client.get(f"/timeline/items?month={m['month']}", headers=server.auth)
        items = (await resp.json())["items"]
        assert len(items) == m["count"]
        if m["month"] != "undated":
            keys = [i["taken_at"][:19] for i in items]
            assert keys == sorted(keys, reverse=True) and all(k.startswith(m["month"]) for k in keys)
        seen += [i["path"] for i in items]
    assert sorted(seen) == sorted(r["rel_path"] for r in rows)
    page = await server.client.get(f"/timeline/items?month={months[0]['month']}&offset=1&limit=1",
                                   headers=server.auth)
    assert (await page.json())["items"] == (await (await server.client.get(
        f"/timeline/items?month={months[0]['month']}", headers=server.auth)).json())["items"][1:2]
    for bad in ("2020-13", "2020-1", "x", ""):
        resp = await server.client.get(f"/timeline/items?month={bad}", headers=server.auth)
        assert resp.status == 400, bad


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "ximageapi_session", "imageapi_sessionx", COOKIE]),
                          st.text(alphabet="abcXYZ019-_", min_size=1, max_size=12)), max_size=5))
def test_the_session_cookie_is_read_like_a_cookie_parser_reads_it(pairs: list[tuple[str, str]]) -> None:
    header = "; ".join(f"{k}={v}" for k, v in pairs)
    jar = SimpleCookie()
    jar.load(header)
    expected = jar[COOKIE].value if COOKIE in jar else None
    # SimpleCookie keeps the last of repeated names; a browser sends one cookie per name.
    if [k for k, _ in pairs].count(COOKIE) <= 1:
        assert parse_cookie(header) == expected
    cache = SessionCache(WebSettings())
    assert cache.secret_in(header) == cache.secret_in(header) == parse_cookie(header)
