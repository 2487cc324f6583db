"""Authentication: the gate run by the error middleware, `POST /login` (the throttle's rules are
core/throttle.py), `POST /media-token`.

Every route needs `Authorization: Bearer <jwt>` except /login, /health and /openapi.json. GET /image
and GET /video may instead carry a media token (`?mt=`), which only covers the library and path
prefix it was issued for (checked where the path is resolved: `media_allowed`).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from imageapi.core import users
from imageapi.core.throttle import DatabaseCounts, LoginThrottle, ThrottledError
from imageapi.core.tokens import (
    MEDIA_TTL_DEFAULT,
    MEDIA_TTL_MAX,
    AccessClaims,
    MediaClaims,
    TokenError,
    TokenService,
    UserLoader,
)
from imageapi.core.users import BadCredentialsError, User
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
            if scheme.lower() != "bearer" or not token or not header.isascii():
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
    return request.app[CONFIG].server.token_ttl  # TOKEN_TTL, checked at start-up


async def login(request: web.Request) -> web.Response:
    body = await read_json(request)
    username = field(body, "username", str)
    password = field(body, "password", str)
    try:
        user = await users.login(request.app[DB], request.app[THROTTLE], request.remote or "unknown",
                                 username, password)
    except ThrottledError as exc:
        raise ApiError(429, exc.code, exc.message, {"Retry-After": str(exc.retry_after)}) from None
    except BadCredentialsError as exc:
        raise ApiError(401, exc.code, exc.message) from None
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
    issued = request.app[TOKENS].issue_media(claims, lib.name, prefix, float(ttl or MEDIA_TTL_DEFAULT))
    return web.json_response({
        "token": issued.token, "expires_at": issued.expires_at_iso, "library": lib.name, "path": prefix,
        "query": f"{MEDIA_PARAM}={issued.token}",
    })


def setup(app: web.Application) -> None:
    # The counts in the database: every server process and host sees the same ones.
    app[THROTTLE] = LoginThrottle(counts=DatabaseCounts(lambda: app[DB]))
    app.router.add_post("/login", login)
    app.router.add_post("/media-token", media_token)
