"""Access tokens (JWT, HS256, SECRET_KEY) and short-lived path-scoped media tokens.

Verifying a JWT costs more than serving a thumbnail, so a token that passed the full check is
remembered (an LRU keyed by the exact token string). A cache hit still re-checks the expiry, and
the user behind every token (still there, password not changed since the token was issued) is
re-read from the database once it was read `user_recheck` seconds ago (USER_RECHECK, 1 s): a
password change or a user removal made anywhere (the CLI, another server process or host) is
refused by every process within that second, with no message between them; it costs one indexed
read of the user's row per user, per second, per process (bench/bench_serve.py: no difference
from a 30 s re-check beyond the machine's noise). A token that differs in any byte is a cache
miss and gets the full check, so the cache never makes auth weaker.

Media tokens are for URLs that a browser loads by itself (<img src>, <video src>), which cannot
carry an Authorization header: `<payload>.<hmac>`, the payload naming the user, a library and a
path prefix, and an expiry. They are signed with a key derived from SECRET_KEY, so neither kind of
token can be passed off as the other.

Both kinds carry the user's id and token key (core/users.py): a token is accepted only while that
id still holds that key, so it never outlives its user nor passes for a later one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import jwt

from imageapi.core.errors import ImageapiError, UsageError
from imageapi.core.users import User

ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
MEDIA_TTL_DEFAULT = 3600.0
MEDIA_TTL_MAX = 6 * 3600.0
MAX_TOKEN_CHARS = 4096  # longer strings are refused before any parsing
CLOCK_SKEW = 60  # seconds a token's iat may lie ahead of this clock
MAX_USER_ID = 2**63 - 1  # SQLite's largest integer
USER_RECHECK = 1.0  # seconds a user's row is trusted: how long another process's change can go unseen

UserLoader = Callable[[int], Awaitable[User | None]]


class TokenError(ImageapiError):
    """A missing, malformed, expired, tampered or otherwise unacceptable token."""

    code = "unauthorized"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: int  # unix seconds

    @property
    def expires_at_iso(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AccessClaims:
    user_id: int
    name: str
    issued_at: int
    expires_at: int
    key: str = field(repr=False)  # the user's token key when issued


@dataclass(frozen=True)
class MediaClaims:
    user_id: int
    library: str
    prefix: str  # '' for the whole library, else a relative folder or file path
    issued_at: int
    expires_at: int
    key: str = field(repr=False)  # the user's token key when issued

    def allows(self, library: str, rel_path: str) -> bool:
        if library != self.library:
            return False
        return not self.prefix or rel_path == self.prefix or rel_path.startswith(self.prefix + "/")


def check_secret(secret: str | None) -> str:
    """SECRET_KEY must be set and at least 32 bytes long."""
    if not secret:
        raise UsageError("SECRET_KEY is not set: set it to a random string of at least 32 bytes "
                         "(python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        raise UsageError(f"SECRET_KEY is too short ({len(secret.encode('utf-8'))} bytes): use at least "
                         f"{MIN_SECRET_BYTES} random bytes")
    return secret


def parse_ttl(text: str) -> float:
    """'30d', '12h', '15m', '45s' or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = text.strip().lower()
    try:
        value = float(raw[:-1]) * units[raw[-1]] if raw and raw[-1] in units else float(raw)
    except ValueError:
        raise UsageError(f"bad duration {text!r}: use e.g. 30d, 12h, 15m or seconds") from None
    if not value > 0 or value > 10 * 365 * 86400:
        raise UsageError(f"duration {text!r} must be more than 0 and at most 10 years")
    return value


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenService:
    def __init__(
        self,
        secret: str,
        *,
        cache_size: int = 10_000,
        user_recheck: float = USER_RECHECK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = check_secret(secret).encode("utf-8")
        self._media_key = hmac.new(self._key, b"imageapi media token v1", hashlib.sha256).digest()
        self._clock = clock
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()
        self._cache_size = cache_size
        self._user_recheck = user_recheck
        self._users: dict[int, tuple[User | None, float]] = {}

    # -- access tokens -------------------------------------------------------------------------

    def issue(self, user: User, ttl: float) -> IssuedToken:
        now = int(self._clock())
        exp = now + max(1, int(ttl))
        payload = {"sub": str(user.id), "name": user.name, "iat": now, "exp": exp, "typ": "access",
                   "key": user.token_key}
        return IssuedToken(jwt.encode(payload, self._key, algorithm=ALGORITHM), exp)

    def decode(self, token: str) -> AccessClaims:
        """The full check: signature (HS256 only), expiry, and the claims this server writes."""
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError("malformed token")
        try:
            # Times are checked below against this service's clock.
            payload = jwt.decode(
                token, self._key, algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub"], "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            )
        except jwt.InvalidTokenError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        sub, name, iat, exp = payload.get("sub"), payload.get("name"), payload.get("iat"), payload.get("exp")
        key, nbf = payload.get("key"), payload.get("nbf")
        # Only what issue() writes: a user id of ASCII digits (str.isdigit takes '²' and '١'), whole
        # seconds (`type() is int`: a bool is an int too), and a not-before (never written here)
        # only in whole seconds as well.
        if (payload.get("typ") != "access" or not isinstance(sub, str) or _user_id(sub) is None
                or not isinstance(name, str) or type(iat) is not int or type(exp) is not int
                or not (nbf is None or type(nbf) is int)):
            raise TokenError("invalid token: unexpected claims")
        if not isinstance(key, str) or not key:
            raise TokenError("token issued by an older version of the server: log in again")
        now = self._clock()
        if exp <= now:
            raise TokenError("token expired")
        if iat > now + CLOCK_SKEW:
            raise TokenError("invalid token: issued in the future")
        if nbf is not None and nbf > now:
            raise TokenError("token not valid yet (nbf)")
        return AccessClaims(user_id=int(sub), name=name, issued_at=iat, expires_at=exp, key=key)

    def cached(self, token: str) -> AccessClaims | None:
        """The claims of a token that passed `verify` before, when nothing needs checking again:
        not expired, and its user checked less than `user_recheck` seconds ago and still fine.
        None means "call verify" (which refuses or re-checks); no await, for the hot path."""
        claims = self._cache.get(token)
        if claims is None:
            return None
        now = self._clock()
        if claims.expires_at <= now:
            return None
        entry = self._users.get(claims.user_id)
        if entry is None or now - entry[1] >= self._user_recheck:
            return None
        if not _still_valid(entry[0], claims.issued_at, claims.key):
            return None
        return claims

    async def verify(self, token: str, load_user: UserLoader) -> AccessClaims:
        """`decode` behind the verified-token cache, plus the user check."""
        claims = self._cache.get(token)
        now = self._clock()
        if claims is None:
            claims = self.decode(token)
            self._cache[token] = claims
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        elif claims.expires_at <= now:
            del self._cache[token]
            raise TokenError("token expired")
        await self._check_user(claims.user_id, claims.issued_at, claims.key, load_user, now)
        return claims

    async def _check_user(self, user_id: int, issued_at: int, key: str, load_user: UserLoader, now: float) -> User:
        entry = self._users.get(user_id)
        if entry is None or now - entry[1] >= self._user_recheck:
            entry = (await load_user(user_id), now)
            self._users[user_id] = entry
        user = entry[0]
        if user is None:
            raise TokenError("the token's user no longer exists")
        if not same_secret(key, user.token_key):
            raise TokenError("the token's user no longer exists")  # its id now holds another key
        if issued_at < user.tokens_valid_after:
            raise TokenError("token issued before the user's password was changed")
        return user

    def forget_user(self, user_id: int) -> None:
        """Drop what is remembered about a user (after a change made by this process: refused here at
        once, elsewhere within `user_recheck`)."""
        self._users.pop(user_id, None)

    # -- media tokens --------------------------------------------------------------------------

    def issue_media(self, claims: AccessClaims, library: str, prefix: str,
                    ttl: float = MEDIA_TTL_DEFAULT) -> IssuedToken:
        """A media token for the user of `claims` (a verified access token)."""
        now = int(self._clock())
        exp = now + max(1, int(min(ttl, MEDIA_TTL_MAX)))
        payload = _b64e(json.dumps({"u": claims.user_id, "k": claims.key, "l": library, "p": prefix, "i": now,
                                    "e": exp},
                                   separators=(",", ":")).encode("utf-8"))
        return IssuedToken(f"{payload}.{self._media_sig(payload)}", exp)

    def _media_sig(self, payload: str) -> str:
        return _b64e(hmac.new(self._media_key, payload.encode("ascii"), hashlib.sha256).digest())

    def decode_media(self, token: str) -> MediaClaims:
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii() or token.count(".") != 1:
            raise TokenError("malformed media token")
        payload, sig = token.split(".")
        try:
            good = hmac.compare_digest(self._media_sig(payload), sig)
        except (TypeError, UnicodeEncodeError):
            good = False
        if not good:
            raise TokenError("invalid media token signature")
        try:
            data = json.loads(_b64d(payload))
            claims = MediaClaims(user_id=data["u"], library=data["l"], prefix=data["p"],
                                 issued_at=data["i"], expires_at=data["e"], key=data["k"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise TokenError("malformed media token") from None
        if not (type(claims.user_id) is int and 0 < claims.user_id <= MAX_USER_ID  # bool is an int too
                and isinstance(claims.library, str) and isinstance(claims.prefix, str)
                and type(claims.issued_at) is int and type(claims.expires_at) is int
                and isinstance(claims.key, str)):
            raise TokenError("malformed media token")
        if claims.expires_at <= self._clock():
            raise TokenError("media token expired")
        return claims

    async def verify_media(self, token: str, library: str, rel_path: str, load_user: UserLoader) -> MediaClaims:
        claims = self.decode_media(token)
        if not claims.allows(library, rel_path):
            raise TokenError("the media token does not cover this path")
        await self._check_user(claims.user_id, claims.issued_at, claims.key, load_user, self._clock())
        return claims


def same_secret(a: str, b: str) -> bool:
    """Whether two secrets are equal, compared in constant time (any text: a header may not be ASCII)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


def _still_valid(user: User | None, issued_at: int, key: str) -> bool:
    """`_check_user`'s test without its reasons (for the await-free path)."""
    return user is not None and same_secret(key, user.token_key) and issued_at >= user.tokens_valid_after


def _user_id(sub: str) -> int | None:
    if not (sub.isascii() and sub.isdigit() and len(sub) <= 19):
        return None
    value = int(sub)
    return value if 0 < value <= MAX_USER_ID else None
