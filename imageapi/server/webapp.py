"""The web client: the files under imageapi/web/, served by the same application.

- `GET /` and `GET /web/...` (the client's own page addresses, so a reload or a shared link opens
  the same page): the shell, index.html, with `Cache-Control: no-cache` and an ETag (a revisit
  costs a 304).
- `GET /assets/<version>/<file>`: everything else. `<version>` is a digest of all the files, so
  an asset's address changes whenever any of them does and it can be cached for a year
  (`immutable`); the ES modules import each other by relative paths, which stay inside one
  version. An asset of another version is a 404 (the no-cache shell always names the current one).

Every answer carries a Content-Security-Policy that allows only the app's own scripts (no inline
script, no eval), `frame-ancestors 'none'`, and `X-Content-Type-Options: nosniff`. Text files are
gzipped once at start-up and sent so to clients that accept it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from imageapi.server.keys import CONFIG

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
SHELL = "index.html"
PUBLIC_PATHS = frozenset({"/", "/web/{tail}", "/assets/{version}/{path}"})

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{tiles}; "
       "media-src 'self' blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP.format(tiles=""),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
IMMUTABLE = "public, max-age=31536000, immutable"
_COMPRESS = frozenset({".js", ".mjs", ".css", ".html", ".svg", ".json", ".txt"})
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
          ".json": "application/json", ".txt": "text/plain; charset=utf-8", ".png": "image/png"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    gzipped: bytes | None = None  # compressed once at start-up, when that saves something


class WebFiles:
    """The client's files, read once at start-up (a few hundred KB)."""

    def __init__(self, root: Path = WEB_DIR) -> None:
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                 if p.is_file() and not p.name.startswith(".") and "__pycache__" not in p.parts}
        digest = hashlib.sha256()
        for name, body in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
        self.version = digest.hexdigest()[:16]
        shell = files.pop(SHELL, b"<!doctype html><title>imageapi</title><p>the web client is missing")
        self.shell = _asset(shell.replace(b"{{VERSION}}", self.version.encode()), ".html")
        self.assets = {name: _asset(body, Path(name).suffix) for name, body in files.items()}


def _asset(body: bytes, suffix: str) -> Asset:
    ctype = _TYPES.get(suffix) or mimetypes.types_map.get(suffix) or "application/octet-stream"
    packed = gzip.compress(body, 9, mtime=0) if suffix in _COMPRESS else None
    return Asset(body, ctype, f'"{hashlib.sha256(body).hexdigest()[:24]}"',
                 packed if packed is not None and len(packed) < len(body) else None)


def _respond(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    # The compressed body is another representation: its own ETag (RFC 9110 8.8.3).
    packed = asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", "")
    etag = asset.etag[:-1] + '-gz"' if packed else asset.etag
    headers = {**request.app[HEADERS], "ETag": etag, "Cache-Control": cache_control, "Vary": "Accept-Encoding"}
    inm = request.headers.get("If-None-Match", "")
    if etag in (t.strip().removeprefix("W/") for t in inm.split(",")) or inm.strip() == "*":
        return web.Response(status=304, headers=headers)
    if packed:
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=asset.gzipped if packed else asset.body,
                        headers={**headers, "Content-Type": asset.content_type})


WEB_FILES = web.AppKey("web_files", WebFiles)
HEADERS = web.AppKey("web_headers", dict[str, str])


def security_headers(tile_url: str | None) -> dict[str, str]:
    """SECURITY_HEADERS, with the map's tile server (MAP_TILE_URL) allowed as a source of images."""
    if not tile_url:
        return dict(SECURITY_HEADERS)
    parts = urlsplit(tile_url)
    # A template may put {s} (a subdomain) in the host: any subdomain of the rest, then.
    host = parts.netloc.split("@")[-1]
    origin = f"{parts.scheme}://" + ("*." + host.split(".", 1)[1] if "{" in host and "." in host else host)
    return {**SECURITY_HEADERS, "Content-Security-Policy": CSP.format(tiles=" " + origin)}


async def get_shell(request: web.Request) -> web.Response:
    return _respond(request, request.app[WEB_FILES].shell, "no-cache")


async def get_asset(request: web.Request) -> web.Response:
    files = request.app[WEB_FILES]
    asset = files.assets.get(request.match_info["path"])
    if request.match_info["version"] != files.version or asset is None:
        raise web.HTTPNotFound(text="no such asset (the page may be out of date: reload it)")
    return _respond(request, asset, IMMUTABLE)


@functools.cache
def web_files() -> WebFiles:
    """Read (and compressed) once per process: every application of the process shares them."""
    return WebFiles()


def setup(app: web.Application) -> None:
    app[WEB_FILES] = web_files()
    app[HEADERS] = security_headers(app[CONFIG].map_tile_url)
    app.router.add_get("/", get_shell)
    app.router.add_get("/web/{tail:.*}", get_shell)
    app.router.add_get("/assets/{version}/{path:.+}", get_asset)
