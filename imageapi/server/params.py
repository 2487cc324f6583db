"""Reading and checking query parameters. Client paths go through the core's traversal guard."""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from imageapi.core.errors import PathOutsideLibraryError, UsageError
from imageapi.core.libraries import clean_relative
from imageapi.core.names import NAME_MAX, PATH_MAX
from imageapi.server.middlewares import ApiError


def client_path(raw: str | None, *, name: str = "path", required: bool = True) -> str:
    """A library-relative path from a client (in the stored form of imageapi.core.names: as the
    listing gives it), normalised; refuses anything that could leave the root, and a path too
    long for any filesystem (400, not an error from the filesystem). The query string was decoded
    once by aiohttp: a path that still decodes to a traversal ('%2e%2e', '%252e%252e', a leading
    '%2f' or '%5c', '%00') is refused too, because some other layer (a proxy, a client library)
    might decode it again."""
    if raw is None or raw == "":
        if required:
            raise ApiError(400, "missing_parameter", f"query parameter {name!r} is required")
        return ""
    if _plain(raw):
        return raw  # already what clean_relative would return (the common case, kept cheap)
    if "%" in raw:
        decoded = raw
        for _ in range(3):
            decoded = unquote(decoded)
        if decoded != raw:
            for part in decoded.replace("\\", "/").split("/"):
                if part == ".." or "\x00" in part:
                    raise PathOutsideLibraryError("path contains an encoded '..' or NUL")
            if decoded.startswith(("/", "\\")):
                raise PathOutsideLibraryError("path contains an encoded separator")
    try:
        return clean_relative(raw)
    except UsageError as exc:  # too long for any filesystem
        raise ApiError(400, "bad_parameter", f"query parameter {name!r}: {exc.message}") from None


def _plain(raw: str) -> bool:
    """A normalised relative path with nothing to check further: printable ASCII (so its own
    stored form), no backslash, '%' or ':', no empty, '.' or '..' component (so no leading,
    trailing or doubled '/'), none over NAME_MAX and the whole within PATH_MAX."""
    if not raw.isascii() or not raw.isprintable() or len(raw) > PATH_MAX:
        return False
    if "\\" in raw or "%" in raw or ":" in raw:
        return False
    return all(part and part != "." and part != ".." and len(part) <= NAME_MAX for part in raw.split("/"))


def query_str(request: web.Request, name: str, default: str | None = None) -> str | None:
    value = request.query.get(name)
    return value if value not in (None, "") else default


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be between {lo} and {hi}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be true or false")


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise ApiError(400, "bad_parameter", f"query parameter {name!r} must be one of {', '.join(choices)}")
    return raw
