"""Browser sessions over a cookie: `POST /login` with `"session": true`, `POST /logout`, and the
checks the auth gate and the thumbnail fast path run on a request that carries the cookie.

A grid of <img> elements cannot send a Bearer header, so a browser logs in once and its session
cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) authenticates every request, as a Bearer
token would. A session that passed the database check is remembered in memory, so the thumbnail
fast path checks it without an await, like a remembered token (`SessionCache.cached`); it is
looked up again every RECHECK seconds (1 s), so a session ended through another server process or
host (logout, a password change, its user removed) stops working everywhere within that second (in
the process that ended it: at once). The database is the only channel between processes: one
indexed read per session, per second, per process.

Cross-site requests: the cookie counts only on requests the browser says are same-origin
(`Sec-Fetch-Site: same-origin`, or `none` for an address the user typed); a state-changing
request (anything but GET/HEAD/OPTIONS) must be `same-origin`, or, from a browser that sends no
Sec-Fetch-Site, carry an `Origin` equal to the server's own. Anything else is a 403.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from imageapi.core.config import Config, Network
from imageapi.core.sessions import create_session, find_session, revoke_session
from imageapi.core.tokens import AccessClaims, TokenError
from imageapi.core.users import User
from imageapi.server.keys import CONFIG, DB
from imageapi.server.middlewares import ApiError

COOKIE = "imageapi_session"
RECHECK = 1.0          # seconds a remembered session is trusted before the database is asked again
CACHE_SIZE = 10_000
MEMO_SIZE = 4096       # Cookie headers remembered with the session secret in them ...
MEMO_HEADER = 1024     # ... of at most this many characters
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class WebSettings:
    trusted_proxies: tuple[Network, ...] = ()  # whose X-Forwarded-Proto is believed


def web_settings(config: Config) -> WebSettings:
    """What the cookie code needs of the settings (TRUSTED_PROXIES, checked by load_config)."""
    return WebSettings(config.server.trusted_proxies)


class SessionCache:
    """Sessions that passed the database check, by cookie secret, for RECHECK seconds (never past
    their expiry). `cached` is the await-free check of the thumbnail fast path: one dict lookup and
    one comparison (measured: the cookie's whole check costs about what the Bearer one does)."""

    def __init__(self, settings: WebSettings, recheck: float = RECHECK, size: int = CACHE_SIZE) -> None:
        self.settings = settings
        self._recheck = recheck
        self._size = size
        self._known: OrderedDict[str, tuple[AccessClaims, float]] = OrderedDict()  # secret -> (claims, good until)
        self.secrets: dict[str, str | None] = {}  # Cookie header -> our cookie's value in it

    def cached(self, secret: str) -> AccessClaims | None:
        hit = self._known.get(secret)
        if hit is None or time.time() >= hit[1]:
            return None
        return hit[0]

    async def verify(self, app: web.Application, secret: str) -> AccessClaims:
        claims = self.cached(secret)
        if claims is not None:
            return claims
        found = await find_session(app[DB], secret)
        if found is None:
            self._known.pop(secret, None)
            raise TokenError("the session has ended: log in again")
        claims = AccessClaims(user_id=found.user_id, name=found.name, issued_at=found.created_at,
                              expires_at=found.expires_at, key=found.key)
        self._known[secret] = (claims, min(time.time() + self._recheck, found.expires_at))
        self._known.move_to_end(secret)
        while len(self._known) > self._size:
            self._known.popitem(last=False)
        return claims

    def forget(self, secret: str) -> None:
        self._known.pop(secret, None)

    def secret_in(self, header: str) -> str | None:
        """Our cookie's value in a Cookie header, remembered per header value (a browser sends the
        same one with every thumbnail)."""
        try:
            return self.secrets[header]
        except KeyError:
            pass
        value = parse_cookie(header)
        if len(header) <= MEMO_HEADER:  # bounded: at most MEMO_SIZE * MEMO_HEADER characters
            if len(self.secrets) >= MEMO_SIZE:
                self.secrets.clear()
            self.secrets[header] = value
        return value


SESSIONS = web.AppKey("sessions", SessionCache)


def parse_cookie(header: str) -> str | None:
    """Our cookie's value in a Cookie header."""
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value.strip() or None
    return None


def cookie_secret(headers: Mapping[str, str]) -> str | None:
    raw = headers.get("Cookie")
    return parse_cookie(raw) if raw is not None else None


def remembered_session(cache: SessionCache, headers: Mapping[str, str]) -> AccessClaims | None:
    """For a GET without an Authorization header: the claims of its session cookie when the cache
    vouches for it and the browser does not say the request is cross-site. None: the full check."""
    raw = headers.get("Cookie")
    if raw is None or "Authorization" in headers:
        return None
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin" and site != "none":
        return None
    secret = cache.secret_in(raw)
    return cache.cached(secret) if secret is not None else None


def remembered(request: web.Request) -> AccessClaims | None:
    """The auth gate's await-free step for a request with the session cookie (safe methods only:
    the others go through `from_cookie`, which checks where they come from)."""
    if request.method not in SAFE_METHODS:
        return None
    return remembered_session(request.app[SESSIONS], request.headers)


def is_https(request: web.Request) -> bool:
    if request.secure:
        return True
    proxies = request.app[SESSIONS].settings.trusted_proxies
    if not proxies or request.headers.get("X-Forwarded-Proto", "").lower() != "https":
        return False
    try:
        addr = ipaddress.ip_address(request.remote or "")
    except ValueError:
        return False
    return any(addr in net for net in proxies)


def check_origin(request: web.Request) -> None:
    """Refuse a cookie-authenticated request that comes from another site (see the module's doc)."""
    site = request.headers.get("Sec-Fetch-Site")
    if request.method in SAFE_METHODS:
        if site is None or site in ("same-origin", "none"):
            return
        raise ApiError(403, "cross_site", "the session cookie is not accepted on a cross-site request")
    if site is not None:
        if site == "same-origin":
            return
        raise ApiError(403, "cross_site", "a state-changing request with the session cookie must come from "
                                          "this site's own pages")
    origin = request.headers.get("Origin")
    expected = f"{'https' if is_https(request) else 'http'}://{request.host}"
    if origin != expected:
        raise ApiError(403, "cross_site", "a state-changing request with the session cookie needs an Origin "
                                          "header naming this server")


async def from_cookie(request: web.Request) -> AccessClaims | None:
    """The auth gate's full step for the cookie: None when there is no session cookie; else the
    session's claims, or TokenError / a 403 (cross-site)."""
    secret = cookie_secret(request.headers)
    if secret is None:
        return None
    check_origin(request)
    return await request.app[SESSIONS].verify(request.app, secret)


def _set_cookie(request: web.Request, resp: web.StreamResponse, value: str, max_age: int) -> None:
    resp.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="Strict",
                    secure=is_https(request))


async def start(request: web.Request, user: User, ttl: float) -> web.Response:
    """The answer of a `POST /login` that asked for a session: the cookie, and no token."""
    secret, expires = await create_session(request.app[DB], user.id, user.token_key, ttl)
    resp = web.json_response({"user": user.name, "expires_at": _iso(expires), "session": True})
    _set_cookie(request, resp, secret, max(1, expires - int(time.time())))
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


async def logout(request: web.Request) -> web.Response:
    """End the request's session (revoked on the server) and clear the cookie. A request made with
    a Bearer token has no session: the answer says so, and the token stays valid until it expires."""
    secret = cookie_secret(request.headers)
    ended = False
    if secret is not None and "Authorization" not in request.headers:
        request.app[SESSIONS].forget(secret)
        ended = await revoke_session(request.app[DB], secret)
    resp = web.json_response({"ended": ended})
    _set_cookie(request, resp, "", 0)
    return resp


def setup(app: web.Application) -> None:
    app[SESSIONS] = SessionCache(web_settings(app[CONFIG]))
    app.router.add_post("/logout", logout)
