"""Authentication: the gate run by the error middleware, `POST /login`, `POST /media-token`, and the login throttle.

Every route needs `Authorization: Bearer <jwt>` except /login, /health and /openapi.json. GET /image
and GET /video may instead carry a media token (`?mt=`), which only covers the library and path
prefix it was issued for (checked where the path is resolved: `media_allowed`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Mapping

from aiohttp import web

from imageapi.core import users
from imageapi.core.tokens import (
    MEDIA_TTL_DEFAULT,
    MEDIA_TTL_MAX,
    AccessClaims,
    MediaClaims,
    TokenError,
    TokenService,
    UserLoader,
    parse_ttl,
)
from imageapi.core.users import User
from imageapi.server import sessions, webapp
from imageapi.server.keys import CONFIG, DB, LIBRARIES, THROTTLE, TOKENS
from imageapi.server.middlewares import ApiError, field, read_json
from imageapi.server.params import client_path

PUBLIC_PATHS = frozenset({"/login", "/health", "/openapi.json"}) | webapp.PUBLIC_PATHS  # + the web client
# The routes players and <img> tags reach with a media token in the query string (they cannot
# send headers): originals, thumbnails, and the video streams, segments, clips and GIFs.
MEDIA_TOKEN_PATHS = frozenset({
    "/image", "/video", "/video/stream", "/video/segment/{name}", "/video/preview", "/video/gif",
})
MEDIA_PARAM = "mt"
USER_KEY = web.RequestKey("user", AccessClaims)      # set for Bearer-authenticated requests
MEDIA_KEY = web.RequestKey("media", MediaClaims)    # set for media-token requests
DEFAULT_LOGIN_TTL = "7d"

# Password checks cost ~50 ms of CPU each: at most this many at once, in threads.
_SCRYPT_SLOTS = 2


class LoginThrottle:
    """Failed logins per client address: the first `free` are free, then each failure doubles the
    wait before the next attempt is even checked (429 + Retry-After), up to `max_delay`."""

    def __init__(self, free: int = 5, max_delay: float = 300.0, max_entries: int = 10_000) -> None:
        self.free = free
        self.max_delay = max_delay
        self.max_entries = max_entries
        self._state: OrderedDict[str, tuple[int, float]] = OrderedDict()  # addr -> (failures, not before)
        self.slots = asyncio.Semaphore(_SCRYPT_SLOTS)

    def check(self, addr: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        entry = self._state.get(addr)
        if entry is not None and now < entry[1]:
            wait = math.ceil(entry[1] - now)
            raise ApiError(429, "too_many_attempts", f"too many failed logins: try again in {wait} s",
                           {"Retry-After": str(wait)})

    def failed(self, addr: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        count = self._state.pop(addr, (0, 0.0))[0] + 1
        delay = 0.0 if count < self.free else min(self.max_delay, 2.0 ** (count - self.free))
        self._state[addr] = (count, now + delay)
        while len(self._state) > self.max_entries:
            self._state.popitem(last=False)

    def succeeded(self, addr: str) -> None:
        self._state.pop(addr, None)


def _route_path(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else request.path


def remembered_bearer(tokens: TokenService, headers: Mapping[str, str]) -> AccessClaims | None:
    """The claims of the request's Bearer token when the token cache can vouch for it without an
    await (TokenService.cached); None means the full check must run. Shared by the gate and the
    thumbnail fast path, so both accept exactly the same requests."""
    header = headers.get("Authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return tokens.cached(header[7:].strip())


class AuthGate:
    """Run inside the error middleware: public routes pass, everything else needs a Bearer token
    (or, for media routes, a media token). Sets request[USER_KEY] or request[MEDIA_KEY]."""

    def fast(self, request: web.Request) -> bool:
        if _route_path(request) in PUBLIC_PATHS:
            return True
        claims = remembered_bearer(request.app[TOKENS], request.headers)
        if claims is None:
            claims = sessions.remembered(request)  # a browser's session cookie (server/sessions.py)
        if claims is None:
            return False
        request[USER_KEY] = claims
        return True

    async def full(self, request: web.Request) -> None:
        app = request.app
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise TokenError("the Authorization header must be 'Bearer <token>'")
            request[USER_KEY] = await app[TOKENS].verify(token, _user_loader(app))
            return
        media = request.query.get(MEDIA_PARAM)
        if media is not None and _route_path(request) in MEDIA_TOKEN_PATHS and request.method in ("GET", "HEAD"):
            claims = app[TOKENS].decode_media(media)
            await app[TOKENS].verify_media(media, claims.library, claims.prefix, _user_loader(app))
            request[MEDIA_KEY] = claims
            return
        session = await sessions.from_cookie(request)  # a browser's session cookie (server/sessions.py)
        if session is not None:
            request[USER_KEY] = session
            return
        raise TokenError("authentication required: send 'Authorization: Bearer <token>' (POST /login gives one)")


def _user_loader(app: web.Application) -> UserLoader:
    db = app[DB]

    async def load(user_id: int) -> User | None:
        return await users.get_user_by_id(db, user_id)

    return load


def media_allowed(request: web.Request, library: str, rel_path: str) -> None:
    """For a request authenticated by a media token: refuse paths outside its scope."""
    claims = request.get(MEDIA_KEY)
    if claims is not None and not claims.allows(library, rel_path):
        raise TokenError("the media token does not cover this path")


def login_ttl(request: web.Request) -> float:
    return parse_ttl(request.app[CONFIG].get("TOKEN_TTL", DEFAULT_LOGIN_TTL) or DEFAULT_LOGIN_TTL)


async def login(request: web.Request) -> web.Response:
    throttle = request.app[THROTTLE]
    addr = request.remote or "unknown"
    throttle.check(addr)
    body = await read_json(request)
    username = field(body, "username", str)
    password = field(body, "password", str)
    user, stored = await users.stored_hash(request.app[DB], username)
    async with throttle.slots:
        ok = await asyncio.to_thread(users.verify_password, password, stored)
    if user is None or not ok:
        throttle.failed(addr)
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    throttle.succeeded(addr)
    if body.get("session") is True:  # a browser: a session cookie instead of a token (server/sessions.py)
        return await sessions.start(request, user, login_ttl(request))
    issued = request.app[TOKENS].issue(user, login_ttl(request))
    return web.json_response({"token": issued.token, "expires_at": issued.expires_at_iso, "user": user.name})


async def media_token(request: web.Request) -> web.Response:
    """A media token for a library and a path prefix (a folder, a file, or '' for all of it)."""
    claims = request.get(USER_KEY)
    if claims is None:
        raise TokenError("a media token cannot be used to make another")
    body = await read_json(request)
    lib = await request.app[LIBRARIES].get(field(body, "library", str, required=False))
    prefix = client_path(field(body, "path", str, required=False) or "", required=False)
    ttl = field(body, "ttl", int, required=False)
    if ttl is not None and not 1 <= ttl <= MEDIA_TTL_MAX:
        raise ApiError(400, "bad_field", f"field 'ttl' must be between 1 and {int(MEDIA_TTL_MAX)} seconds")
    issued = request.app[TOKENS].issue_media(claims.user_id, lib.name, prefix, float(ttl or MEDIA_TTL_DEFAULT))
    return web.json_response({
        "token": issued.token, "expires_at": issued.expires_at_iso, "library": lib.name, "path": prefix,
        "query": f"{MEDIA_PARAM}={issued.token}",
    })


def setup(app: web.Application) -> None:
    app[THROTTLE] = LoginThrottle()
    app.router.add_post("/login", login)
    app.router.add_post("/media-token", media_token)
