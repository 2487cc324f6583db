# ruff: noqa: F811  (pytest fixtures imported from tests.test_server_support are parameters here)
"""Auth: login, bearer tokens (missing, expired, tampered, alg:none, wrong key), media tokens,
the verified-token cache, the login throttle, users."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from pathlib import Path

import jwt
import pytest

from imageapi.core.db import connect
from imageapi.core.errors import UsageError
from imageapi.core.tokens import AccessClaims, TokenError, TokenService, check_secret, parse_ttl
from imageapi.core.users import User, add_user, check_name, hash_password, remove_user, verify_password
from imageapi.server import routes_media
from imageapi.server.keys import TOKENS
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

ALICE = User(id=1, name="alice", created_at="x", tokens_valid_after=0, token_key="alices-key")


async def test_public_routes_need_no_token(server: Server) -> None:
    r = await server.client.get("/health")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await server.client.get("/openapi.json")
    assert r.status == 200 and (await r.json())["openapi"].startswith("3.")


@pytest.mark.parametrize("path", ["/libraries", "/photos", "/image?path=2020/a.jpg", "/status", "/tags",
                                  "/memories", "/persons", "/no/such/route"])
async def test_missing_token_is_401(server: Server, path: str) -> None:
    r = await server.client.get(path)
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(await r.json(), "unauthorized")


async def test_login_gives_a_working_token(server: Server) -> None:
    r = await server.client.post("/login", json={"username": USER, "password": PASSWORD})
    assert r.status == 200
    body = await r.json()
    assert body["expires_at"].endswith("Z") and body["user"] == USER
    r = await server.client.get("/libraries", headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status == 200
    assert [lib["name"] for lib in (await r.json())["libraries"]] == ["main"]


@pytest.mark.parametrize("body,code", [
    ({"username": USER, "password": "wrong password"}, "bad_credentials"),
    ({"username": "nobody", "password": PASSWORD}, "bad_credentials"),
])
async def test_bad_credentials(server: Server, body: dict[str, str], code: str) -> None:
    r = await server.client.post("/login", json=body)
    assert r.status == 401
    assert_error(await r.json(), code)


@pytest.mark.parametrize("raw,field", [
    (b'{"username": "alice"}', "password"),
    (b'{"password": "x"}', "username"),
    (b'{"username": 5, "password": "x"}', "username"),
])
async def test_login_missing_or_bad_fields_name_the_field(server: Server, raw: bytes, field: str) -> None:
    r = await server.client.post("/login", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400
    body = await r.json()
    assert_error(body)
    assert repr(field) in body["error"]["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
async def test_login_bad_json(server: Server, raw: bytes) -> None:
    r = await server.client.post("/login", data=raw, headers={"Content-Type": "application/json"})
    assert r.status == 400
    assert_error(await r.json(), "bad_json")


async def test_body_size_limit(server: Server) -> None:
    r = await server.client.post("/login", data=b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}',
                                 headers={"Content-Type": "application/json"})
    assert r.status == 413
    assert_error(await r.json(), "body_too_large")


def _claims(user: User) -> AccessClaims:
    """What a verified access token of `user` says (media tokens are issued from it)."""
    return AccessClaims(user_id=user.id, name=user.name, issued_at=0, expires_at=0, key=user.token_key)


def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "2"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _bad_tokens(server: Server) -> dict[str, str]:
    now = int(time.time())
    good = {"sub": str(server.user.id), "name": USER, "iat": now, "exp": now + 3600, "typ": "access",
            "key": server.user.token_key}
    flipped = server.token[:-2] + ("A" if server.token[-2] != "A" else "B") + server.token[-1]
    return {
        "expired": jwt.encode({**good, "iat": now - 7200, "exp": now - 10}, SECRET, algorithm="HS256"),
        "tampered_payload": _tamper(server.token),
        "tampered_signature": flipped,
        "alg_none": jwt.encode(good, None, algorithm="none"),  # type: ignore[arg-type]
        "wrong_key": jwt.encode(good, "another-secret-key-that-is-long-enough!!", algorithm="HS256"),
        "hs512": jwt.encode(good, SECRET, algorithm="HS512"),
        "no_exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "unknown_user": jwt.encode({**good, "sub": "999"}, SECRET, algorithm="HS256"),
        "no_key": jwt.encode({k: v for k, v in good.items() if k != "key"}, SECRET, algorithm="HS256"),
        "other_key": jwt.encode({**good, "key": "0" * 32}, SECRET, algorithm="HS256"),
        "future_nbf": jwt.encode({**good, "nbf": now + 3600}, SECRET, algorithm="HS256"),
        "nbf_not_a_number": jwt.encode({**good, "nbf": "soon"}, SECRET, algorithm="HS256"),
        "sub_not_ascii_digits": jwt.encode({**good, "sub": "\u00b2"}, SECRET, algorithm="HS256"),
        "sub_other_digits": jwt.encode({**good, "sub": "\u0661"}, SECRET, algorithm="HS256"),
        "sub_huge": jwt.encode({**good, "sub": "9" * 40}, SECRET, algorithm="HS256"),
        "sub_int": jwt.encode({**good, "sub": server.user.id}, SECRET, algorithm="HS256"),
        "exp_not_a_number": jwt.encode({**good, "exp": "tomorrow"}, SECRET, algorithm="HS256"),
        "exp_float": jwt.encode({**good, "exp": now + 3600.5}, SECRET, algorithm="HS256"),
        "iat_bool": jwt.encode({**good, "iat": True}, SECRET, algorithm="HS256"),
        "garbage": "not.a.token",
        "huge": "a" * 5000,
    }


@pytest.mark.parametrize("kind", ["expired", "tampered_payload", "tampered_signature", "alg_none", "wrong_key",
                                  "hs512", "no_exp", "unknown_user", "no_key", "other_key", "future_nbf",
                                  "nbf_not_a_number", "sub_not_ascii_digits", "sub_other_digits", "sub_huge",
                                  "sub_int", "exp_not_a_number", "exp_float", "iat_bool", "garbage", "huge"])
async def test_bad_tokens_are_401(server: Server, kind: str) -> None:
    # A good request first, so the good token sits in the verified-token cache.
    assert (await server.client.get("/libraries", headers=server.auth)).status == 200
    token = _bad_tokens(server)[kind]
    r = await server.client.get("/libraries", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 401, kind
    assert_error(await r.json(), "unauthorized")


@pytest.mark.parametrize("header", ["Basic YWxpY2U6eA==", "Bearer", "Bearer ", "Token abc"])
async def test_malformed_authorization_header(server: Server, header: str) -> None:
    r = await server.client.get("/libraries", headers={"Authorization": header})
    assert r.status == 401
    assert_error(await r.json(), "unauthorized")


async def test_password_change_revokes_older_tokens(
    aiohttp_client: AiohttpClient, template: Template, tmp_path: Path
) -> None:
    srv = await start_server(aiohttp_client, template, tmp_path)
    with srv.db() as conn:
        conn.execute("UPDATE users SET tokens_valid_after = ? WHERE name = ?", (int(time.time()) + 5, USER))
    r = await srv.client.get("/libraries", headers=srv.auth)
    assert r.status == 401
    assert "password" in (await r.json())["error"]["message"]


async def test_media_token_is_scoped_to_its_path(server: Server) -> None:
    r = await server.client.post("/media-token", json={"path": "2020"}, headers=server.auth)
    assert r.status == 200
    mt = (await r.json())["token"]
    ok = await server.client.get("/image", params={"path": "2020/a.jpg", "mt": mt})
    assert ok.status == 200 and ok.headers["Content-Type"] == "image/jpeg"
    full = await server.client.get("/image", params={"path": "2020/b.jpg", "size": "full", "mt": mt})
    assert full.status == 200
    for params in ({"path": "2021/c.jpg", "mt": mt}, {"path": "2020x/a.jpg", "mt": mt},
                   {"path": "2020/a.jpg", "mt": mt[:-3] + "AAA"}, {"path": "2020/a.jpg", "mt": "x.y"}):
        r = await server.client.get("/image", params=params)
        assert r.status in (401, 404), params
        assert_error(await r.json())
    # A media token is not a bearer token and opens nothing but media.
    r = await server.client.get("/photos", params={"mt": mt})
    assert r.status == 401
    r = await server.client.get("/libraries", headers={"Authorization": f"Bearer {mt}"})
    assert r.status == 401
    r = await server.client.get("/image/metadata", params={"path": "2020/a.jpg", "mt": mt})
    assert r.status == 401


async def test_media_token_expires(server: Server) -> None:
    svc = TokenService(SECRET, clock=lambda: time.time() - 7200)
    old = svc.issue_media(_claims(server.user), "main", "", ttl=60).token
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "mt": old})
    assert r.status == 401
    assert "expired" in (await r.json())["error"]["message"]


async def test_media_token_needs_a_bearer(server: Server) -> None:
    r = await server.client.post("/media-token", json={})
    assert r.status == 401
    r = await server.client.post("/media-token", json={"ttl": 10**9}, headers=server.auth)
    assert r.status == 400
    r = await server.client.post("/media-token", json={"path": "../x"}, headers=server.auth)
    assert r.status == 400


async def test_failed_logins_slow_down(server: Server) -> None:
    statuses = []
    for _ in range(7):
        r = await server.client.post("/login", json={"username": USER, "password": "nope-nope"})
        statuses.append(r.status)
    assert statuses[:5] == [401] * 5
    assert 429 in statuses[5:]
    r = await server.client.post("/login", json={"username": USER, "password": PASSWORD})
    assert r.status == 429  # even the right password waits
    assert int(r.headers["Retry-After"]) >= 1
    assert_error(await r.json(), "too_many_attempts")


async def test_a_token_past_its_nbf_is_accepted(server: Server) -> None:
    now = int(time.time())
    good = {"sub": str(server.user.id), "name": USER, "iat": now, "exp": now + 3600, "typ": "access",
            "key": server.user.token_key}
    token = jwt.encode({**good, "nbf": now - 5}, SECRET, algorithm="HS256")
    assert (await server.client.get("/libraries", headers={"Authorization": f"Bearer {token}"})).status == 200


def _media(user_id: object, **extra: object) -> str:
    """A media token signed as the server signs them, saying whatever it is told."""
    media_key = hmac.new(SECRET.encode(), b"imageapi media token v1", hashlib.sha256).digest()
    now = int(time.time())
    claims = {"u": user_id, "k": ALICE.token_key, "l": "main", "p": "", "i": now, "e": now + 60, **extra}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(media_key, payload.encode(), hashlib.sha256).digest()).rstrip(b"=")
    return f"{payload}.{sig.decode()}"


@pytest.mark.parametrize("token", [
    _media(True), _media(1.0), _media("1"), _media(2**70), _media(-1), _media(1, i=True), _media(1, e=10.0**12),
    _media(1, k=None), "\u00e9" + _media(1), _media(1)[:-1] + "\udcff",
])
async def test_odd_media_tokens_are_refused(token: str) -> None:
    svc = TokenService(SECRET)

    async def load(uid: int) -> User | None:
        return ALICE if uid == 1 else None

    assert (await svc.verify_media(_media(1), "main", "a.jpg", load)).user_id == 1
    with pytest.raises(TokenError):
        await svc.verify_media(token, "main", "a.jpg", load)


async def test_token_cache_rechecks_expiry_on_every_hit() -> None:
    now = [1000.0]
    svc = TokenService(SECRET, clock=lambda: now[0])
    token = svc.issue(ALICE, 60).token
    loads = []

    async def load(uid: int) -> User | None:
        loads.append(uid)
        return ALICE

    assert (await svc.verify(token, load)).user_id == 1
    assert (await svc.verify(token, load)).name == "alice"
    assert loads == [1]  # user checked once, then remembered
    now[0] += 59
    await svc.verify(token, load)
    now[0] += 2
    with pytest.raises(TokenError, match="expired"):
        await svc.verify(token, load)
    with pytest.raises(TokenError):
        await svc.verify(token, load)


async def test_token_cache_rechecks_the_user() -> None:
    now = [1000.0]
    svc = TokenService(SECRET, clock=lambda: now[0], user_recheck=30)
    token = svc.issue(ALICE, 3600).token
    present: list[User | None] = [ALICE]

    async def load(uid: int) -> User | None:
        return present[0]

    await svc.verify(token, load)
    present[0] = None  # the user was removed by the CLI
    await svc.verify(token, load)  # still remembered within the recheck period
    now[0] += 31
    with pytest.raises(TokenError, match="no longer exists"):
        await svc.verify(token, load)


def test_secret_key_rules() -> None:
    with pytest.raises(UsageError, match="not set"):
        check_secret(None)
    with pytest.raises(UsageError, match="too short"):
        check_secret("short")
    assert check_secret("x" * 32) == "x" * 32


def test_ttl_parsing() -> None:
    assert parse_ttl("30d") == 30 * 86400
    assert parse_ttl("15m") == 900
    assert parse_ttl("90") == 90
    for bad in ("", "x", "-1d", "0", "20y"):
        with pytest.raises(UsageError):
            parse_ttl(bad)


def test_password_hashing() -> None:
    stored = hash_password("a long password")
    assert stored.startswith("scrypt$") and "a long password" not in stored
    assert verify_password("a long password", stored)
    assert not verify_password("a long passworD", stored)
    assert hash_password("a long password") != stored  # salted
    for broken in ("", "scrypt$x", "bcrypt$1$2$3$4$5", "scrypt$40$8$1$AAAA$AAAA"):
        assert not verify_password("a long password", broken)
    with pytest.raises(UsageError):
        hash_password("short")


async def test_cached_fast_path_never_outlives_the_checks() -> None:
    now = [1000.0]
    svc = TokenService(SECRET, clock=lambda: now[0], user_recheck=30)
    token = svc.issue(ALICE, 100).token
    assert svc.cached(token) is None  # never verified: the caller must verify

    async def load(uid: int) -> User | None:
        return ALICE

    await svc.verify(token, load)
    assert svc.cached(token) is not None
    assert svc.cached(token + "x") is None and svc.cached(token[:-1]) is None
    now[0] += 31
    assert svc.cached(token) is None  # the user is due for a re-check
    await svc.verify(token, load)
    assert svc.cached(token) is not None
    now[0] += 70
    assert svc.cached(token) is None  # expired
    with pytest.raises(TokenError, match="expired"):
        await svc.verify(token, load)


async def _add_user(server: Server, name: str) -> User:
    db = await connect(server.config.database_path)
    try:
        return await add_user(db, name, hash_password(PASSWORD))
    finally:
        await db.close()


async def _remove_user(server: Server, name: str) -> User:
    db = await connect(server.config.database_path)
    try:
        return await remove_user(db, name)
    finally:
        await db.close()


async def test_a_removed_users_tokens_do_not_pass_for_the_next_user(server: Server) -> None:
    bob = await _add_user(server, "bob")
    svc = server.app[TOKENS]
    token = svc.issue(bob, 3600).token
    r = await server.client.post("/media-token", json={"path": ""}, headers={"Authorization": f"Bearer {token}"})
    mt = (await r.json())["token"]
    assert (await server.client.get("/libraries", headers={"Authorization": f"Bearer {token}"})).status == 200
    await _remove_user(server, "bob")
    carol = await _add_user(server, "carol")
    assert carol.id > bob.id  # ids are never reused
    svc.forget_user(bob.id)  # as after the user re-check period
    r = await server.client.get("/libraries", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 401
    assert_error(await r.json(), "unauthorized")
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "mt": mt})
    assert r.status == 401
    assert_error(await r.json(), "unauthorized")
    # carol's own tokens work
    r = await server.client.get("/libraries", headers={"Authorization": f"Bearer {svc.issue(carol, 60).token}"})
    assert r.status == 200


async def test_a_token_is_bound_to_its_users_key() -> None:
    """Even an id that holds another user (say, restored from a backup) refuses the tokens of the
    first: access and media tokens, on the full check and on the await-free one."""
    now = [1000.0]
    svc = TokenService(SECRET, clock=lambda: now[0], user_recheck=30)
    bob = User(id=2, name="bob", created_at="x", tokens_valid_after=0, token_key="bobs-key")
    carol = User(id=2, name="carol", created_at="y", tokens_valid_after=0, token_key="carols-key")
    present = [bob]

    async def load(uid: int) -> User | None:
        return present[0] if uid == 2 else None

    token = svc.issue(bob, 3600).token
    claims = await svc.verify(token, load)
    mt = svc.issue_media(claims, "main", "").token
    await svc.verify_media(mt, "main", "a.jpg", load)
    present[0] = carol
    now[0] += 31
    with pytest.raises(TokenError, match="no longer exists"):
        await svc.verify(token, load)
    assert svc.cached(token) is None
    with pytest.raises(TokenError, match="no longer exists"):
        await svc.verify_media(mt, "main", "a.jpg", load)
    carols = svc.issue(carol, 60).token
    assert (await svc.verify(carols, load)).name == "carol"
    assert svc.cached(carols) is not None and svc.cached(token) is None


@pytest.mark.parametrize("name", ["\\ud800", "alice\\udcff", "\\u0000", "alice\\n", "\\u0430lice", "\\uff41lice",
                                  "a" * 100_000])
async def test_odd_user_names_at_login_are_refused_with_a_4xx(server: Server, name: str) -> None:
    raw = '{"username": "' + name + '", "password": "' + PASSWORD + '"}'
    r = await server.client.post("/login", data=raw.encode(), headers={"Content-Type": "application/json"})
    if "\\ud8" in name or "\\udc" in name:
        # A lone surrogate cannot be stored or compared: the one JSON reader refuses the body.
        assert r.status == 400
        assert_error(await r.json(), "bad_json")
    else:
        assert r.status == 401
        assert_error(await r.json(), "bad_credentials")


@pytest.mark.parametrize("name", ["alice\n", "alice\r", "\u0430lice", "al\u0131ce", "alice\u200b", ""])
def test_user_names_are_checked_whole(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


def test_a_password_must_be_text() -> None:
    with pytest.raises(UsageError, match="UTF-8"):
        hash_password("a long password \udcff\udcfe")


async def test_media_tokens_stay_out_of_the_logs(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # the access log too (before the connection is made)
    r = await server.client.post("/media-token", json={"path": "2020"}, headers=server.auth)
    mt = (await r.json())["token"]
    secret_part = mt.split(".")[1]

    def broken(*args: object) -> str:
        raise RuntimeError("a bug")

    monkeypatch.setattr(routes_media, "thumb_dest", broken)
    r = await server.client.get("/image", params={"path": "2020/a.jpg", "mt": mt},
                                headers={"Referer": f"http://example.test/page?x=1&mt={mt}"})
    assert r.status == 500
    assert_error(await r.json(), "internal")
    r = await server.client.get("/image", params={"mt": mt, "path": "2020/b.jpg", "token": server.token})
    assert r.status == 500
    text = caplog.text + "".join(repr(vars(rec)) for rec in caplog.records)
    assert "GET /image?path=2020" in caplog.text and "a bug" in caplog.text  # the error is logged ...
    assert any(rec.name == "aiohttp.access" for rec in caplog.records)  # ... and the requests
    assert secret_part not in text and mt not in text and server.token not in text
    assert "mt=<redacted>" in caplog.text
